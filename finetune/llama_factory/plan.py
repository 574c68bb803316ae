"""The train plan: flags in, a frozen plan (spec, environment, notes) out, or one error naming
every problem, before any folder is created.

* :class:`TrainFlags` -- the typed flags of ``invoke train`` (and ``run_finetune.py``, which maps its
  legacy spellings onto the same fields). :data:`FLAG_HELP` is their help text, shared by both.
* :func:`plan_training` -- checks the numbers (``--lr`` > 0, ``--batch-size`` >= 1, ``--epochs`` > 0
  and finite, ...), the model folder, the template, the datasets (registered in
  ``dataset_info.json``), that LLaMA-Factory is importable, and the distributed / DeepSpeed / QLoRA /
  preset flags, all together; then builds the one :class:`~finetune.llama_factory.args.TrainSpec`
  the run is written from (absolute paths, the run folder as output dir, the compute type
  resolved, the DeepSpeed config's path) and the launcher variables.
* :func:`plan_spec` -- the same checks for a ready ``TrainSpec`` (the demo, tests);
  :func:`plan_resume` -- continuing a run from its newest complete checkpoint.

``finetune.llama_factory.train.execute`` carries a plan out. Light: no torch at import (the compute
type is detected in the function, after every check passed).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from finetune.errors import UserError
from finetune.layout import Layout
from finetune.llama_factory.args import TrainSpec, known_templates, nearest
from finetune.llama_factory.distributed import DEEPSPEED_CHOICES, DistSpec, deepspeed_config_path
from finetune.rundir import TRAINING_ARGS, RunDir

# The flags of `invoke train`, their help, and the TrainSpec field each number goes to.
FLAG_HELP: dict[str, str] = {
    "model": "base model folder (or hub id when online), e.g. finetune/cache/models/tiny-qwen2",
    "template": "chat template the model uses (LLaMA-Factory name: qwen, llama3, ...)",
    "dataset": "registered dataset name; repeat the flag or give a comma list (a,b)",
    "run_name": "a name added to the run id (YYYYMMDD-HHMMSS-NAME)",
    "epochs": "training epochs (default 3.0)",
    "lr": "learning rate (default 5e-5)",
    "batch_size": "per-device batch size (default 2)",
    "cutoff": "max tokens per conversation (default 2048)",
    "lora_rank": "LoRA rank (default 8; alpha is twice the rank)",
    "max_samples": "use at most this many conversations per dataset (default 100000)",
    "save_steps": "save a checkpoint-N every this many steps (default 100)",
    "resume": "continue this run id from its latest complete checkpoint-N (other flags are ignored)",
    "nproc_per_node": "processes (GPUs) per node; > 1 starts torchrun (FORCE_TORCHRUN=1)",
    "nnodes": "number of nodes (machines) in the job",
    "node_rank": "this node's rank, 0 .. nnodes-1 (0 is the master)",
    "master_addr": "address of node 0 that every node reaches (default 127.0.0.1)",
    "master_port": "free TCP port on node 0 for the rendezvous (default 29500)",
    "deepspeed": "DeepSpeed ZeRO config written into the run folder: z2, z3, z2-offload, z3-offload",
    "preset": "'throughput': batch sized to the GPU's free memory, packing, no recomputation when it fits",
    "quantization_bit": "QLoRA: load the base in 4 or 8 bits (needs CUDA and bitsandbytes)",
}
SPEC_FIELD_FLAGS = {"learning_rate": "--lr", "num_train_epochs": "--epochs", "per_device_train_batch_size":
                    "--batch-size", "cutoff_len": "--cutoff", "lora_rank": "--lora-rank", "max_samples":
                    "--max-samples", "save_steps": "--save-steps"}
START_FIX = ("invoke train --model PATH --template NAME --dataset NAME (a dataset registered with "
             "`invoke data.register FILE`; see invoke --help train)")


@dataclass(frozen=True)
class TrainFlags:
    """The flags of ``invoke train``, typed. Defaults are the Web UI's."""

    model: str = ""
    template: str = "default"
    dataset: tuple[str, ...] = ()
    run_name: str = ""
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 2
    cutoff: int = 2048
    lora_rank: int = 8
    max_samples: int = 100000
    save_steps: int = 100
    resume: str = ""
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    deepspeed: str = ""
    preset: str = ""
    quantization_bit: int = 0

    @classmethod
    def from_kwargs(cls, **values: Any) -> TrainFlags:
        """From a CLI's parsed values (unknown names are an error; ``None`` / "" keep the default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"unknown train flag(s): {sorted(unknown)}")
        kept = {k: v for k, v in values.items() if v is not None and v != ""}
        if "dataset" in kept:
            raw = [kept["dataset"]] if isinstance(kept["dataset"], str) else list(kept["dataset"])
            kept["dataset"] = tuple(n.strip() for item in raw for n in str(item).split(",") if n.strip())
        return cls(**kept)

    def spec(self, layout: Layout, **overrides: Any) -> TrainSpec:
        """The TrainSpec these flags describe (not yet checked; :func:`plan_training` checks it)."""
        fields = dict(model_path=self.model, template=self.template or "default", dataset=list(self.dataset),
                      dataset_dir=str(layout.data_dir), num_train_epochs=self.epochs, learning_rate=self.lr,
                      per_device_train_batch_size=self.batch_size, cutoff_len=self.cutoff, lora_rank=self.lora_rank,
                      lora_alpha=self.lora_rank * 2 if isinstance(self.lora_rank, int) else self.lora_rank,
                      max_samples=self.max_samples, save_steps=self.save_steps)
        fields.update(overrides)
        return TrainSpec(**fields)

    def dist(self) -> DistSpec:
        return DistSpec(self.nproc_per_node, self.nnodes, self.node_rank, self.master_addr, self.master_port,
                        self.deepspeed or None)


@dataclass(frozen=True)
class TrainPlan:
    """Everything a training run needs, decided up front. ``spec`` is None when resuming (the run's
    own training_args.yaml is used); ``env`` holds LLaMA-Factory's launcher variables."""

    run_id: str
    run_dir: Path
    spec: TrainSpec | None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    notes: tuple[str, ...] = ()
    deepspeed: str | None = None  # config kind written into the run folder before the start
    resume_from: Path | None = None


def _model_problems(model_path: str) -> list[str]:
    model = Path(model_path).expanduser()
    if not model_path:
        return ["--model is needed: the base model folder"]
    if not model.is_dir():
        raw = str(model_path)
        looks_local = raw.startswith((".", "/", "~", "\\")) or raw[1:3] == ":\\" or raw.count("/") != 1
        if looks_local or os.environ.get("HF_HUB_OFFLINE") == "1":
            return [f"--model: base model folder not found: {model}"]
    elif not (model / "config.json").is_file():
        return [f"--model: {model} holds no config.json (not a Hugging Face model folder)"]
    return []


def _template_problems(template: str) -> list[str]:
    templates = known_templates()
    if templates and template not in templates:
        close = nearest(template, templates)
        return [f"--template: unknown chat template {template!r}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")]
    return []


def _dataset_problems(names: list[str], dataset_dir: str) -> list[str]:
    if not names:
        return ["--dataset is needed: a dataset name registered with `invoke data.register FILE`"]
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        return [f"--dataset: no dataset_info.json in {dataset_dir} (register a file: invoke data.register FILE)"]
    from finetune.data.register import read_dataset_info

    try:
        info = read_dataset_info(info_path)
    except UserError as err:
        return [f"--dataset: {err.where or info_path}: {err.message}"]
    missing = [d for d in names if d not in info]
    if missing:
        return [f"--dataset: {', '.join(missing)} not registered in {info_path} "
                f"(registered: {', '.join(sorted(info)) or 'none'})"]
    return []


def _stack_problems() -> tuple[list[str], list[str]]:
    if importlib.util.find_spec("llamafactory") is None:
        return (["LLaMA-Factory is not installed in this Python: training runs `python -m llamafactory.cli`"],
                ["build the training stack: python -m nox -s smoke (or pip install -e .[train]), then invoke doctor"])
    return [], []


def _fail(problems: list[str], fixes: list[str]) -> None:
    if problems:
        n = len(problems)
        raise UserError(f"cannot start training: {n} problem{'s' if n > 1 else ''}", where="invoke train",
                        details=[f"- {p}" for p in problems], fix="; ".join(dict.fromkeys(fixes)) or START_FIX)


def _finish(layout: Layout, spec: TrainSpec, run_id: str | None, name: str, env: Mapping[str, str],
            notes: tuple[str, ...], problems: list[str], fixes: list[str]) -> TrainPlan:
    """Check a spec, then fix its paths, run folder, compute type and DeepSpeed path."""
    problems += spec.problems(SPEC_FIELD_FLAGS)
    problems += _model_problems(spec.model_path)
    problems += _template_problems(spec.template)
    dataset_dir = spec.dataset_dir if spec.dataset_dir not in ("", "data") else str(layout.data_dir)
    dataset_dir = str(Path(dataset_dir).expanduser().resolve())
    problems += _dataset_problems(spec.dataset, dataset_dir)
    stack, stack_fix = _stack_problems()
    problems += stack
    fixes += stack_fix
    if run_id and layout.run_dir(run_id).is_dir() and any(layout.run_dir(run_id).iterdir()):
        problems.append(f"run folder {layout.run_dir(run_id)} already exists and is not empty "
                        f"(continue it: invoke train --resume {run_id})")
    _fail(problems, fixes)

    run_id = run_id or layout.new_run(name)
    run_dir = layout.run_dir(run_id)
    model = Path(spec.model_path).expanduser()
    kind = spec.extra.get("deepspeed")
    extra = dict(spec.extra)
    if kind in DEEPSPEED_CHOICES:  # the config travels with the run
        extra["deepspeed"] = str(deepspeed_config_path(run_dir, kind))
    final = dataclasses.replace(spec, dataset_dir=dataset_dir, output_dir=str(run_dir), extra=extra,
                                model_path=str(model.resolve()) if model.exists() else spec.model_path,
                                compute_type=spec.resolved_compute_type())
    return TrainPlan(run_id=run_id, run_dir=run_dir, spec=final, env=MappingProxyType(dict(env)), notes=notes,
                     deepspeed=kind if kind in DEEPSPEED_CHOICES else None)


def plan_training(layout: Layout, flags: TrainFlags, run_id: str | None = None,
                  spec_overrides: Mapping[str, Any] | None = None,
                  free_gib: float | None | str = "detect") -> TrainPlan:
    """The plan for ``invoke train`` with these flags, or one :class:`UserError` listing every problem."""
    if flags.resume:
        return plan_resume(layout, flags.resume)
    from finetune.llama_factory.scale import scale_settings

    spec = flags.spec(layout, **(spec_overrides or {}))
    problems: list[str] = []
    fixes: list[str] = []
    numbers_ok = not spec.problems(SPEC_FIELD_FLAGS)
    scale = scale_settings(flags.model, flags.dist(), flags.preset or None, flags.quantization_bit or None,
                           flags.cutoff if numbers_ok else 2048, free_gib=free_gib)
    problems += scale.problems
    fixes += scale.fixes
    spec = dataclasses.replace(spec, **scale.fields, extra={**spec.extra, **scale.extra})
    return _finish(layout, spec, run_id, flags.run_name, scale.env, scale.notes, problems, fixes)


def plan_spec(layout: Layout, spec: TrainSpec, run_id: str | None = None, name: str = "",
              env: Mapping[str, str] | None = None) -> TrainPlan:
    """The plan for a ready :class:`TrainSpec` (same checks as :func:`plan_training`)."""
    problems: list[str] = []
    kind = spec.extra.get("deepspeed")
    if kind and kind not in DEEPSPEED_CHOICES and not str(kind).endswith(".json"):
        problems.append(f"deepspeed {kind!r} is not one of {', '.join(DEEPSPEED_CHOICES)} or a .json file")
    return _finish(layout, spec, run_id, name, env or {}, (), problems, [])


def find_run_dir(layout: Layout, ref: str) -> RunDir:
    """A run id under the layout's outputs, or a run folder path."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return RunDir(path.resolve())
    if layout.run_dir(ref).is_dir():
        return RunDir.of(layout, ref)
    from finetune.runs import nearest_runs

    close = nearest_runs(layout, ref)
    raise UserError(f"no run {ref!r} under {layout.outputs_dir}", where="--resume",
                    details=[f"nearest runs: {', '.join(close)}"] if close else [],
                    fix="invoke runs (lists every run id)")


def plan_resume(layout: Layout, ref: str) -> TrainPlan:
    """Continue run ``ref`` from its newest complete checkpoint, with its own arguments and launch
    variables (recorded in finetune_run.json when it started)."""
    rd = find_run_dir(layout, ref)
    if not rd.training_args_path.is_file():
        raise UserError(f"{rd.path} holds no {TRAINING_ARGS}: nothing to resume", where=str(rd.path),
                        fix="start a new run: invoke train --model ... --dataset ...")
    if rd.is_finished():
        raise UserError(f"run {rd.id} already finished; nothing to resume", where=str(rd.path),
                        fix=f"start a new run with invoke train, or use it: invoke infer {rd.id}")
    ckpt = rd.latest_checkpoint()
    if ckpt is None:
        raise UserError(f"run {rd.id} has no complete checkpoint-N folder (with trainer_state.json) "
                        "to resume from", where=str(rd.path),
                        fix="start it again: invoke train (with --save-steps smaller than the run length)")
    stack, stack_fix = _stack_problems()
    _fail(stack, stack_fix)
    env = rd.state().get("launch_env")
    env = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    return TrainPlan(run_id=rd.id, run_dir=rd.path, spec=None, env=MappingProxyType(env), resume_from=ckpt,
                     notes=(f"resuming {rd.id} from {ckpt.name}",))

