"""The GitHub workflow can't run here: check that it is well-formed and only calls real sessions."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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
