"""Turn what a user points at into what inference needs: base model + adapter + chat template.

Accepted: a run id (``invoke runs``), a run folder, an adapter folder, a ``checkpoint-N`` folder,
a merged model folder (ours, with ``finetune_merge.json``), or any full model folder. The base model
and template come from the run's ``training_args.yaml`` / ``llamaboard_config.yaml`` /
``adapter_config.json`` (or the merge record) unless given. Every failure is a
:class:`~finetune.errors.UserError` that says where it looked and the flag that fixes it.

Light module: no torch / transformers / llamafactory.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.layout import Layout
from finetune.rundir import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    BOARD_CONFIG,
    CHECKPOINT_PREFIX,
    MERGE_RECORD,
    MERGED_DIR,
    MODEL_CONFIG,
    TRAINING_ARGS,
    RecordedArgs,
    RunDir,
    is_adapter_dir,
    is_model_dir,
)

__all__ = ["MERGE_RECORD", "ModelRef", "check_template_name", "find_folder", "merge_record", "resolve"]

@dataclass
class ModelRef:
    """What to load: ``base`` (+ ``adapter``) with ``template``."""

    base: str
    adapter: str | None
    template: str
    kind: str  # run | adapter | checkpoint | merged | model
    source: str  # what the user gave
    run_dir: str | None = None
    run_id: str | None = None
    finetuning_type: str = "lora"
    cutoff_len: int | None = None
    dataset: str | None = None
    dataset_dir: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        return f"{self.kind} {self.run_id or self.source}"


def merge_record(folder: Path) -> dict[str, Any]:
    """``finetune_merge.json`` of a merged model ({} when absent or unreadable)."""
    try:
        data = fileio.read_json(Path(folder) / MERGE_RECORD, {}) if (Path(folder) / MERGE_RECORD).is_file() else {}
    except (UserError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _holds(folder: Path, limit: int = 15) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _run_settings(folder: Path) -> tuple[RecordedArgs, Path | None]:
    """Recorded arguments of the run that owns ``folder`` (itself, or its parent for a checkpoint)."""
    for candidate in (folder, folder.parent):
        if (candidate / TRAINING_ARGS).is_file() or (candidate / BOARD_CONFIG).is_file():
            rec = RunDir(candidate).recorded()
            if rec != RecordedArgs():
                return rec, candidate
    return RecordedArgs(), None


def _nearest_runs_line(layout: Layout, ref: str) -> list[str]:
    from finetune.runs import nearest_runs

    near = nearest_runs(layout, ref)
    return [f"nearest runs: {', '.join(near)}"] if near else ["no runs found (invoke runs lists them)"]


def find_folder(layout: Layout, ref: str) -> tuple[Path, str | None]:
    """A folder for ``ref`` (a path, or a run id among the discovered runs)."""
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{path} is a file; point at a run, adapter, checkpoint or model folder",
                            where=str(path), fix="invoke runs (lists run ids and their folders)")
        return path.resolve(), None
    from finetune.runs import find_run

    run = find_run(layout, ref)
    if run is not None:
        return Path(run.path), run.id
    raise UserError(f"no run or folder named {ref!r}", where="RUN",
                    details=[f"looked for a folder {path.resolve()} and a run id under {layout.outputs_dir} "
                             "and LLaMA-Factory's saves/", *_nearest_runs_line(layout, ref)],
                    fix="invoke runs (pick an id), or pass the adapter / model folder")


def resolve(layout: Layout, ref: str, base: str | None = None, template: str | None = None,
            check_template: bool = True) -> ModelRef:
    """Resolve ``ref`` (run id / run, adapter, checkpoint, merged or model folder) to a :class:`ModelRef`."""
    folder, run_id = find_folder(layout, str(ref))
    settings, run_dir = _run_settings(folder)
    record = merge_record(folder)
    adapter: Path | None = None

    if is_adapter_dir(folder):
        adapter = folder
        kind = "checkpoint" if folder.name.startswith(CHECKPOINT_PREFIX) else ("run" if run_dir == folder else "adapter")
    elif is_model_dir(folder):
        kind = "merged" if record else "model"
    elif is_model_dir(folder / MERGED_DIR):
        folder, kind = folder / MERGED_DIR, "merged"
        record = merge_record(folder)
    else:
        details = [f"{folder} holds: {_holds(folder)}"]
        ckpts = [c.path for c in RunDir(folder).checkpoints() if is_adapter_dir(c.path)]
        if (folder / ADAPTER_CONFIG).is_file():
            details.insert(0, f"{ADAPTER_CONFIG} is there but {ADAPTER_WEIGHTS[0]} is missing "
                              "(copy incomplete, or training still saving)")
        if ckpts:
            details.append(f"checkpoints with an adapter: {', '.join(p.name for p in ckpts)} "
                           f"(e.g. invoke infer --run {ckpts[-1]})")
        if run_dir is not None:
            info = RunDir(run_dir).info()
            details.append(f"this run is {info.status} at step {info.steps}/{info.total_steps}")
        details += _nearest_runs_line(layout, folder.name)
        fix = (f"resume the run (invoke train --resume {folder.name}) or use a checkpoint folder"
               if ckpts else f"point --run at a folder with {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS[0]}, "
                             "a merged model, or a run id from invoke runs")
        raise UserError(f"adapter not found in {folder}", where=str(folder), details=details, fix=fix)

    # -- base model ---------------------------------------------------------------------------------
    looked: list[str] = []
    if adapter is None:
        base_model = str(folder)
    else:
        base_model = base
        if not base_model:
            base_model = settings.base_model
            looked.append(f"{run_dir / TRAINING_ARGS}" if run_dir else f"{TRAINING_ARGS} (none)")
        if not base_model:
            base_model = RunDir(adapter).recorded().base_model
            looked.append(str(adapter / ADAPTER_CONFIG))
        if not base_model:
            raise UserError("base model not given, and the run does not say which it is",
                            where=str(adapter), details=[f"looked in: {', '.join(looked)}"],
                            fix="pass the base model: --base PATH_TO_BASE_MODEL")
        _check_base_exists(base_model, given=bool(base), looked=looked)

    # -- template -----------------------------------------------------------------------------------
    tmpl = template or settings.template or record.get("template")
    if not tmpl:
        raise UserError(f"no chat template known for {folder}", where=str(folder),
                        details=[f"looked in {TRAINING_ARGS} / {BOARD_CONFIG} of the run and "
                                 f"{MERGE_RECORD} of a merged model"],
                        fix="pass the template the model was trained with: --template NAME (e.g. qwen, llama3)")
    if check_template:
        check_template_name(tmpl)

    ft = settings.finetuning_type or ("lora" if adapter else "full")
    return ModelRef(base=str(base_model), adapter=str(adapter) if adapter else None, template=tmpl, kind=kind,
                    source=str(ref), run_dir=str(run_dir) if run_dir else record.get("run_dir"),
                    run_id=run_id or (run_dir.name if run_dir else record.get("run_id")),
                    finetuning_type=ft if adapter else "full", cutoff_len=settings.cutoff_len,
                    dataset=settings.dataset, dataset_dir=settings.dataset_dir)


def _check_base_exists(base_model: str, given: bool, looked: list[str]) -> None:
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / MODEL_CONFIG).is_file():
            raise UserError(f"base model folder {path} holds no {MODEL_CONFIG}", where=str(path),
                            details=[f"it holds: {_holds(path)}"], fix="pass the model folder: --base PATH")
        return
    looks_local = base_model.startswith((".", "/", "~", "\\")) or base_model[1:3] == ":\\" \
        or base_model.count("/") != 1
    if looks_local or os.environ.get("HF_HUB_OFFLINE") == "1":
        src = "given with --base" if given else f"recorded in {looked[0] if looked else 'the run'}"
        raise UserError(f"base model not found: {base_model} ({src})", where=base_model,
                        details=["the run's base model was moved or deleted, or the run was made on "
                                 "another machine"],
                        fix="pass where the base model is now: --base PATH_TO_BASE_MODEL")


def check_template_name(name: str) -> None:
    from finetune.llama_factory.args import known_templates, nearest

    names = known_templates()
    if names and name not in names:
        close = nearest(name, names)
        raise UserError(f"unknown chat template {name!r}", where="--template",
                        details=[f"did you mean: {', '.join(close)}"] if close else
                        [f"{len(names)} templates known, e.g. {', '.join(names[:8])}"],
                        fix="pass --template with the name used for training (invoke runs shows it)")
