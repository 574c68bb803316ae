"""Turn what a user points at into what inference needs: base model + adapter + chat template.

Accepted: a run id (``invoke runs``), a run folder, an adapter folder, a ``checkpoint-N`` folder,
a merged model folder (ours, with ``finetune_merge.json``), or any full model folder. The base model
and template come from the run's ``training_args.yaml`` / ``llamaboard_config.yaml`` /
``adapter_config.json`` (or the merge record) unless given. Every failure is a
:class:`~finetune.errors.UserError` that says where it looked and the flag that fixes it.

Light module: no torch / transformers / llamafactory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.layout import Layout

MERGE_RECORD = "finetune_merge.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


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


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a broken file gives no information, discovery reports it
        return {}
    return data if isinstance(data, dict) else {}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001
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


def _is_model_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        any((folder / n).is_file() for n in WEIGHT_FILES) or any(folder.glob("model-*.safetensors")))


def _has_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() and any((folder / n).is_file() for n in ADAPTER_WEIGHTS)


def _run_settings(folder: Path) -> tuple[dict[str, Any], Path | None]:
    """training_args / board settings of the run that owns ``folder`` (itself or its parent)."""
    for candidate in (folder, folder.parent):
        args = _yaml(candidate / "training_args.yaml")
        board = _yaml(candidate / "llamaboard_config.yaml")
        if args or board:
            merged = {
                "model_name_or_path": args.get("model_name_or_path") or board.get("top.model_path"),
                "template": args.get("template") or board.get("top.template"),
                "finetuning_type": args.get("finetuning_type") or board.get("top.finetuning_type"),
                "cutoff_len": args.get("cutoff_len") or board.get("train.cutoff_len"),
                "quantization_bit": args.get("quantization_bit"),
                "dataset": args.get("dataset"),
                "dataset_dir": args.get("dataset_dir"),
            }
            return merged, candidate
    return {}, None


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
    record = _json(folder / MERGE_RECORD)
    adapter: Path | None = None

    if _has_adapter(folder):
        adapter = folder
        kind = "checkpoint" if folder.name.startswith("checkpoint-") else ("run" if run_dir == folder else "adapter")
    elif _is_model_dir(folder):
        kind = "merged" if record else "model"
    elif (folder / "merged").is_dir() and _is_model_dir(folder / "merged"):
        folder, kind = folder / "merged", "merged"
        record = _json(folder / MERGE_RECORD)
    else:
        details = [f"{folder} holds: {_holds(folder)}"]
        ckpts = sorted((p for p in folder.glob("checkpoint-*") if _has_adapter(p)),
                       key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else -1)
        if (folder / "adapter_config.json").is_file():
            details.insert(0, "adapter_config.json is there but adapter_model.safetensors is missing "
                              "(copy incomplete, or training still saving)")
        if ckpts:
            details.append(f"checkpoints with an adapter: {', '.join(p.name for p in ckpts)} "
                           f"(e.g. invoke infer --run {ckpts[-1]})")
        if run_dir is not None:
            from finetune.runs import read_run

            info = read_run(run_dir)
            details.append(f"this run is {info.status} at step {info.steps}/{info.total_steps}")
        details += _nearest_runs_line(layout, folder.name)
        fix = (f"resume the run (invoke train --resume {folder.name}) or use a checkpoint folder"
               if ckpts else "point --run at a folder with adapter_config.json + adapter_model.safetensors, "
                             "a merged model, or a run id from invoke runs")
        raise UserError(f"adapter not found in {folder}", where=str(folder), details=details, fix=fix)

    # -- base model ---------------------------------------------------------------------------------
    looked: list[str] = []
    if adapter is None:
        base_model = str(folder)
    else:
        base_model = base
        if not base_model:
            base_model = settings.get("model_name_or_path")
            looked.append(f"{run_dir / 'training_args.yaml'}" if run_dir else "training_args.yaml (none)")
        if not base_model:
            cfg = _json(adapter / "adapter_config.json")
            base_model = cfg.get("base_model_name_or_path")
            looked.append(str(adapter / "adapter_config.json"))
        if not base_model:
            raise UserError("base model not given, and the run does not say which it is",
                            where=str(adapter), details=[f"looked in: {', '.join(looked)}"],
                            fix="pass the base model: --base PATH_TO_BASE_MODEL")
        _check_base_exists(base_model, given=bool(base), looked=looked)

    # -- template -----------------------------------------------------------------------------------
    tmpl = template or settings.get("template") or record.get("template")
    if not tmpl:
        raise UserError(f"no chat template known for {folder}", where=str(folder),
                        details=["looked in training_args.yaml / llamaboard_config.yaml of the run and "
                                 f"{MERGE_RECORD} of a merged model"],
                        fix="pass the template the model was trained with: --template NAME (e.g. qwen, llama3)")
    if check_template:
        check_template_name(tmpl)

    ft = settings.get("finetuning_type") or ("lora" if adapter else "full")
    return ModelRef(base=str(base_model), adapter=str(adapter) if adapter else None, template=tmpl, kind=kind,
                    source=str(ref), run_dir=str(run_dir) if run_dir else record.get("run_dir"),
                    run_id=run_id or (run_dir.name if run_dir else record.get("run_id")),
                    finetuning_type=ft if adapter else "full", cutoff_len=settings.get("cutoff_len"),
                    dataset=settings.get("dataset"), dataset_dir=settings.get("dataset_dir"))


def _check_base_exists(base_model: str, given: bool, looked: list[str]) -> None:
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"base model folder {path} holds no config.json", where=str(path),
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
