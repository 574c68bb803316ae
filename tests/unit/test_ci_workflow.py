"""The GitHub workflow can't run here: a linter from PyPI (check-jsonschema with the vendored GitHub
workflow schema) checks it, and it only calls real sessions, with timeouts and a keyed pip cache."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True, timeout=120)


def noxfile_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "session":
                    names.add(node.name)
    return names


def test_noxfile_has_the_promised_sessions():
    assert {"tests", "smoke", "demo", "e2e", "cuda", "lint"} <= noxfile_sessions()


def test_workflow_calls_only_existing_sessions_on_the_full_matrix():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    sessions = noxfile_sessions()
    called = set()
    for job in wf["jobs"].values():
        for step in job["steps"]:
            for m in re.finditer(r"nox -s ((?:[\w-]+ ?)+)", step.get("run", "")):
                called.update(m.group(1).split())
    assert called, "the workflow runs no nox session"
    assert called <= sessions, f"unknown sessions: {called - sessions}"
    assert "smoke" in called and "tests" in called
    smoke = wf["jobs"]["smoke"]["strategy"]["matrix"]
    assert set(smoke["os"]) == {"ubuntu-latest", "windows-latest", "macos-latest"}
    assert {"3.11", "3.12"} <= set(smoke["python"])


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"<!-- test-command -->\s*```\w*\n(.+?)\n```", readme, re.S)
    assert m, "README must mark its test command with <!-- test-command -->"
    command = m.group(1).strip()
    assert command in ci, f".ci/run does not call the README's test command: {command}"
    for session in re.findall(r"nox -s ((?:[\w-]+ ?)+)", command)[0].split():
        assert session in noxfile_sessions()


def test_workflow_passes_the_linter():
    out = lint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    """The linter really checks: a job with a misspelt key and a non-numeric timeout fails."""
    broken = WORKFLOW.read_text(encoding="utf-8").replace("timeout-minutes: 25", "timeout-minutes: soon", 1)
    broken = broken.replace("runs-on: ${{ matrix.os }}", "runs_on: ${{ matrix.os }}", 1)
    path = tmp_path / "ci.yml"
    path.write_text(broken, encoding="utf-8")
    out = lint(path)
    assert out.returncode != 0, out.stdout


def test_every_job_has_a_timeout_and_a_keyed_pip_cache():
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    for name, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"job {name} has no timeout-minutes"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/setup-python"):
                w = step["with"]
                assert w.get("cache") == "pip", name
                keys = w.get("cache-dependency-path", "")
                assert "pyproject.toml" in keys and "finetune/env/platforms.py" in keys, name
    e2e = "\n".join(step.get("run", "") for step in wf["jobs"]["e2e"]["steps"])
    assert "command -v google-chrome" in e2e and "FINETUNE_CHROMIUM" in e2e  # the runner's own browser first
