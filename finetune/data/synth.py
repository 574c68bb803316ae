"""ChatML conversations made from plain documents (txt, md) by an LLM behind any OpenAI-compatible
chat endpoint (``POST {base_url}/chat/completions``).

* Documents are split into chunks of about ``chunk_chars`` characters on paragraph boundaries.
* The model must answer with strict JSON: ``{"conversations": [{"question": str, "answer": str}]}``
  (a surrounding ```json fence is tolerated). Every answer is validated; each pair must make a
  conversation LLaMA-Factory keeps (:func:`finetune.data.chatml.classify`).
* Invalid output or HTTP failures are retried with exponential backoff; a chunk that still fails
  is written to the rejects file (chunk, reason, the start of the raw output). The run never
  crashes on model output.
* ``concurrency`` requests at a time (asyncio + httpx).
* Resumable: output is appended line by line; each record carries ``provenance`` (source file,
  chunk index, chunk id) and chunks whose id is already in the output are skipped on a rerun
  (rejected chunks are tried again).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from finetune.data import chatml
from finetune.errors import UserError

DOC_EXTENSIONS = (".txt", ".md", ".markdown")
DEFAULT_SYSTEM = ("You write training data. Read the passage and write question-answer pairs a user might ask "
                  "about it, answered only from the passage. Reply with JSON only, exactly of this form: "
                  '{"conversations": [{"question": "...", "answer": "..."}]}')


@dataclass
class Chunk:
    source: str
    index: int
    text: str

    @property
    def id(self) -> str:
        digest = hashlib.sha256(f"{self.source}\0{self.index}\0{self.text}".encode()).hexdigest()
        return digest[:16]


@dataclass
class SynthResult:
    out_path: Path
    rejects_path: Path
    chunks: int = 0
    skipped: int = 0  # done in an earlier run
    written: int = 0  # conversations
    rejected: int = 0  # chunks
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out_path": str(self.out_path), "rejects_path": str(self.rejects_path), "chunks": self.chunks,
                "skipped": self.skipped, "written": self.written, "rejected": self.rejected}


class InvalidOutput(ValueError):
    """The model's answer is not the requested JSON."""


def chunk_text(text: str, chunk_chars: int = 2000) -> list[str]:
    """Paragraph-aligned chunks of at most about ``chunk_chars`` (a long paragraph is cut hard)."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    chunks: list[str] = []
    cur = ""
    for p in paras:
        while len(p) > chunk_chars:
            if cur:
                chunks.append(cur)
                cur = ""
            chunks.append(p[:chunk_chars])
            p = p[chunk_chars:]
        if cur and len(cur) + 2 + len(p) > chunk_chars:
            chunks.append(cur)
            cur = p
        else:
            cur = f"{cur}\n\n{p}" if cur else p
    if cur:
        chunks.append(cur)
    return chunks


def collect_chunks(docs: Sequence[str | Path], chunk_chars: int) -> list[Chunk]:
    files: list[Path] = []
    for d in docs:
        p = Path(d).expanduser()
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in DOC_EXTENSIONS and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no such document or folder: {d}", fix="pass .txt / .md files or a folder of them")
    if not files:
        raise UserError("no documents found", fix=f"pass files ending in {', '.join(DOC_EXTENSIONS)}")
    out: list[Chunk] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{f} is not UTF-8 text (byte {err.start})", where=str(f),
                            fix="re-save it as UTF-8") from None
        out += [Chunk(str(f), i, t) for i, t in enumerate(chunk_text(text, chunk_chars))]
    return out


def parse_answer(raw: str, max_pairs: int = 10) -> list[dict]:
    """Validate the model's answer; returns ChatML records or raises :class:`InvalidOutput`."""
    text = raw.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidOutput("answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("conversations"), list):
        raise InvalidOutput('answer is not an object with a "conversations" list')
    pairs = data["conversations"]
    if not pairs:
        raise InvalidOutput('"conversations" is empty')
    records = []
    for i, pair in enumerate(pairs[:max_pairs], 1):
        if not isinstance(pair, dict):
            raise InvalidOutput(f"conversation {i} is not an object")
        q, a = pair.get("question"), pair.get("answer")
        if not (isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip()):
            raise InvalidOutput(f"conversation {i} needs non-empty string question and answer")
        msgs = [{"role": chatml.USER, "content": q.strip()}, {"role": chatml.ASSISTANT, "content": a.strip()}]
        if chatml.classify(msgs) is not None:
            raise InvalidOutput(f"conversation {i} would be dropped by LLaMA-Factory")
        records.append({"messages": msgs})
    return records


def _done_ids(out_path: Path) -> set[str]:
    done: set[str] = set()
    if not out_path.exists():
        return done
    with out_path.open("rb") as fh:
        for raw in fh:
            try:
                done.add(orjson.loads(raw)["provenance"]["chunk_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
    return done


async def _ask(client, url: str, headers: dict, model: str, system: str, chunk: Chunk, max_tokens: int,
               temperature: float) -> str:
    body = {"model": model, "temperature": temperature, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": f"Passage:\n\n{chunk.text}"}]}
    resp = await client.post(url, json=body, headers=headers)
    if resp.status_code >= 400:
        raise InvalidOutput(f"HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        return resp.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise InvalidOutput(f"unexpected response shape: {resp.text[:200]}") from None


async def _run(chunks: list[Chunk], result: SynthResult, base_url: str, model: str, api_key: str,
               concurrency: int, retries: int, backoff: float, timeout: float, max_tokens: int,
               temperature: float, system: str, progress=None) -> None:
    import httpx

    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    sem = asyncio.Semaphore(max(1, concurrency))
    lock = asyncio.Lock()
    result.out_path.parent.mkdir(parents=True, exist_ok=True)
    with result.out_path.open("ab") as out, result.rejects_path.open("ab") as rej:
        async with httpx.AsyncClient(timeout=timeout) as client:

            async def one(chunk: Chunk) -> None:
                reason, raw = "", ""
                async with sem:
                    for attempt in range(retries + 1):
                        try:
                            raw = await _ask(client, url, headers, model, system, chunk, max_tokens, temperature)
                            records = parse_answer(raw)
                            break
                        except (InvalidOutput, httpx.HTTPError) as err:
                            reason = f"{type(err).__name__}: {err}"
                            if attempt < retries:
                                await asyncio.sleep(backoff * (2 ** attempt))
                    else:
                        records = None
                async with lock:
                    prov = {"source": chunk.source, "chunk": chunk.index, "chunk_id": chunk.id}
                    if records is None:
                        rej.write(orjson.dumps({**prov, "reason": reason, "attempts": retries + 1,
                                                "output": raw[:500]}) + b"\n")
                        rej.flush()
                        result.rejected += 1
                        result.reasons.append(reason)
                    else:
                        for rec in records:
                            out.write(orjson.dumps({**rec, "provenance": prov}) + b"\n")
                        out.flush()
                        result.written += len(records)
                    if progress:
                        progress()

            await asyncio.gather(*(one(c) for c in chunks))


def synthesize(docs: Sequence[str | Path], out_path: str | Path, base_url: str | None = None,
               model: str | None = None, api_key: str | None = None, chunk_chars: int = 2000,
               concurrency: int = 4, retries: int = 2, backoff: float = 1.0, timeout: float = 120.0,
               max_tokens: int = 1024, temperature: float = 0.7, system: str = DEFAULT_SYSTEM,
               rejects_path: str | Path | None = None, progress=None) -> SynthResult:
    """Make ChatML from ``docs``. ``base_url`` / ``model`` / ``api_key`` default to
    ``OPENAI_BASE_URL`` / ``OPENAI_MODEL`` / ``OPENAI_API_KEY``."""
    base_url = base_url or os.environ.get("OPENAI_BASE_URL", "")
    model = model or os.environ.get("OPENAI_MODEL", "")
    api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
    if not base_url:
        raise UserError("no endpoint", fix="pass --base-url http://HOST:PORT/v1 or set OPENAI_BASE_URL")
    if not model:
        raise UserError("no model name", fix="pass --model NAME or set OPENAI_MODEL")
    out_path = Path(out_path)
    rejects = Path(rejects_path) if rejects_path else out_path.with_name(out_path.stem + ".rejects.jsonl")
    chunks = collect_chunks(docs, chunk_chars)
    done = _done_ids(out_path)
    todo = [c for c in chunks if c.id not in done]
    result = SynthResult(out_path, rejects, chunks=len(chunks), skipped=len(chunks) - len(todo))
    if todo:
        asyncio.run(_run(todo, result, base_url, model, api_key, concurrency, retries, backoff, timeout,
                         max_tokens, temperature, system, progress))
    return result
