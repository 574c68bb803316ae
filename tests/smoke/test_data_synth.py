"""LLM synthesis against a real OpenAI-compatible server: `llamafactory-cli api` serving the tiny
model on loopback. Its answers are nonsense, so every chunk's output must be rejected, recorded
with a reason, and the run must finish; a rerun retries only what is not done."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke

httpx = pytest.importorskip("httpx")
pytest.importorskip("llamafactory")

from finetune.data.synth import chunk_text, parse_answer, synthesize  # noqa: E402
from finetune.env.portable import script_path  # noqa: E402
from finetune.proc import popen_group, stop_tree, tail  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def api_server(tiny_model, tmp_path):
    port = free_port()
    log = tmp_path / "api.log"
    cli = script_path("llamafactory-cli")  # <env>/bin, or <env>\Scripts on Windows
    proc = popen_group([str(cli), "api", "--model_name_or_path", str(tiny_model), "--template", "qwen",
                        "--infer_backend", "huggingface"], log_path=log,
                       env={"API_HOST": "127.0.0.1", "API_PORT": str(port), "DISABLE_VERSION_CHECK": "1",
                            "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api server exited: {tail(log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api server not ready: {tail(log)}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_tree(proc.pid)
        assert proc.poll() is not None


def test_invalid_model_output_is_rejected_and_recorded(api_server, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Paris\n\nParis is the capital of France.\n\nIt lies on the Seine.\n", encoding="utf-8")
    (docs / "b.txt").write_text("北京是中国的首都。\n\n长城很长。\n", encoding="utf-8")
    out = tmp_path / "synth.jsonl"
    res = synthesize([docs], out, base_url=api_server, model="tiny", api_key="none", chunk_chars=40,
                     concurrency=2, retries=1, backoff=0.01, max_tokens=24, timeout=60)
    assert res.chunks >= 3 and res.skipped == 0
    assert res.rejected == res.chunks  # a random tiny model does not write the JSON format
    rejects = [json.loads(line) for line in res.rejects_path.read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == res.chunks
    assert all(r["reason"] and r["source"] and "chunk" in r and r["attempts"] == 2 for r in rejects)
    assert {Path(r["source"]).name for r in rejects} == {"a.md", "b.txt"}
    # resumable: a chunk recorded as done in the output is skipped on the rerun
    first = rejects[0]
    out.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                               "provenance": {"source": first["source"], "chunk": first["chunk"],
                                              "chunk_id": first["chunk_id"]}}) + "\n", encoding="utf-8")
    again = synthesize([docs], out, base_url=api_server, model="tiny", api_key="none", chunk_chars=40,
                       concurrency=2, retries=0, backoff=0.01, max_tokens=8, timeout=60)
    assert again.skipped == 1 and again.rejected == res.chunks - 1


def test_unreachable_endpoint_is_recorded_not_raised(tmp_path):
    doc = tmp_path / "d.txt"
    doc.write_text("one paragraph\n", encoding="utf-8")
    res = synthesize([doc], tmp_path / "o.jsonl", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m",
                     retries=1, backoff=0.01, timeout=2)
    assert res.rejected == 1 and "ConnectError" in res.reasons[0]


def test_parse_answer_and_chunking():
    good = parse_answer('```json\n{"conversations": [{"question": "Q?", "answer": "A."}]}\n```')
    assert good == [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}]
    for bad in ("nonsense", "[]", '{"conversations": []}', '{"conversations": [{"question": "", "answer": "x"}]}'):
        with pytest.raises(ValueError):
            parse_answer(bad)
    chunks = chunk_text("a" * 50 + "\n\n" + "b" * 10 + "\n\n" + "c" * 10, chunk_chars=30)
    assert all(len(c) <= 30 for c in chunks) and "".join(chunks).replace("\n", "") == "a" * 50 + "b" * 10 + "c" * 10
