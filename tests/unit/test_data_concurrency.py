"""Real processes racing on one data dir: 50 rounds of two data.register and two data.convert at
the same moment. Every registered entry is kept, dataset_info.json is valid JSON after every round
and keeps its mode, and two converts to one name leave one whole output (never mixed records):
the other is refused with a message, not a traceback."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import stat
import sys
import time
import traceback
from pathlib import Path

ROUNDS = 50
ROOT = Path(__file__).resolve().parents[2]


def conversation(tag: str, i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q {tag} {i}"}, {"role": "assistant", "content": f"a {tag} {i}"}]}


def _worker(kind: str, wid: int, root: str, start, done, results) -> None:
    """One real process: each round, wait for the others, do one register or convert, report."""
    sys.path.insert(0, str(ROOT))
    from finetune.data.convert import convert_file
    from finetune.data.register import register_files
    from finetune.errors import UserError
    from finetune.layout import Layout

    layout = Layout.from_env(root=root, env={})
    for r in range(ROUNDS):
        start.wait()
        try:
            if kind == "register":
                res = register_files(layout, [layout.data_dir / f"reg{wid}-{r}.jsonl"])
                outcome = ("ok", res[0]["name"])
            else:
                res = convert_file(Path(root) / "raw" / f"src{wid}-{r}.jsonl", layout, fmt="openai", name=f"conv-{r}")
                outcome = ("ok", res.written)
        except UserError as err:
            outcome = ("refused", err.message)
        except BaseException:  # noqa: BLE001 - a traceback is exactly what this test must catch
            outcome = ("crash", traceback.format_exc())
        results.put((r, kind, wid, outcome))
        done.wait()


def test_fifty_rounds_of_two_registers_and_two_converts(tmp_path):
    from finetune.layout import Layout

    layout = Layout.from_env(root=tmp_path, env={})
    data = layout.data_dir
    data.mkdir(parents=True)
    (tmp_path / "raw").mkdir()
    info = layout.dataset_info
    info.write_text(json.dumps({"theirs": {"file_name": "theirs.json", "formatting": "alpaca"}}), encoding="utf-8")
    os.chmod(info, 0o644)
    for r in range(ROUNDS):
        for w in (0, 1):
            (data / f"reg{w}-{r}.jsonl").write_text(json.dumps(conversation(f"reg{w}", r)) + "\n", encoding="utf-8")
            # two different sources for one output name: a mix of both would show up at once
            lines = [json.dumps(conversation(f"src{w}-{r}", i)) for i in range(200 + 50 * w)]
            (tmp_path / "raw" / f"src{w}-{r}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx = mp.get_context("spawn")
    start, done = ctx.Barrier(5), ctx.Barrier(5)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kind, w, str(tmp_path), start, done, results))
             for kind in ("register", "convert") for w in (0, 1)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    seen: list[tuple] = []
    try:
        for r in range(ROUNDS):
            start.wait(timeout=120)
            done.wait(timeout=120)
            round_results = [results.get(timeout=30) for _ in range(4)]
            seen += round_results
            crashes = [o[1] for *_x, o in round_results if o[0] == "crash"]
            assert not crashes, crashes[0]
            current = json.loads(info.read_text(encoding="utf-8"))  # valid JSON after every round
            registered = {f"reg{w}-{k}" for w in (0, 1) for k in range(r + 1)}
            assert registered <= set(current), sorted(registered - set(current))
            assert current["theirs"] == {"file_name": "theirs.json", "formatting": "alpaca"}
            converts = [o for rr, kind, _w, o in round_results if kind == "convert"]
            assert sorted(o[0] for o in converts) == ["ok", "refused"], converts
            assert "already exists" in next(o[1] for o in converts if o[0] == "refused")
            out = [json.loads(line) for line in (data / f"conv-{r}.jsonl").read_text(encoding="utf-8").splitlines()]
            sources = {m["messages"][0]["content"].split()[1] for m in out}
            assert len(sources) == 1 and len(out) == (200 if sources == {f"src0-{r}"} else 250), (sources, len(out))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    assert stat.S_IMODE(info.stat().st_mode) == 0o644  # another user (the Web UI's) can still read it
    assert not list(data.glob(".*.tmp")), "temp files left behind"
    assert len(seen) == 4 * ROUNDS
    print(f"{ROUNDS} rounds x (2 registers + 2 converts) in {time.monotonic() - t0:.1f} s")


def test_update_json_from_processes_never_loses_a_key(tmp_path, n=2):
    """fileio.update_json itself, hammered from real processes (what register builds on)."""
    import subprocess

    path = tmp_path / "info.json"
    code = "\n".join([
        f"import sys; sys.path.insert(0, {str(ROOT)!r})",
        "from finetune import fileio",
        "for i in range(100):",
        f"    fileio.update_json({str(path)!r}, lambda d, i=i: {{**(d or {{}}), f'w{{sys.argv[1]}}-{{i}}': i}}, default={{}})",
    ])
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)]) for w in range(n)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(json.loads(path.read_text(encoding="utf-8"))) == 100 * n
