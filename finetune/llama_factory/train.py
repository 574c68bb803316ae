"""Headless training: the Web UI's argument files, then ``llamafactory-cli train`` as a child.

A run started here looks exactly like one started from the page: the run folder holds the
``training_args.yaml`` and ``llamaboard_config.yaml`` the page writes (so the Web UI can load it),
the child runs with ``LLAMABOARD_ENABLED=1`` / ``LLAMABOARD_WORKDIR`` (so it writes
``running_log.txt`` for the page), and the trainer's own ``trainer_log.jsonl`` feeds our progress
bar. The child's output goes to ``<logs>/<run_id>/train.log`` (UTF-8). ``finetune_run.json`` in the
run folder records the child's pid and how it ended, for ``invoke runs``.

The module imports no heavy package: training happens in the child process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.layout import Layout
from finetune.llama_factory.args import (
    LLAMABOARD_CONFIG,
    TRAINING_ARGS,
    TrainSpec,
    dump_yaml,
    known_templates,
    nearest,
)
from finetune.llama_factory.distributed import DEEPSPEED_CHOICES, write_deepspeed_config

RUN_STATE = "finetune_run.json"
TRAINER_LOG = "trainer_log.jsonl"
TRAIN_LOG_NAME = "train.log"


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    log_path: Path
    returncode: int
    status: str = "finished"
    steps: int = 0
    total_steps: int = 0
    last_loss: float | None = None
    elapsed_s: float = 0.0
    resumed_from: str | None = None
    adapter_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("run_dir", "log_path", "adapter_dir"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


# ---- small file helpers ---------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) next to ``path`` and move it into place: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_trainer_log(run_dir: Path) -> list[dict[str, Any]]:
    """``trainer_log.jsonl`` as a list (bad or half-written lines skipped)."""
    out: list[dict[str, Any]] = []
    try:
        with (run_dir / TRAINER_LOG).open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
    except OSError:
        pass
    return out


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest *complete* ``checkpoint-N``: the Trainer writes ``trainer_state.json`` last, so a
    folder without it was cut off mid-save (e.g. Ctrl-C while saving) and cannot be resumed."""
    best: tuple[int, Path] | None = None
    if not run_dir.is_dir():
        return None
    for child in run_dir.iterdir():
        if child.is_dir() and child.name.startswith("checkpoint-") and (child / "trainer_state.json").is_file():
            try:
                n = int(child.name.split("-", 1)[1])
            except ValueError:
                continue
            if best is None or n > best[0]:
                best = (n, child)
    return best[1] if best else None


def write_state(run_dir: Path, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the run's ``finetune_run.json`` (atomic)."""
    path = run_dir / RUN_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            state = {}
    except (OSError, ValueError):
        state = {}
    state.update(values)
    atomic_write_text(path, json.dumps(state, indent=2, ensure_ascii=False))
    return state


# ---- checks before starting the child (seconds saved, clear messages) ------------------------------
def preflight(layout: Layout, spec: TrainSpec) -> None:
    problems: list[str] = []
    model = Path(spec.model_path).expanduser()
    if not model.is_dir():
        raw = str(spec.model_path)
        looks_local = raw.startswith((".", "/", "~", "\\")) or raw[1:3] == ":\\" or raw.count("/") != 1
        if looks_local or os.environ.get("HF_HUB_OFFLINE") == "1":
            problems.append(f"base model folder not found: {model}")
    elif not (model / "config.json").is_file():
        problems.append(f"{model} holds no config.json: not a Hugging Face model folder")
    templates = known_templates()
    if templates and spec.template not in templates:
        close = nearest(spec.template, templates)
        problems.append(f"unknown chat template {spec.template!r}"
                        + (f" (did you mean {', '.join(close)}?)" if close else ""))
    info_path = Path(spec.dataset_dir) / "dataset_info.json"
    if not spec.dataset:
        problems.append("no dataset given")
    elif not info_path.is_file():
        problems.append(f"no dataset_info.json in {spec.dataset_dir}")
    else:
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise UserError(f"dataset_info.json is not valid JSON ({err})", where=str(info_path),
                            fix="invoke data.register FILE (rewrites it)") from None
        missing = [d for d in spec.dataset if d not in info]
        if missing:
            problems.append(f"dataset(s) {', '.join(missing)} not registered in {info_path} "
                            f"(registered: {', '.join(sorted(info)) or 'none'})")
    if problems:
        raise UserError(
            "cannot start training: " + problems[0], where="invoke train", details=problems[1:],
            fix="pass --model PATH_TO_MODEL, --template NAME (see LLaMA-Factory's template list), "
                "--dataset NAME registered with `invoke data.register FILE`",
        )


def _child_cmd(yaml_path: Path, overrides: Mapping[str, Any]) -> list[str]:
    """``llamafactory-cli train <yaml> key=value ...`` with this Python (no console script, no shell)."""
    return [sys.executable, "-m", "llamafactory.cli", "train", str(yaml_path),
            *(f"{k}={v}" for k, v in overrides.items())]


def _error_summary(log_path: Path) -> tuple[str, list[str]]:
    """The most telling error line of a failed child, plus the log tail."""
    from finetune.proc import tail

    text = tail(log_path, 40)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    reason = ""
    for ln in reversed(lines):
        s = ln.strip()
        if (s.split(":", 1)[0].endswith(("Error", "Exception")) or s.startswith("RuntimeError")) and ":" in s:
            reason = s
            break
    return reason, lines[-15:]


def _progress_loop(proc, run_dir: Path, progress: bool, start_step: int = 0) -> None:
    """Wait for the child; with ``progress`` draw a rich bar from trainer_log.jsonl."""
    if not progress:
        proc.wait()
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]train[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=None, loss="-", completed=start_step)
        seen = 0
        while proc.poll() is None:
            logs = read_trainer_log(run_dir)
            if len(logs) != seen and logs:
                seen = len(logs)
                last = logs[-1]
                loss = last.get("loss")
                bar.update(task, total=last.get("total_steps") or None, completed=last.get("current_steps", 0),
                           loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else "-")
            time.sleep(0.5)
        logs = read_trainer_log(run_dir)
        if logs:
            bar.update(task, total=logs[-1].get("total_steps") or None, completed=logs[-1].get("current_steps", 0))


def train(layout: Layout, spec: TrainSpec | None, run_id: str | None = None, resume: bool = False,
          progress: bool = True, env: Mapping[str, str] | None = None, name: str = "") -> TrainResult:
    """Train one run; returns when the child ends. Raises :class:`UserError` on any failure.

    ``resume=True`` continues ``run_id`` from its latest ``checkpoint-N`` with the arguments saved
    in its ``training_args.yaml`` (``spec`` may then be None).
    """
    overrides: dict[str, Any] = {}
    resumed_from = None
    if resume:
        if not run_id:
            raise UserError("--resume needs the run to continue", fix="invoke runs (pick an id), then "
                            "invoke train --resume RUN_ID")
        run_dir = _find_run_dir(layout, run_id)
        run_id = run_dir.name
        if not (run_dir / TRAINING_ARGS).is_file():
            raise UserError(f"{run_dir} holds no {TRAINING_ARGS}: nothing to resume", where=str(run_dir),
                            fix="start a new run: invoke train --model ... --dataset ...")
        if (run_dir / "train_results.json").is_file():
            raise UserError(f"run {run_id} already finished; nothing to resume", where=str(run_dir),
                            fix="start a new run with invoke train, or use it: invoke infer --run " + run_id)
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise UserError(f"run {run_id} has no complete checkpoint-N folder (with trainer_state.json) "
                            "to resume from", where=str(run_dir),
                            fix="start it again: invoke train (with --save-steps smaller than the run length)")
        overrides["resume_from_checkpoint"] = str(ckpt)
        resumed_from = ckpt.name
        yaml_path = run_dir / TRAINING_ARGS
    else:
        if spec is None:
            raise UserError("no training settings given", fix="invoke train --model PATH --dataset NAME")
        run_id = run_id or layout.new_run(name)
        run_dir = layout.run_dir(run_id)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(f"run folder {run_dir} already exists and is not empty", where=str(run_dir),
                            fix=f"pick another --run-name, or continue it: invoke train --resume {run_id}")
        if spec.dataset_dir in ("", "data"):
            spec.dataset_dir = str(layout.data_dir)
        spec.dataset_dir = str(Path(spec.dataset_dir).expanduser().resolve())
        model = Path(spec.model_path).expanduser()
        if model.exists():
            spec.model_path = str(model.resolve())
        preflight(layout, spec)
        spec.output_dir = str(run_dir)
        spec.resolved_compute_type()
        run_dir.mkdir(parents=True, exist_ok=True)
        ds_kind = spec.extra.get("deepspeed")
        if ds_kind in DEEPSPEED_CHOICES:  # the config travels with the run
            spec.extra["deepspeed"] = str(write_deepspeed_config(run_dir, ds_kind))
        yaml_path = run_dir / TRAINING_ARGS
        atomic_write_text(yaml_path, dump_yaml(spec.to_training_args()))
        atomic_write_text(run_dir / LLAMABOARD_CONFIG, dump_yaml(spec.to_board_config(include_paths=False)))

    from finetune.proc import popen_group, stop_tree

    log_path = layout.log_dir(run_id) / TRAIN_LOG_NAME
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # LLaMA-Factory's normal log level in train.log even when this process quieted it for inference
    child_env = {"DISABLE_VERSION_CHECK": "1", "LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": str(run_dir),
                 "GRADIO_ANALYTICS_ENABLED": "False", "LLAMAFACTORY_VERBOSITY": "INFO",
                 "TRANSFORMERS_VERBOSITY": "warning",
                 # LLaMA-Factory runs `torchrun` by name: find the one beside this Python even unactivated
                 "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                 **(env or {})}
    start_step = (read_trainer_log(run_dir) or [{}])[-1].get("current_steps", 0) if resume else 0
    t0 = time.monotonic()
    proc = popen_group(_child_cmd(yaml_path, overrides), log_path=log_path, env=child_env, cwd=layout.root)
    create_time = _create_time(proc.pid)
    write_state(run_dir, run_id=run_id, pid=proc.pid, pid_create_time=create_time, status="running",
                started_at=datetime.now().isoformat(timespec="seconds"), log=str(log_path),
                returncode=None, resumed_from=resumed_from, ended_at=None)
    interrupted = False
    try:
        _progress_loop(proc, run_dir, progress, start_step)
    except KeyboardInterrupt:
        interrupted = True
        stop_tree(proc.pid)
    finally:
        if proc.poll() is None:  # any other exception: never leave a trainer behind
            stop_tree(proc.pid)
    rc = proc.wait()
    elapsed = time.monotonic() - t0
    finished = rc == 0 and (run_dir / "train_results.json").is_file()
    status = "finished" if finished else ("interrupted" if interrupted else "failed")
    write_state(run_dir, status=status, returncode=rc, ended_at=datetime.now().isoformat(timespec="seconds"),
                elapsed_s=round(elapsed, 2))
    logs = read_trainer_log(run_dir)
    last = logs[-1] if logs else {}
    losses = [x["loss"] for x in logs if isinstance(x.get("loss"), (int, float))]
    if not losses:
        try:
            tl = json.loads((run_dir / "train_results.json").read_text(encoding="utf-8")).get("train_loss")
            losses = [tl] if isinstance(tl, (int, float)) else []
        except (OSError, ValueError):
            pass
    result = TrainResult(run_id=run_id, run_dir=run_dir, log_path=log_path, returncode=rc, status=status,
                         steps=int(last.get("current_steps", 0) or 0), total_steps=int(last.get("total_steps", 0) or 0),
                         last_loss=losses[-1] if losses else None, elapsed_s=round(elapsed, 2),
                         resumed_from=resumed_from,
                         adapter_dir=run_dir if (run_dir / "adapter_config.json").is_file() else None)
    if interrupted:
        raise UserError(f"training of {run_id} stopped by Ctrl-C at step {result.steps}/{result.total_steps}",
                        where=str(run_dir), fix=f"continue it: invoke train --resume {run_id}", exit_code=130)
    if not finished:
        reason, lines = _error_summary(log_path)
        raise UserError(f"training of {run_id} failed (exit code {rc})" + (f": {reason}" if reason else ""),
                        where=str(log_path), details=["last lines of the log:", *lines],
                        fix=f"read {log_path}; fix the cause, then start again with invoke train "
                            f"(or continue from a checkpoint: invoke train --resume {run_id})")
    return result


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001
        return None


def _find_run_dir(layout: Layout, ref: str) -> Path:
    """A run id under the layout's outputs, or a run folder path."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    candidate = layout.run_dir(ref)
    if candidate.is_dir():
        return candidate
    known = sorted(p.name for p in layout.outputs_dir.iterdir() if p.is_dir()) if layout.outputs_dir.is_dir() else []
    close = nearest(ref, known)
    raise UserError(f"no run {ref!r} under {layout.outputs_dir}", where="--resume",
                    details=[f"nearest runs: {', '.join(close)}"] if close else [],
                    fix="invoke runs (lists every run id)")


def spec_from_flags(layout: Layout, model: str, template: str, dataset: str | list[str], epochs: float = 3.0,
                    lr: float = 5e-5, batch_size: int = 2, cutoff: int = 2048, lora_rank: int = 8,
                    max_samples: int = 100000, save_steps: int = 100, **extra_fields: Any) -> TrainSpec:
    """A :class:`TrainSpec` from CLI-style flags (``dataset`` as a list or ``a,b``)."""
    if isinstance(dataset, str):
        dataset = [dataset]
    names = [n.strip() for item in dataset for n in str(item).split(",") if n.strip()]
    return TrainSpec(model_path=model, template=template, dataset=names, dataset_dir=str(layout.data_dir),
                     num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=batch_size,
                     cutoff_len=cutoff, lora_rank=lora_rank, lora_alpha=lora_rank * 2, max_samples=max_samples,
                     save_steps=save_steps, **extra_fields)
