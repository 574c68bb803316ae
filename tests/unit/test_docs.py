"""Every `invoke` command shown in the README and the guide exists, with the flags shown."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "guide" / "finetune-llama-factory.md"]


def _collection():
    import sys

    sys.path.insert(0, str(ROOT))
    import tasks

    return tasks.ns


def _task_flags(ns, name: str) -> set[str] | None:
    try:
        task = ns[name]
    except (KeyError, ValueError):
        return None
    from invoke import Context  # noqa: F401  (just to be sure invoke is importable)
    args = task.get_arguments()
    flags = set()
    for arg in args:
        for n in arg.names:
            flags.add(("--" if len(n) > 1 else "-") + n.replace("_", "-"))
        if arg.kind is bool:
            flags.update("--no-" + n.replace("_", "-") for n in arg.names if len(n) > 1)
    flags.update({"--help", "-h"})
    return flags


def invoke_commands(text: str) -> list[str]:
    """`invoke ...` lines inside fenced code blocks and inline code."""
    cmds = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith("invoke "):
                    cmds.append(part)
    cmds += [c for c in re.findall(r"`(invoke [^`]+)`", text)]
    return cmds


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_invoke_command_exists_with_its_flags(doc):
    assert doc.is_file(), f"{doc} is missing"
    ns = _collection()
    cmds = invoke_commands(doc.read_text(encoding="utf-8"))
    assert len(cmds) >= 5, f"{doc.name} shows almost no commands"
    problems = []
    for cmd in cmds:
        words = shlex.split(cmd.replace("\\", "/"))[1:]
        if not words or words[0].startswith("-"):
            continue  # invoke --list etc.
        name = words[0]
        flags = _task_flags(ns, name)
        if flags is None:
            problems.append(f"{cmd!r}: no task {name!r}")
            continue
        for w in words[1:]:
            if w.startswith("-") and w.split("=")[0] not in flags:
                problems.append(f"{cmd!r}: task {name} has no flag {w.split('=')[0]}")
    assert not problems, "\n".join(problems)
