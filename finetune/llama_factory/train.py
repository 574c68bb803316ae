"""Headless training: the Web UI's argument files, then ``llamafactory-cli train`` as a child.

A run started here looks exactly like one started from the page: the run folder holds the
``training_args.yaml`` and ``llamaboard_config.yaml`` the page writes (so the Web UI can load it),
the child runs with ``LLAMABOARD_ENABLED=1`` / ``LLAMABOARD_WORKDIR`` (so it writes
``running_log.txt`` for the page), and the trainer's own ``trainer_log.jsonl`` feeds our progress
bar. The child's output goes to ``<logs>/<run_id>/train.log`` (UTF-8). ``finetune_run.json`` in the
run folder records the child's pid and how it ended, for ``invoke runs``.

* :func:`run_training` -- what ``invoke train`` and ``run_finetune.py`` call: flags -> plan -> run.
* :func:`train` -- the same for a ready :class:`~finetune.llama_factory.args.TrainSpec` (demo, tests).
* :func:`execute` -- carry out a :class:`~finetune.llama_factory.plan.TrainPlan` (the only code that
  creates a run folder for training).

The run folder's files are :mod:`finetune.rundir`'s; the checks are :mod:`finetune.llama_factory.plan`'s.
The module imports no heavy package: training happens in the child process.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.env.portable import check_torchrun_paths, path_with_scripts
from finetune.errors import UserError
from finetune.layout import Layout
from finetune.llama_factory.args import TrainSpec, dump_yaml
from finetune.llama_factory.distributed import write_deepspeed_config
from finetune.llama_factory.plan import TrainFlags, TrainPlan, plan_resume, plan_spec, plan_training
from finetune.rundir import BOARD_CONFIG, TRAINING_ARGS, RunDir, failure_kind, process_create_time


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


def _child_cmd(yaml_path: Path, overrides: Mapping[str, Any]) -> list[str]:
    """``llamafactory-cli train <yaml> key=value ...`` with this Python (no console script, no shell)."""
    return [sys.executable, "-m", "llamafactory.cli", "train", str(yaml_path),
            *(f"{k}={v}" for k, v in overrides.items())]


def _error_summary(log_path: Path) -> tuple[str, list[str]]:
    """The most telling error line of a failed child, plus the log tail."""
    try:
        lines = fileio.tail_lines(log_path, 40, max_bytes=64_000)
    except OSError:
        lines = []
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

    columns = (TextColumn("[bold]train[/]"), BarColumn(), TextColumn("{task.completed}/{task.fields[of]} steps"),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=None, loss="-", of="?", completed=start_step)
        seen: dict[str, Any] = {}
        while True:
            done = proc.poll() is not None
            last = (RunDir(run_dir).log_tail(1) or [{}])[-1]  # a fresh read of the log's last line
            if last and last != seen:
                seen = last
                loss = last.get("loss")
                total = last.get("total_steps") or None
                bar.update(task, total=total, of=total or "?", completed=last.get("current_steps", 0),
                           loss=f"{loss:.4f}" if isinstance(loss, (int, float)) else "-")
            if done:
                return
            time.sleep(0.5)


def run_training(layout: Layout, flags: TrainFlags, progress: bool = True,
                 say: Callable[[str], None] | None = None) -> TrainResult:
    """``invoke train``: check every flag (one error listing every problem, no folder created),
    then train. ``say`` receives the plan's notes (gloo, torchrun, preset choices)."""
    plan = plan_training(layout, flags)
    for note in plan.notes:
        (say or _say)(note)
    return execute(layout, plan, progress=progress)


def train(layout: Layout, spec: TrainSpec | None, run_id: str | None = None, resume: bool = False,
          progress: bool = True, env: Mapping[str, str] | None = None, name: str = "") -> TrainResult:
    """Train one run from a ready spec; returns when the child ends. Raises :class:`UserError` on any
    failure. ``resume=True`` continues ``run_id`` from its latest complete ``checkpoint-N`` with the
    arguments saved in its ``training_args.yaml`` (``spec`` may then be None)."""
    if resume:
        if not run_id:
            raise UserError("--resume needs the run to continue", fix="invoke runs (pick an id), then "
                            "invoke train --resume RUN_ID")
        return execute(layout, plan_resume(layout, run_id), progress=progress)
    if spec is None:
        raise UserError("no training settings given", fix="invoke train --model PATH --dataset NAME")
    return execute(layout, plan_spec(layout, spec, run_id=run_id, name=name, env=env), progress=progress)


def _say(note: str) -> None:
    print(note, file=sys.stderr)


def _child_env(plan: TrainPlan, rd: RunDir) -> dict[str, str]:
    # LLaMA-Factory's normal log level in train.log even when this process quieted it for inference
    return {"DISABLE_VERSION_CHECK": "1", "LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": str(rd.path),
            "GRADIO_ANALYTICS_ENABLED": "False", "LLAMAFACTORY_VERBOSITY": "INFO",
            "TRANSFORMERS_VERBOSITY": "warning",
            # LLaMA-Factory runs `torchrun` by name: this environment's scripts folder even unactivated
            "PATH": path_with_scripts(os.environ.get("PATH", "")),
            **plan.env}


def execute(layout: Layout, plan: TrainPlan, progress: bool = True) -> TrainResult:
    """Carry out ``plan``: write the run folder's files (new runs), start the trainer child, follow
    it, record how it ended. Ctrl-C stops the whole child tree and says how to resume."""
    overrides: dict[str, Any] = {}
    check_torchrun_paths(plan.env, [plan.run_dir / TRAINING_ARGS])  # torchrun splits paths at spaces
    if plan.resume_from is not None:
        rd = RunDir(plan.run_dir, plan.run_id)
        overrides["resume_from_checkpoint"] = str(plan.resume_from)
    else:
        assert plan.spec is not None
        rd = RunDir.create(layout, run_id=plan.run_id)
        if plan.deepspeed:
            write_deepspeed_config(rd.path, plan.deepspeed)
        rd.write_text(TRAINING_ARGS, dump_yaml(plan.spec.to_training_args()))
        rd.write_text(BOARD_CONFIG, dump_yaml(plan.spec.to_board_config(include_paths=False)))

    from finetune.proc import popen_group, stop_tree

    run_id = rd.id
    log_path = rd.log_path(layout)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_step = (rd.log_tail(1) or [{}])[-1].get("current_steps", 0) if plan.resume_from else 0
    resumed_from = plan.resume_from.name if plan.resume_from else None
    t0 = time.monotonic()
    proc = popen_group(_child_cmd(rd.training_args_path, overrides), log_path=log_path, env=_child_env(plan, rd),
                       cwd=layout.root)
    rd.update_state(run_id=run_id, pid=proc.pid, pid_create_time=process_create_time(proc.pid), status="running",
                    started_at=datetime.now().isoformat(timespec="seconds"), log=str(log_path),
                    returncode=None, resumed_from=resumed_from, ended_at=None, launch_env=dict(plan.env))
    interrupted = False
    try:
        _progress_loop(proc, rd.path, progress, start_step)
    except KeyboardInterrupt:
        interrupted = True
        stop_tree(proc.pid)
    finally:
        if proc.poll() is None:  # any other exception: never leave a trainer behind
            stop_tree(proc.pid)
    rc = proc.wait()
    elapsed = time.monotonic() - t0
    done = RunDir(rd.path, run_id)  # fresh reads
    finished = rc == 0 and done.is_finished()
    status = "finished" if finished else ("interrupted" if interrupted else "failed")
    done.update_state(status=status, returncode=rc, ended_at=datetime.now().isoformat(timespec="seconds"),
                      elapsed_s=round(elapsed, 2))
    steps, total, losses = done.progress()
    result = TrainResult(run_id=run_id, run_dir=rd.path, log_path=log_path, returncode=rc, status=status,
                         steps=steps or 0, total_steps=total or 0, last_loss=losses[-1] if losses else None,
                         elapsed_s=round(elapsed, 2), resumed_from=resumed_from, adapter_dir=done.adapter())
    if interrupted:
        raise UserError(f"training of {run_id} stopped by Ctrl-C at step {result.steps}/{result.total_steps}",
                        where=str(rd.path), fix=f"continue it: invoke train --resume {run_id}", exit_code=130)
    if not finished:
        reason, lines = _error_summary(log_path)
        raise UserError(f"training of {run_id} failed (exit code {rc})" + (f": {reason}" if reason else ""),
                        where=str(log_path), details=["last lines of the log:", *lines],
                        fix=failure_fix(reason, run_id, log_path, done.training_args(),
                                        has_checkpoint=done.latest_checkpoint() is not None, returncode=rc))
    return result


def _dataset_file(data_dir: Path, name: str) -> Path:
    """The file registered as ``name`` in the Data dir (``NAME.jsonl`` when the registry cannot say)."""
    from finetune.data.register import registered_file

    return registered_file(data_dir, name) or data_dir / f"{name}.jsonl"


def failure_fix(reason: str, run_id: str, log_path: Path, args: dict[str, Any], has_checkpoint: bool,
                returncode: int | None = None) -> str:
    """The fix line for a failed run, by what its log says (docs/guide section 8.2, 8.3). A trainer
    killed by SIGKILL without an error line is, on Linux, nearly always the kernel's out-of-memory killer."""
    from finetune.data.names import command

    model, template = args.get("model_name_or_path", "MODEL"), args.get("template", "TEMPLATE")
    dataset = str(args.get("dataset", "DATASET")).split(",")[0]
    data_file = _dataset_file(Path(args.get("dataset_dir", "dataset/llamafactory")), dataset)
    killed = not reason and returncode in (-9, 137)
    kind = "oom" if killed else failure_kind(reason)
    if kind == "oom":
        batch = int(args.get("per_device_train_batch_size") or 2)
        cutoff = int(args.get("cutoff_len") or 2048)
        stats = command(["invoke", "data.stats", data_file, model, "--cutoff", cutoff])
        smaller = command(["invoke", "train", "--model", model, "--template", template, "--dataset", dataset,
                           "--batch-size", max(1, batch // 2), "--cutoff", cutoff // 2 if cutoff > 256 else cutoff])
        why = ("the trainer was killed (SIGKILL), on Linux usually by the kernel's out-of-memory killer (dmesg says)"
               if killed else "the batch did not fit in memory")
        return (f"{why}: see how long the samples are ({stats}), then train with a smaller batch / cutoff: "
                f"{smaller} (on an NVIDIA GPU also --quantization-bit 4)")
    if kind == "data":
        return (f"LLaMA-Factory could not load the data; find the line: {command(['invoke', 'data.check', data_file])}"
                ", fix it, then start again with invoke train")
    again = f"read {log_path}; fix the cause, then start again with invoke train"
    return again + (f" (or continue from its last checkpoint: invoke train --resume {run_id})" if has_checkpoint else "")


def report(result: TrainResult, as_json: bool = False) -> None:
    """Print a finished run the way ``invoke train`` does (JSON: one strict object)."""
    if as_json:
        print(fileio.dumps_json(result.as_dict()))
        return
    print(f"run {result.run_id} {result.status}: {result.steps}/{result.total_steps} steps, "
          f"loss {result.last_loss}, {result.elapsed_s:.0f} s\n  folder {result.run_dir}\n  log    {result.log_path}")
    print(f"next: invoke infer {result.run_id} --prompt \"Hello\"   (or invoke runs)")


def spec_from_flags(layout: Layout, model: str, template: str, dataset: str | list[str], epochs: float = 3.0,
                    lr: float = 5e-5, batch_size: int = 2, cutoff: int = 2048, lora_rank: int = 8,
                    max_samples: int = 100000, save_steps: int = 100, **extra_fields: Any) -> TrainSpec:
    """A :class:`TrainSpec` from CLI-style flags (``dataset`` as a list or ``a,b``); other TrainSpec
    fields (``logging_steps`` ...) as keywords."""
    flags = TrainFlags.from_kwargs(model=model, template=template, dataset=dataset, epochs=epochs, lr=lr,
                                   batch_size=batch_size, cutoff=cutoff, lora_rank=lora_rank,
                                   max_samples=max_samples, save_steps=save_steps)
    return flags.spec(layout, **extra_fields)
