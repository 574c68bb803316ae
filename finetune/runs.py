"""Run discovery: every training run on disk, what state it is in and what it left behind.

Looks under the kit's outputs folder (``finetune/outputs/llamafactory/<run_id>``), under
LLaMA-Factory's default ``saves/`` tree (``saves/<model>/<finetuning type>/<output dir>``, in the
project root, the Web UI state folder and the current folder) and under any path given.

Status rules (first match wins):

* ``finished``    ``train_results.json`` is there (the trainer writes it after the final save).
* ``running``     the trainer recorded in ``finetune_run.json`` is alive (pid + start time match), or
                  a live ``llamafactory-cli train <this folder>/training_args.yaml`` process exists
                  (how the Web UI starts trainers); where processes cannot be listed, a
                  ``trainer_log.jsonl`` / ``running_log.txt`` written in the last ``RECENT_S`` seconds.
* ``interrupted`` recorded as stopped (Ctrl-C), or the trainer is gone after logging steps and
                  without an error in its log (killed, machine went down).
* ``failed``      a non-zero exit, an error in the log, or the trainer is gone before any step.

Folders that cannot be read (broken YAML / JSON, half-written files) are listed with the reason in
``problems``, never a crash. Light module: no torch / transformers / llamafactory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.layout import Layout

RECENT_S = 120.0
RUN_MARKERS = ("training_args.yaml", "llamaboard_config.yaml", "trainer_log.jsonl", "adapter_config.json",
               "trainer_state.json", "train_results.json", "finetune_run.json", "running_log.txt")
STATUSES = ("finished", "running", "interrupted", "failed")
_ERROR_HINTS = ("Traceback (most recent call last)", "Error:", "error:", "Killed", "CUDA out of memory")


@dataclass
class RunInfo:
    id: str
    path: str
    status: str
    source: str = "outputs"
    stage: str | None = None
    finetuning_type: str | None = None
    base_model: str | None = None
    template: str | None = None
    dataset: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    last_loss: float | None = None
    min_loss: float | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    log: str | None = None
    started_at: str | None = None
    updated_at: float | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- reading one folder ---------------------------------------------------------------------------
def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problems.append(f"{path.name}: not valid YAML{where}")
        return {}
    if data is None:
        problems.append(f"{path.name}: empty")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: not a mapping")
        return {}
    return data


def _read_json(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problems.append(f"{path.name}: not valid JSON ({str(err).splitlines()[0][:80]})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: not a JSON object")
        return {}
    return data


def _read_trainer_log(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    bad = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        problems.append(f"{path.name}: unreadable ({err})")
        return out
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            if i != len(lines) - 1:  # a half-written last line is normal while training
                bad += 1
            continue
        if isinstance(item, dict):
            out.append(item)
    if bad:
        problems.append(f"{path.name}: {bad} unreadable line(s)")
    return out


def _pid_alive(pid: Any, create_time: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        if isinstance(create_time, (int, float)) and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return False


_LIVE: tuple[float, set[Path] | None] | None = None


def _live_trainer_args() -> set[Path] | None:
    """``training_args.yaml`` files that a live ``llamafactory-cli train`` process was started with
    (the Web UI starts trainers that way); cached for a second. None when processes cannot be listed."""
    global _LIVE
    now = time.monotonic()
    if _LIVE is not None and now - _LIVE[0] < 1.0:
        return _LIVE[1]
    found: set[Path] | None = set()
    try:
        import psutil

        for proc in psutil.process_iter(["cmdline", "cwd"]):
            cmd = proc.info.get("cmdline") or []
            if "train" not in cmd:
                continue
            for arg in cmd[cmd.index("train") + 1:]:
                if arg.endswith((".yaml", ".yml")):
                    path = Path(arg)
                    if not path.is_absolute() and proc.info.get("cwd"):
                        path = Path(proc.info["cwd"]) / path
                    found.add(path.resolve())
    except Exception:  # noqa: BLE001 - cannot list processes: callers fall back to log recency
        found = None
    _LIVE = (now, found)
    return found


def _log_has_error(paths: Iterable[Path]) -> str | None:
    for path in paths:
        try:
            data = path.read_bytes()[-20_000:].decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in reversed(data.splitlines()):
            s = line.strip()
            if any(h in s for h in _ERROR_HINTS) and "warning" not in s.lower():
                return s[:200]
    return None


def _checkpoints(folder: Path) -> list[str]:
    found = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.startswith("checkpoint-"):
            try:
                found.append((int(child.name.split("-", 1)[1]), child.name))
            except ValueError:
                continue
    return [name for _, name in sorted(found)]


def read_run(folder: Path, run_id: str | None = None, source: str = "path") -> RunInfo:
    """Everything known about one run folder; never raises for a bad folder."""
    folder = Path(folder)
    problems: list[str] = []
    args = _read_yaml(folder / "training_args.yaml", problems)
    board = _read_yaml(folder / "llamaboard_config.yaml", problems)
    adapter_cfg = _read_json(folder / "adapter_config.json", problems)
    state = _read_json(folder / "finetune_run.json", problems)
    results = _read_json(folder / "train_results.json", problems)
    tstate = _read_json(folder / "trainer_state.json", problems)
    logs = _read_trainer_log(folder / "trainer_log.jsonl", problems)
    if not args and not (folder / "training_args.yaml").is_file():
        problems.append("no training_args.yaml (not started by the Web UI or `invoke train`, or cleaned up)")

    base = args.get("model_name_or_path") or board.get("top.model_path") or adapter_cfg.get("base_model_name_or_path")
    template = args.get("template") or board.get("top.template")
    ft = args.get("finetuning_type") or board.get("top.finetuning_type") or ("lora" if adapter_cfg else None)
    stage = args.get("stage")
    if not stage and board.get("train.training_stage"):
        from finetune.llama_factory.args import TRAINING_STAGES

        stage = TRAINING_STAGES.get(board["train.training_stage"])
    dataset = args.get("dataset") or (",".join(board["train.dataset"]) if isinstance(board.get("train.dataset"), list)
                                      else None)

    losses = [x["loss"] for x in logs if isinstance(x.get("loss"), (int, float))]
    if not losses and isinstance(results.get("train_loss"), (int, float)):
        losses = [results["train_loss"]]  # fewer steps than logging_steps: only the run's mean
    last = logs[-1] if logs else {}
    steps = last.get("current_steps")
    total = last.get("total_steps")
    if steps is None and tstate:
        steps, total = tstate.get("global_step"), tstate.get("max_steps")
    if not losses and tstate:
        losses = [x["loss"] for x in tstate.get("log_history", []) if isinstance(x.get("loss"), (int, float))]

    ckpts = _checkpoints(folder)
    merged = folder / "merged"
    artifacts = {
        "adapter": str(folder) if (folder / "adapter_config.json").is_file() and
        any((folder / n).is_file() for n in ("adapter_model.safetensors", "adapter_model.bin")) else None,
        "merged": str(merged) if (merged / "config.json").is_file() else None,
        "checkpoints": ckpts,
        "loss_plot": str(folder / "training_loss.png") if (folder / "training_loss.png").is_file() else None,
        "model": str(folder) if (folder / "config.json").is_file() and ft in ("full", "freeze") else None,
    }
    if (folder / "adapter_config.json").is_file() and not artifacts["adapter"]:
        problems.append("adapter_config.json without adapter weights (adapter_model.safetensors)")

    log_path = Path(state["log"]) if isinstance(state.get("log"), str) else None
    log_files = [p for p in (log_path, folder / "running_log.txt") if p is not None]
    mtimes = [p.stat().st_mtime for p in (folder / "trainer_log.jsonl", folder / "running_log.txt", *log_files)
              if p.is_file()]
    updated = max(mtimes) if mtimes else None
    status = _status(folder, results, state, logs, steps, updated, log_files)

    return RunInfo(
        id=run_id or folder.name, path=str(folder), status=status, source=source, stage=stage,
        finetuning_type=ft, base_model=str(base) if base else None, template=template, dataset=dataset,
        steps=steps, total_steps=total, last_loss=losses[-1] if losses else None,
        min_loss=min(losses) if losses else None, artifacts=artifacts,
        log=str(log_path) if log_path else (str(folder / "running_log.txt") if (folder / "running_log.txt").is_file()
                                            else None),
        started_at=state.get("started_at"), updated_at=updated, problems=problems,
    )


def _status(folder: Path, results: dict, state: dict, logs: list, steps: Any, updated: float | None,
            log_files: list[Path]) -> str:
    if results or (folder / "train_results.json").is_file():
        return "finished"
    recorded = state.get("status")
    if "pid" in state and recorded == "running" and _pid_alive(state.get("pid"), state.get("pid_create_time")):
        return "running"
    live = _live_trainer_args()
    if live is not None and (folder / "training_args.yaml").resolve() in live:
        return "running"
    if live is None and "pid" not in state and updated is not None and time.time() - updated < RECENT_S \
            and not _log_has_error(log_files):
        return "running"  # processes cannot be listed here: a log written just now means a live trainer
    if recorded in ("failed", "interrupted"):
        return recorded
    if _log_has_error(log_files):
        return "failed"
    if isinstance(steps, int) and steps > 0:
        return "interrupted"
    return "failed"


# ---- finding run folders --------------------------------------------------------------------------
def _is_run_dir(folder: Path) -> bool:
    return any((folder / m).exists() for m in RUN_MARKERS)


def _walk_runs(top: Path, max_depth: int) -> Iterable[Path]:
    """Run folders at or below ``top`` (a run folder's own checkpoint-N / merged are not runs)."""
    if not top.is_dir():
        return
    if _is_run_dir(top):
        yield top
        return
    if max_depth <= 0:
        return
    try:
        children = sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from _walk_runs(child, max_depth - 1)


def saves_roots(layout: Layout) -> list[Path]:
    """Where LLaMA-Factory's Web UI keeps ``saves/`` (relative to the folder it was started in)."""
    roots = [layout.root / "saves", layout.state_dir / "saves", Path.cwd() / "saves"]
    out: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


def discover(layout: Layout, paths: Sequence[str | Path] = ()) -> list[RunInfo]:
    """Every run: the kit's outputs, LLaMA-Factory's ``saves/`` trees, and ``paths``."""
    found: list[RunInfo] = []
    seen: set[Path] = set()

    def add(folder: Path, run_id: str, source: str) -> None:
        key = folder.resolve()
        if key in seen:
            return
        seen.add(key)
        try:
            found.append(read_run(folder, run_id, source))
        except Exception as err:  # noqa: BLE001 - a folder must never crash the listing
            found.append(RunInfo(id=run_id, path=str(folder), status="failed", source=source,
                                 problems=[f"could not read the folder: {type(err).__name__}: {err}"]))

    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UserError(f"no such folder: {path}", where="invoke runs PATH",
                            fix="pass a run folder or a folder that holds runs (or no path for the defaults)")
        for folder in _walk_runs(path.resolve(), 4):
            rel = folder.relative_to(path.resolve()).as_posix() if folder != path.resolve() else folder.name
            add(folder, rel, "path")
    if layout.outputs_dir.is_dir():
        # <run_id>, or <model name>/<finetuning type>/<output dir> when the Web UI's Start was pressed
        # without "Load arguments" (its save dir is our outputs folder then)
        for folder in _walk_runs(layout.outputs_dir, 3):
            add(folder, folder.relative_to(layout.outputs_dir).as_posix(), "outputs")
    for root in saves_roots(layout):
        for folder in _walk_runs(root, 3):
            add(folder, "saves/" + folder.relative_to(root).as_posix(), "saves")
    return found


def find_run(layout: Layout, ref: str) -> RunInfo | None:
    """The run with this id (or an id ending with ``ref``) among the discovered ones."""
    runs = discover(layout)
    for run in runs:
        if run.id == ref:
            return run
    matches = [r for r in runs if r.id.endswith(ref) or Path(r.path).name == ref]
    return matches[0] if len(matches) == 1 else None


def nearest_runs(layout: Layout, ref: str = "", n: int = 5) -> list[str]:
    import difflib

    try:
        ids = [r.id for r in discover(layout)]
    except UserError:
        return []
    if not ref:
        return ids[-n:]
    return difflib.get_close_matches(ref, ids, n=n, cutoff=0.3) or ids[-n:]


# ---- output ---------------------------------------------------------------------------------------
def as_json(runs: Sequence[RunInfo]) -> str:
    return json.dumps({"runs": [r.as_dict() for r in runs]}, ensure_ascii=False, indent=2)


_STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def render(runs: Sequence[RunInfo], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not runs:
        console.print("no runs yet. Start one: invoke train --model PATH --template NAME --dataset NAME "
                      "(or invoke webui)")
        return
    table = Table(title="runs", show_lines=False)
    show_problems = any(r.problems for r in runs)
    cols = ["id", "status", "base model", "template", "steps", "loss last/min", "artifacts"]
    for col in cols + (["problems"] if show_problems else []):
        table.add_column(col, overflow="fold", no_wrap=col in ("id", "status", "steps"))
    for r in runs:
        steps = f"{r.steps if r.steps is not None else '-'}/{r.total_steps if r.total_steps is not None else '-'}"
        loss = (f"{r.last_loss:.4f} / {r.min_loss:.4f}" if r.last_loss is not None and r.min_loss is not None
                else "-")
        art = r.artifacts or {}
        bits = []
        if art.get("adapter"):
            bits.append("adapter")
        if art.get("model"):
            bits.append("model")
        if art.get("merged"):
            bits.append("merged")
        if art.get("checkpoints"):
            bits.append(f"ckpt x{len(art['checkpoints'])}")
        if art.get("loss_plot"):
            bits.append("plot")
        base = Path(r.base_model).name if r.base_model and os.sep in str(r.base_model) else (r.base_model or "-")
        style = _STATUS_STYLE.get(r.status, "")
        row = [r.id, f"[{style}]{r.status}[/]" if style else r.status, base, r.template or "-", steps, loss,
               " ".join(bits) or "-"]
        table.add_row(*row, *(["; ".join(r.problems)] if show_problems else []))
    console.print(table)
    done = [r for r in runs if r.status == "finished" and r.artifacts.get("adapter")]
    stopped = [r for r in runs if r.status == "interrupted" and r.artifacts.get("checkpoints")]
    if done:
        console.print(f"next: invoke infer {done[-1].id} --prompt \"Hello\"   "
                      f"(or invoke verify {done[-1].id} --data FILE)")
    if stopped:
        console.print(f"resume: invoke train --resume {stopped[-1].id}")
