"""Fix messages name commands that exist, and the pinned LLaMA-Factory version is written once."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "finetune").rglob("*.py")), ROOT / "tasks.py", ROOT / "run_finetune.py"]
INVOKE_RE = re.compile(r"\binvoke ([a-z][a-z0-9_.-]*)")
NOX_RE = re.compile(r"\bnox -s ([A-Za-z0-9_-]+)")


def _text(node: ast.AST) -> str:
    """The literal text of a string expression (f-string holes become X)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) if isinstance(v, ast.Constant) else "X" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    if isinstance(node, ast.IfExp):
        return _text(node.body) + " | " + _text(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "join":
        return " | ".join(_text(a) for a in node.args)
    if isinstance(node, (ast.List, ast.Tuple)):
        return " | ".join(_text(e) for e in node.elts)
    return ""


def fix_messages() -> list[tuple[str, str]]:
    """(file:line, text) of every ``fix=...`` keyword argument in the package."""
    out = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "fix":
                        out.append((f"{path.relative_to(ROOT)}:{kw.value.lineno}", _text(kw.value)))
    return out


def task_names() -> set[str]:
    sys.path.insert(0, str(ROOT))
    import tasks

    return set(tasks.ns.task_names)


def nox_sessions() -> set[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_ci_workflow import noxfile_sessions

    return noxfile_sessions()


def test_every_fix_names_a_real_task_and_session():
    fixes = fix_messages()
    assert len(fixes) > 50, "the scan found almost no fix= messages"
    tasks, sessions = task_names(), nox_sessions()
    assert {"train", "runs", "data.check"} <= tasks and {"tests", "smoke"} <= sessions
    problems = []
    for where, text in fixes:
        for name in INVOKE_RE.findall(text):
            if name.rstrip(".") not in tasks:
                problems.append(f"{where}: `invoke {name}` is no task ({text[:80]!r})")
        for name in NOX_RE.findall(text):
            if name not in sessions:
                problems.append(f"{where}: `nox -s {name}` is no session ({text[:80]!r})")
    assert not problems, "\n".join(problems)


def test_the_scan_catches_a_stale_name():
    tree = ast.parse('UserError("x", fix="install it: nox -s dev, then " + f"invoke tarin {1}")')
    text = _text(next(k.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords))
    assert NOX_RE.findall(text) == ["dev"] and INVOKE_RE.findall(text) == ["tarin"]


# Modules another change is moving onto platforms.LLAMAFACTORY_VERSION right now (the Web UI's
# launcher and board); remove them from this set once they import it.
MOVING_ONTO_THE_CONSTANT: set[str] = set()


def test_llamafactory_pin_is_written_once():
    import tomllib

    from finetune.env.platforms import LLAMAFACTORY_VERSION

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [d for group in (deps["dependencies"], *deps.get("optional-dependencies", {}).values()) for d in group
            if re.match(r"llamafactory\b", d)]
    assert pins and all(p.replace(" ", "") == f"llamafactory=={LLAMAFACTORY_VERSION}" for p in pins), pins
    # no other module spells the version as a value (docstrings and comments may name it)
    again = []
    for path in [p for p in SOURCES if p.relative_to(ROOT).as_posix() not in MOVING_ONTO_THE_CONSTANT]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == LLAMAFACTORY_VERSION:
                again.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert again == ["finetune/env/platforms.py:" + str(_line_of_constant())], again


def _line_of_constant() -> int:
    text = (ROOT / "finetune" / "env" / "platforms.py").read_text(encoding="utf-8")
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("LLAMAFACTORY_VERSION ="))
