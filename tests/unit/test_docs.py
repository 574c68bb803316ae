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
            if w.startswith("-") and not re.fullmatch(r"-\d[\d.e-]*", w) and w.split("=")[0] not in flags:
                problems.append(f"{cmd!r}: task {name} has no flag {w.split('=')[0]}")
    assert not problems, "\n".join(problems)


# ---- every bash block runs, or says why not (tests/smoke/test_guide_blocks.py runs them) -------------
def _guide_runner():
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "smoke"))
    import guide_runner

    return guide_runner


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_bash_block_runs_or_says_why_not(doc):
    pytest.importorskip("pytest_codeblocks")
    gr = _guide_runner()
    problems = [f"{b.where}: {b.skip_reason}" for b in gr.blocks(doc)
                if b.skip_reason and (b.skip_reason.startswith("unexplained") or len(b.skip_reason) < 5)]
    assert not problems, "marks need a reason: <!--pytest.mark.skip(reason=\"...\")-->\n" + "\n".join(problems)


def test_at_least_80_percent_of_the_guide_blocks_run():
    pytest.importorskip("pytest_codeblocks")
    gr = _guide_runner()
    found = gr.blocks(gr.GUIDE)
    marked = [b for b in found if b.skip_reason]
    assert len(found) >= 30, f"the guide has only {len(found)} bash blocks: did the parser miss some?"
    assert len(found) - len(marked) >= 0.8 * len(found), (
        f"{len(marked)} of {len(found)} bash blocks are marked not to run:\n"
        + "\n".join(f"  {b.where}: {b.skip_reason}" for b in marked))


def test_guide_tests_name_a_troubleshooting_section():
    pytest.importorskip("pytest_codeblocks")
    gr = _guide_runner()
    text = gr.GUIDE.read_text(encoding="utf-8")
    for b in gr.blocks(gr.GUIDE):
        if b.guide_test:
            assert f"### {b.guide_test} " in text, f"{b.where}: guide-test {b.guide_test} names no section"
