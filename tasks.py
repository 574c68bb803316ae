"""The pipeline as invoke tasks: a table of contents. Each task parses flags, builds the layout,
calls one ``finetune`` function and prints the result. Heavy imports stay inside the functions.

    invoke --list            all tasks          invoke --help TASK   its flags
"""

from __future__ import annotations

from invoke import Collection, task

from finetune.cli import guarded, safe_console
from finetune.layout import Layout

safe_console()  # every task's output survives a cp1252 pipe, a closed pipe, an unwritable path


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

    def run():
        checks = doc.run_doctor(_layout(), fast=fast, port=port)
        print(doc.as_json(checks)) if json else doc.render(checks)
        return checks

    checks = guarded(run, as_json=json)
    if any(ch.status == doc.FAIL for ch in checks):
        raise SystemExit(1)


# ---- data -------------------------------------------------------------------------------------
@task(name="convert", help={
    "src": "raw data file: alpaca / sharegpt / OpenAI messages (.json array or .jsonl), or .csv / .tsv",
    "fmt": "input format: auto (default; from extension and first record), alpaca, sharegpt, openai, csv, tsv",
    "name": "output name: writes <data dir>/<name>.jsonl (default: the source file name; letters of any script)",
    "question_col": "CSV/TSV column with the user question (default: question)",
    "answer_col": "CSV/TSV column with the assistant answer (default: answer)",
    "system_col": "CSV/TSV column with an optional system prompt (default: system; ignored when absent)",
    "data_dir": "dataset folder (default dataset/llamafactory or $FINETUNE_DATA_DIR)",
    "force": "replace an existing <name>.jsonl with different content (without it nothing is overwritten)",
    "json": "print the result as JSON",
})
def data_convert(c, src, fmt="auto", name="", question_col="question", answer_col="answer",
                 system_col="system", data_dir="", force=False, json=False):
    """Raw data (alpaca / sharegpt / OpenAI messages / CSV) -> ChatML JSONL (never overwrites without --force)."""
    from finetune.data.convert import convert_file
    from finetune.data.names import command

    def run():
        layout = _layout(data_dir=data_dir)
        res = convert_file(src, layout, fmt=fmt, name=name or None, question_col=question_col,
                           answer_col=answer_col, system_col=system_col or None, force=force)
        if json:
            import json as _json

            print(_json.dumps(res.to_dict(), ensure_ascii=False))
            return
        state = "unchanged (same content)" if res.unchanged else "wrote"
        print(f"{res.fmt}: {state} {res.written} conversation(s) -> {res.out_path}")
        for path in res.replaced:
            print(f"  replaced {path} (--force)")
        if res.removed_rejects:
            print(f"  removed the stale {res.removed_rejects} of an earlier run")
        if res.rejected:
            print(f"rejected {res.rejected} record(s) (line + reason): {res.rejects_path}")
        print(f"next: {command(['invoke', 'data.check', res.out_path])}")

    guarded(run, json)


@task(name="check", iterable=["files"], help={
    "file": "ChatML .jsonl file to check (comma-separated for several; a name with a comma is taken whole "
            "when that file exists)",
    "files": "another file to check (repeatable; never split at commas)",
    "json": 'print the report as JSON: {"files": [{"path", "records", "valid", "counts", "problems": [...]}]}',
    "cutoff": "with --tokenizer: warn about conversations longer than this many tokens (your cutoff_len)",
    "tokenizer": "with --cutoff: model folder whose tokenizer measures lengths (needs the training stack)",
    "max_lines": "problems to print per file, errors first (default 50; --json lists every error)",
})
def data_check(c, file, files=None, json=False, cutoff=0, tokenizer="", max_lines=50):
    """Check ChatML JSONL files exactly as LLaMA-Factory will read them (exit 1 on errors)."""
    from finetune.data.check import check_files, next_step, render
    from finetune.data.names import split_paths

    def run():
        paths = split_paths(file, files)
        report = check_files(paths, cutoff=cutoff or None, tokenizer=tokenizer or None)
        if json:
            import json as _json

            print(_json.dumps(report.to_dict(), ensure_ascii=False))
        else:
            render(report, max_lines=max_lines)
            print(next_step(report, paths))
        return report

    if guarded(run, json).has_errors:
        raise SystemExit(1)


@task(name="register", iterable=["files", "names"], help={
    "file": "ChatML .jsonl file to register (comma-separated for several; a name with a comma is taken whole "
            "when that file exists)",
    "files": "another file to register (repeatable; never split at commas)",
    "names": "dataset name for each file, in order (repeatable; default: the file name, made safe)",
    "force": "register files with errors anyway (says what LLaMA-Factory drops) and allow overwrites",
    "data_dir": "dataset folder holding dataset_info.json (default dataset/llamafactory or $FINETUNE_DATA_DIR)",
    "json": "print the entries written as JSON",
})
def data_register(c, file, files=None, names=None, force=False, data_dir="", json=False):
    """Register ChatML files in dataset_info.json (sharegpt mapping with system_tag; locked, atomic)."""
    from finetune.data.names import split_paths
    from finetune.data.register import register_files

    def run():
        layout = _layout(data_dir=data_dir)
        results = register_files(layout, split_paths(file, files), names=names or None, force=force)
        if json:
            import json as _json

            print(_json.dumps(results, ensure_ascii=False))
            return
        for r in results:
            state = "updated" if r["changed"] else "unchanged"
            copy = {"copied": " (copied into the data dir)", "replaced": " (replaced the different copy in the "
                    "data dir: --force)", "same copy": " (same copy already in the data dir)"}.get(r["copy"], "")
            print(f"{r['name']}: {state} -> {r['entry']['file_name']}{copy}")
            if r["errors"]:
                print(f"  warning: registered with {r['errors']} error(s); LLaMA-Factory will "
                      + ("fail on this file" if r["fatal"] else f"drop {r['dropped']} conversation(s)"))
        print(f"dataset_info: {layout.dataset_info}")
        print(f"next: invoke webui (pick dataset {', '.join(r['name'] for r in results)})")

    guarded(run, json)


@task(name="stats", help={
    "file": "ChatML .jsonl file",
    "tokenizer": "model folder with the tokenizer used for training (required)",
    "cutoff": "cutoff_len to count truncated conversations against (default 1024)",
    "histogram": "also write a histogram PNG to this path",
    "json": "print the statistics as JSON",
})
def data_stats(c, file, tokenizer, cutoff=1024, histogram="", json=False):
    """Token lengths with the model's tokenizer (p50/p90/p99/max) and a suggested cutoff."""
    from finetune.data.stats import render, token_stats

    def run():
        result = token_stats(file, tokenizer, cutoff=cutoff, histogram=histogram or None)
        if json:
            import json as _json

            print(_json.dumps(result, ensure_ascii=False))
            return
        render(result)
        print(f"next: train with cutoff_len {max(cutoff, result['suggested_cutoff'])}")

    guarded(run, json)


# ---- training ---------------------------------------------------------------------------------
def _webui_help() -> dict[str, str]:
    from finetune.llama_factory.launcher import FLAG_HELP  # the one definition of the flags

    return dict(FLAG_HELP)  # a copy: invoke pops the entries it uses


@task(iterable=["dataset"], auto_shortflags=False, help=_webui_help())
def webui(c, host="127.0.0.1", port=7860, strict_port=False, method="env", model=None, template=None,
          dataset=None, run_id=None, share=False, auth_user=None, auth_password_file=None, timeout=180.0,
          status=False, stop=False, json=False):
    """Start the LLaMA-Factory Web UI on 127.0.0.1, ready to Start on open (Ctrl-C stops it all)."""
    from finetune.llama_factory import launcher

    opts = launcher.WebUIOptions(host=host, port=int(port), strict_port=strict_port, method=method, model=model,
                                 template=template, dataset=list(dataset or []), run_id=run_id, share=share,
                                 auth_user=auth_user, auth_password_file=auth_password_file,
                                 timeout=float(timeout), status=status, stop=stop, json=json)
    code = guarded(lambda: launcher.run(_layout(), opts), as_json=json)
    if code:
        raise SystemExit(code)


def _train_help() -> dict[str, str]:
    from finetune.llama_factory.plan import FLAG_HELP

    return {**FLAG_HELP, "json": "print the result as JSON (no progress bar)"}


@task(iterable=["dataset"], auto_shortflags=False, help=_train_help())
def train(c, model="", template="default", dataset=None, run_name="", epochs=3.0, lr=5e-5, batch_size=2,
          cutoff=2048, lora_rank=8, max_samples=100000, save_steps=100, resume="", nproc_per_node=1, nnodes=1,
          node_rank=0, master_addr="127.0.0.1", master_port=29500, deepspeed="", preset="", quantization_bit=0,
          json=False):
    """Train headless with the same arguments the Web UI writes (every flag is checked first)."""
    given = {k: v for k, v in locals().items() if k not in ("c", "json")}
    from finetune.llama_factory.plan import TrainFlags
    from finetune.llama_factory.train import report, run_training

    flags = TrainFlags.from_kwargs(**given)
    report(guarded(lambda: run_training(_layout(), flags, progress=not json), as_json=json), json)


# ---- after training ---------------------------------------------------------------------------
@task(iterable=["path"], help={
    "path": "also look in this folder (a run, or a folder holding runs); repeatable",
    "json": "print {\"runs\": [...]} as strict JSON (NaN / Infinity as null; a problem per row)",
})
def runs(c, path=None, json=False):
    """List runs (status, base model, template, steps, loss, artifacts) from our outputs, saves/ and PATHs."""
    from finetune import runs as rn

    found = guarded(lambda: rn.discover(_layout(), list(path or [])), as_json=json)
    print(rn.as_json(found)) if json else rn.render(found)


_MODEL_HELP = "a run id (invoke runs), a run / adapter / checkpoint-N folder, or a merged model folder"


@task(help={
    "run": _MODEL_HELP,
    "prompt": "answer this one prompt (streamed) and exit",
    "prompts": "answer every prompt of this file (.jsonl with prompt or messages per line, or .txt lines)",
    "out": "where the JSONL answers go (default: PROMPTS.answers.jsonl beside the prompts file)",
    "system": "system prompt (default: the template's)",
    "max_new_tokens": "answer length limit in tokens (default 256)",
    "temperature": "0 = greedy (default); above 0 samples",
    "base": "base model folder, when the run's recorded one moved",
    "template": "chat template, to override the run's",
    "json": "print the result as JSON",
})
def infer(c, run, prompt=None, prompts=None, out=None, system=None, max_new_tokens=256, temperature=0.0,
          base=None, template=None, json=False):
    """Chat with a run's adapter (or a merged model) using the training template; no prompt = interactive."""
    from finetune.fileio import dumps_json
    from finetune.inference import chat

    result = guarded(lambda: chat.infer(_layout(), run, prompt=prompt, prompts_file=prompts, out=out, system=system,
                                        max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                        base=base, template=template, as_json=json), as_json=json)
    if json:
        print(dumps_json(result))
    elif prompts:
        print(f"{result['prompts']} answers written to {result['out']}")


@task(help={
    "run": _MODEL_HELP + " holding a LoRA adapter",
    "out": "merged model folder (default: RUN/merged)",
    "base": "base model folder (must be unquantized), when not the run's recorded one",
    "template": "chat template, to override the run's",
    "dtype": "float32 / float16 / bfloat16 (default: the base model's dtype)",
    "check": "prompts to compare adapter vs merged greedy answers on (default 3; 0 skips)",
    "force": "replace an existing merged folder",
    "json": "print the result as JSON",
})
def merge(c, run, out=None, base=None, template=None, dtype=None, check=3, force=False, json=False):
    """Merge a LoRA adapter into its base model and check the merged model answers like the adapter."""
    from finetune.fileio import dumps_json
    from finetune.inference import merge as mg

    result = guarded(lambda: mg.merge(_layout(), run, out_dir=out, base=base, template=template, dtype=dtype,
                                      n_check=int(check), force=force), as_json=json)
    if json:
        print(dumps_json(result))
    else:
        chk = result.get("check")
        print(f"merged into {result['merged']} ({result['dtype']})"
              + (f"; greedy answers equal to the adapter's on {chk['prompts']} prompts" if chk else ""))
        print(f"next: invoke infer {result['merged']} --prompt \"Hello\"")


@task(help={
    "run": _MODEL_HELP,
    "data": "held-out ChatML JSONL (one {\"messages\": [...]} per line)",
    "max_samples": "score at most this many conversations (default 200)",
    "base": "base model to compare against (default: the run's)",
    "template": "chat template, to override the run's",
    "json": "print the report as JSON",
})
def verify(c, run, data, max_samples=200, base=None, template=None, json=False):
    """Before / after: loss, perplexity and answer match of base vs fine-tuned on held-out conversations."""
    from finetune.fileio import dumps_json
    from finetune.inference import verify as vf

    report = guarded(lambda: vf.verify(_layout(), run, data, max_samples=int(max_samples), base=base,
                                       template=template), as_json=json)
    print(dumps_json(report)) if json else vf.render(report)


@task(help={
    "model": "a real base model folder instead of the tiny one made on the spot",
    "template": "chat template of that model (default qwen)",
    "interactive": "wait for you to press Start in the browser instead of training headless",
    "no_webui": "skip starting the Web UI (headless only)",
    "port": "Web UI port (the next free one if taken; default 7860)",
    "fresh_model": "rebuild the tiny base model even if a cached one exists",
    "json": "print the summary as JSON (stage times, match rates, paths)",
})
def demo(c, model=None, template="qwen", interactive=False, no_webui=False, port=7860, fresh_model=False,
         json=False):
    """The whole chain on a tiny model: raw data -> Web UI -> train -> verified answers."""
    from finetune.demo import Demo, render_summary
    from finetune.fileio import dumps_json

    result = guarded(lambda: Demo(_layout(), model=model, template=template, webui=not no_webui,
                                  interactive=interactive, port=port, fresh_model=fresh_model,
                                  progress=not json).run(), as_json=json)
    print(dumps_json(result.as_dict(), indent=2)) if json else render_summary(result)


data = Collection("data")
for _t in (data_convert, data_check, data_register, data_stats):
    data.add_task(_t)

ns = Collection(doctor, webui, train, runs, infer, merge, verify, demo)
ns.add_collection(data)
