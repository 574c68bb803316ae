"""The guide and the README run: every bash block, in order, in a throwaway copy of the tree on the tiny
model, unless a visible mark in the Markdown says why it cannot run here (see guide_runner.py).
Prints per file how many blocks ran and how many are marked, and why."""

from __future__ import annotations

import sys

import pytest
from guide_runner import GUIDE, README, clean_env, run_file, shared_tree

pytestmark = [pytest.mark.smoke, pytest.mark.timeout(5400),
              pytest.mark.skipif(sys.platform == "win32", reason="the guide's blocks are bash, run in POSIX process sessions; on Windows the guide's PowerShell notes apply")]


@pytest.fixture(scope="module")
def tree():
    """One throwaway checkout for the guide, then the README (a reader who read both, in that order);
    the troubleshooting tests (test_guide_troubleshooting.py) reuse it afterwards."""
    pytest.importorskip("llamafactory")
    return shared_tree()


@pytest.mark.parametrize("doc", [GUIDE, README], ids=["guide", "readme"])
def test_every_bash_block_runs_in_order(doc, tree, capsys):
    env = clean_env(tree)
    with capsys.disabled():
        print(f"\n{doc.name}: running its bash blocks in order in {tree}")
        report = run_file(doc, tree, env, log=lambda s: print(s, flush=True))
        print(report.summary())
    problems = [f"{o.block.where} failed:\n{o.output[-4000:]}" for o in report.failed]
    assert not problems, "\n\n".join(problems)
    if doc == GUIDE:
        total = len(report.outcomes) + len(report.by_tests) + len(report.marked)
        ran = len(report.outcomes) + len(report.by_tests)
        assert ran >= 0.8 * total, report.summary()
