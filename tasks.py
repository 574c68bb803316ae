"""The pipeline as invoke tasks: a table of contents. Each task parses flags, builds the layout,
calls one ``finetune`` function and prints the result. Heavy imports stay inside the functions.

    invoke --list            all tasks          invoke --help TASK   its flags
"""

from __future__ import annotations

from invoke import Collection, task

from finetune.cli import guarded, not_built
from finetune.layout import Layout


def _layout(**overrides) -> Layout:
    """The layout: our defaults, then FINETUNE_* environment variables, then flags."""
    return Layout.from_env(**{k: v for k, v in overrides.items() if v})


# ---- environment ------------------------------------------------------------------------------
@task(help={
    "json": "print the checks as JSON (a list of {name, status, detail, fix})",
    "fast": "skip importing torch (package metadata only; well under a second)",
    "port": "Web UI port to check (default 7860)",
})
def doctor(c, json=False, fast=False, port=7860):
    """Check Python, LLaMA-Factory, the torch set, accelerator, port, disk and folders."""
    from finetune.env import doctor as doc

    checks = doc.run_doctor(_layout(), fast=fast, port=port)
    print(doc.as_json(checks)) if json else doc.render(checks)
    if any(ch.status == doc.FAIL for ch in checks):
        raise SystemExit(1)


# ---- data -------------------------------------------------------------------------------------
@task(name="convert")
def data_convert(c):
    """Raw data (alpaca / sharegpt / OpenAI messages / CSV) -> ChatML JSONL."""
    guarded(lambda: (_ for _ in ()).throw(not_built("data.convert", 3)))


@task(name="check")
def data_check(c):
    """Check ChatML JSONL files exactly as LLaMA-Factory will read them."""
    guarded(lambda: (_ for _ in ()).throw(not_built("data.check", 3)))


@task(name="register")
def data_register(c):
    """Register ChatML files in dataset_info.json (sharegpt mapping with system_tag)."""
    guarded(lambda: (_ for _ in ()).throw(not_built("data.register", 3)))


@task(name="stats")
def data_stats(c):
    """Token lengths with the model's tokenizer and a suggested cutoff."""
    guarded(lambda: (_ for _ in ()).throw(not_built("data.stats", 3)))


# ---- training ---------------------------------------------------------------------------------
@task
def webui(c):
    """Start the LLaMA-Factory Web UI on 127.0.0.1, pre-filled with our layout."""
    guarded(lambda: (_ for _ in ()).throw(not_built("webui", 4)))


@task
def train(c):
    """Train headless with the same arguments the Web UI writes."""
    guarded(lambda: (_ for _ in ()).throw(not_built("train", 5)))


# ---- after training ---------------------------------------------------------------------------
@task
def runs(c):
    """List runs (status, base model, template, loss, artifacts)."""
    guarded(lambda: (_ for _ in ()).throw(not_built("runs", 5)))


@task
def infer(c):
    """Chat with a run's adapter (or a merged model) using the training template."""
    guarded(lambda: (_ for _ in ()).throw(not_built("infer", 5)))


@task
def merge(c):
    """Merge a LoRA adapter into its base model."""
    guarded(lambda: (_ for _ in ()).throw(not_built("merge", 5)))


@task
def verify(c):
    """Before / after: loss, perplexity and answer match of base vs fine-tuned."""
    guarded(lambda: (_ for _ in ()).throw(not_built("verify", 5)))


@task
def demo(c):
    """The whole chain on a tiny model: raw data -> Web UI -> train -> verified answers."""
    guarded(lambda: (_ for _ in ()).throw(not_built("demo", 6)))


data = Collection("data")
for _t in (data_convert, data_check, data_register, data_stats):
    data.add_task(_t)

ns = Collection(doctor, webui, train, runs, infer, merge, verify, demo)
ns.add_collection(data)
