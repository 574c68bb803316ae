"""Generation through LLaMA-Factory's own chat engine (``llamafactory.chat.ChatModel``, the
Hugging Face backend): the same template code, tokenizer fixes and adapter loading as training and
as the Web UI's Chat tab, so the prompt tokens are exactly the ones training saw.

* :func:`generate_answers` -- a list of prompts in, a list of answer strings out (greedy default).
* :func:`infer` -- what ``invoke infer`` does: one prompt, a prompts file (JSONL out) or an
  interactive streamed chat.

Heavy imports (torch, llamafactory) happen inside functions only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.inference.resolve import ModelRef, resolve
from finetune.layout import Layout


def _quiet_env() -> None:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def engine_args(ref: ModelRef, **overrides: Any) -> dict[str, Any]:
    """The argument dict LLaMA-Factory's ChatModel gets (what its Chat tab builds)."""
    args: dict[str, Any] = {
        "model_name_or_path": ref.base,
        "template": ref.template,
        "finetuning_type": ref.finetuning_type if ref.adapter else "lora",
        "infer_backend": "huggingface",
        "trust_remote_code": True,
        "infer_dtype": "auto",
    }
    if ref.adapter:
        args["adapter_name_or_path"] = ref.adapter
    args.update({k: v for k, v in overrides.items() if v is not None})
    return args


@dataclass
class Chat:
    """A loaded model (base + adapter) with its template; wraps LLaMA-Factory's ChatModel."""

    ref: ModelRef
    model: Any  # llamafactory.chat.ChatModel
    load_s: float = 0.0

    @property
    def engine(self):
        return self.model.engine

    @property
    def tokenizer(self):
        return self.model.engine.tokenizer

    @property
    def template(self):
        return self.model.engine.template

    @property
    def torch_model(self):
        return self.model.engine.model

    def prompt_ids(self, messages: list[dict[str, str]], system: str | None = None) -> list[int]:
        """The token ids generation starts from (LLaMA-Factory's ``encode_oneturn`` prompt side)."""
        paired = [*messages, {"role": "assistant", "content": ""}]
        ids, _ = self.template.encode_oneturn(self.tokenizer, paired, system)
        return list(ids)

    def reply(self, messages: list[dict[str, str]], system: str | None = None, **gen: Any) -> dict[str, Any]:
        resp = self.model.chat(_lf_messages(messages), system=system, **_gen_kwargs(gen))[0]
        return {"text": resp.response_text, "tokens": resp.response_length, "prompt_tokens": resp.prompt_length,
                "finish_reason": resp.finish_reason}

    def answer(self, prompt: str | list[dict[str, str]], system: str | None = None, **gen: Any) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.reply(messages, system=system, **gen)["text"]

    def stream(self, messages: list[dict[str, str]], system: str | None = None, **gen: Any) -> Iterator[str]:
        """Answer pieces as they come. However the caller stops (end, ``break``, Ctrl-C), generation
        has ended when this returns: LLaMA-Factory runs ``generate`` in a daemon thread, and one
        still inside torch when Python exits aborts the process ("terminate called without an
        active exception", exit 134)."""
        stop, threads = threading.Event(), []
        model = self.torch_model
        model.generate = _stoppable(model.generate, stop, threads)  # the instance's own, this stream only
        try:
            yield from self.model.stream_chat(_lf_messages(messages), system=system, **_gen_kwargs(gen))
        finally:
            stop.set()
            del model.generate
            for thread in threads:
                thread.join()

    def close(self) -> None:
        try:
            self.model._loop.call_soon_threadsafe(self.model._loop.stop)
        except Exception:  # noqa: BLE001
            pass


def _stoppable(generate, stop: threading.Event, threads: list[threading.Thread]):
    """``generate`` with one more stopping criterion, ``stop`` set (checked after every token); the
    threads it runs in are added to ``threads``."""
    import functools

    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    @functools.wraps(generate)
    def run(*args, **kwargs):
        threads.append(threading.current_thread())
        kwargs["stopping_criteria"] = StoppingCriteriaList([*(kwargs.get("stopping_criteria") or []), _Stop()])
        return generate(*args, **kwargs)

    return run


def _lf_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """ChatModel wants user/assistant turns; a leading system turn becomes ``system``."""
    return [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]


def _gen_kwargs(gen: dict[str, Any]) -> dict[str, Any]:
    out = {"max_new_tokens": 64, "do_sample": False, "temperature": 0.0}
    out.update({k: v for k, v in gen.items() if v is not None})
    if out.get("temperature"):
        out["do_sample"] = True
    return out


def load(ref: ModelRef, **engine_overrides: Any) -> Chat:
    """Load ``ref`` through LLaMA-Factory's ChatModel (device picked by LLaMA-Factory: CUDA, NPU, MPS, CPU)."""
    _quiet_env()
    t0 = time.perf_counter()
    try:
        from llamafactory.chat import ChatModel
    except ImportError as err:
        raise UserError(f"the training stack is not installed ({err.name} missing)",
                        fix="install it: python -m nox -s smoke (or pip install -e .[train]); then invoke doctor") from None
    try:
        model = ChatModel(engine_args(ref, **engine_overrides))
    except (OSError, ValueError) as err:
        raise UserError(f"could not load {ref.label()}: {str(err).splitlines()[0][:300]}",
                        where=ref.adapter or ref.base,
                        details=[f"base model: {ref.base}", f"adapter: {ref.adapter or '-'}",
                                 f"template: {ref.template}"],
                        fix="check the folders (invoke runs), or pass --base PATH / --template NAME") from None
    return Chat(ref=ref, model=model, load_s=time.perf_counter() - t0)


def _as_chat(model_ref: Any, layout: Layout | None, base: str | None, template: str | None) -> tuple[Chat, bool]:
    if isinstance(model_ref, Chat):
        return model_ref, False
    ref = model_ref if isinstance(model_ref, ModelRef) else resolve(layout or Layout.from_env(), str(model_ref),
                                                                      base=base, template=template)
    return load(ref), True


def generate_answers(model_ref: Any, prompts: Sequence[str | list[dict[str, str]]], layout: Layout | None = None,
                     max_new_tokens: int = 64, system: str | None = None, temperature: float = 0.0,
                     base: str | None = None, template: str | None = None) -> list[str]:
    """Answers (greedy unless ``temperature``) for ``prompts`` (strings or message lists).

    ``model_ref``: a run id, a run / adapter / checkpoint / merged folder, a :class:`ModelRef`,
    or an already loaded :class:`Chat` (reused, not reloaded).
    """
    chat, _ = _as_chat(model_ref, layout, base, template)
    return [chat.answer(p, system=system, max_new_tokens=max_new_tokens, temperature=temperature) for p in prompts]


# ---- prompts files --------------------------------------------------------------------------------
def read_prompts(path: Path) -> list[dict[str, Any]]:
    """Prompts from a file: ``.jsonl`` lines with ``prompt`` / ``messages`` (ChatML; a trailing
    assistant turn is kept as the reference) / ``instruction`` (+ ``input``); other files: one
    prompt per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file not found: {path}", where="--prompts", fix="pass an existing .jsonl or .txt file")
    items: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if path.suffix.lower() not in (".jsonl", ".json"):
                items.append({"line": n, "messages": [{"role": "user", "content": line.rstrip("\n")}]})
                continue
            try:
                rec = fileio.parse_json(line, str(path))
            except UserError as err:
                raise UserError(f"line {n}: {err.message}", where=f"{path}:{n}",
                                fix="one JSON object per line: {\"prompt\": \"...\"} or {\"messages\": [...]}") from None
            item = _prompt_item(rec)
            if item is None:
                raise UserError(f"line {n} has no prompt", where=f"{path}:{n}",
                                fix="give each line a \"prompt\" string or a \"messages\" list")
            item["line"] = n
            items.append(item)
    if not items:
        raise UserError(f"no prompts in {path}", where=str(path), fix="add one prompt per line")
    return items


def _prompt_item(rec: Any) -> dict[str, Any] | None:
    if isinstance(rec, str):
        return {"messages": [{"role": "user", "content": rec}]}
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("messages"), list) and rec["messages"]:
        msgs = [m for m in rec["messages"] if isinstance(m, dict)]
        reference = None
        if msgs and msgs[-1].get("role") == "assistant":
            reference = msgs[-1].get("content")
            msgs = msgs[:-1]
        system = msgs[0]["content"] if msgs and msgs[0].get("role") == "system" else None
        return {"messages": [m for m in msgs if m.get("role") != "system"], "system": system, "reference": reference}
    text = rec.get("prompt") or rec.get("instruction") or rec.get("question")
    if isinstance(text, str):
        if isinstance(rec.get("input"), str) and rec["input"]:
            text = f"{text}\n{rec['input']}"
        return {"messages": [{"role": "user", "content": text}], "system": rec.get("system"),
                "reference": rec.get("output") or rec.get("answer")}
    return None


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    fileio.atomic_write_text(path, "".join(fileio.dumps_json(row) + "\n" for row in rows))


# ---- invoke infer ---------------------------------------------------------------------------------
def infer(layout: Layout, ref: str, prompt: str | None = None, prompts_file: str | None = None,
          out: str | None = None, system: str | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
          base: str | None = None, template: str | None = None, as_json: bool = False,
          console=None) -> dict[str, Any]:
    """``invoke infer``: a prompt, a prompts file (JSONL answers) or, with neither, an interactive chat."""
    model_ref = resolve(layout, ref, base=base, template=template)
    chat = load(model_ref)
    gen = {"max_new_tokens": max_new_tokens, "temperature": temperature}
    summary: dict[str, Any] = {"model": model_ref.as_dict(), "load_s": round(chat.load_s, 2)}
    if prompt is not None:
        t0 = time.perf_counter()
        if as_json:
            res = chat.reply([{"role": "user", "content": prompt}], system=system, **gen)
        else:
            res = _stream_print([{"role": "user", "content": prompt}], chat, system, gen)
        summary.update(prompt=prompt, answer=res["text"], seconds=round(time.perf_counter() - t0, 3))
        return summary
    if prompts_file is not None:
        items = read_prompts(Path(prompts_file))
        out_path = Path(out) if out else Path(prompts_file).with_name(Path(prompts_file).stem + ".answers.jsonl")
        rows = []
        from rich.progress import Progress

        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task("answering", total=len(items))
            for item in items:
                res = chat.reply(item["messages"], system=item.get("system") or system, **gen)
                rows.append({"line": item["line"], "prompt": item["messages"][-1]["content"],
                             "messages": item["messages"], "answer": res["text"], "reference": item.get("reference"),
                             "tokens": res["tokens"], "finish_reason": res["finish_reason"]})
                bar.advance(task)
        _write_jsonl(out_path, rows)
        summary.update(prompts=len(rows), out=str(out_path))
        return summary
    interactive(chat, system=system, gen=gen, console=console)
    return summary


def _stream_print(messages, chat: Chat, system, gen) -> dict[str, Any]:
    """Print the answer as it comes; Ctrl-C stops generation and propagates."""
    parts = []
    with contextlib.closing(chat.stream(messages, system=system, **gen)) as pieces:
        for piece in pieces:
            parts.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    return {"text": "".join(parts)}


def interactive(chat: Chat, system: str | None = None, gen: dict[str, Any] | None = None, console=None,
                input_fn=input) -> None:
    """Streamed chat on the terminal; ``clear`` forgets the history, Ctrl-C stops an answer,
    ``exit`` (or Ctrl-D) quits."""
    from rich.console import Console

    console = console or Console()
    console.print(f"[bold]chat[/] with {chat.ref.label()} (template {chat.ref.template}). "
                  "Type [bold]clear[/] to start over, [bold]exit[/] to quit.")
    history: list[dict[str, str]] = []
    while True:
        try:
            query = input_fn("\nUser: ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if query.strip() in ("exit", "quit"):
            return
        if query.strip() == "clear":
            history = []
            console.print("history cleared")
            continue
        if not query.strip():
            continue
        history.append({"role": "user", "content": query})
        sys.stdout.write("Assistant: ")
        try:
            res = _stream_print(history, chat, system, gen or {})
        except KeyboardInterrupt:  # stops this answer only
            history.pop()
            console.print("\n(answer stopped; exit or Ctrl-D quits)")
            continue
        history.append({"role": "assistant", "content": res["text"]})
