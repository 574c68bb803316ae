"""One run folder: the files LLaMA-Factory and the kit leave in it, and the only code that reads them.

A run folder is what ``invoke train`` or the Web UI's Start button fills
(``finetune/outputs/llamafactory/<run_id>``, or ``saves/<model>/<type>/<dir>``, or any folder).
Every file name is a constant here; every rule about those files lives here once:

* checkpoint completeness: a ``checkpoint-N`` is complete when its ``trainer_state.json`` exists
  (the Trainer writes it last; a folder without it was cut off mid-save);
* status: ``finished`` / ``running`` / ``interrupted`` / ``failed`` (see :meth:`RunDir.status`);
* liveness: a recorded pid is alive when the process exists, is no zombie and started within
  :data:`PID_TIME_TOLERANCE_S` of the recorded start time (pids are reused);
* recorded arguments: ``training_args.yaml`` merged with the Web UI's ``llamaboard_config.yaml``
  (and the adapter's ``adapter_config.json`` for the base model), in that order of trust;
* the trainer log is read from its tail only (:data:`LOG_WINDOW` entries): the cost does not grow
  with the length of training.

API (for train, runs, inference, demo, the launcher and the board)::

    rd = RunDir(path)                     # any run folder
    rd = RunDir.of(layout, run_id)        # <outputs>/<run_id> (may not exist yet)
    rd = RunDir.create(layout, "name")    # a fresh run id + its empty folder, race-free
    rd.recorded()                         # RecordedArgs(base_model, template, finetuning_type, stage,
                                          #   dataset, dataset_dir, cutoff_len, quantization_bit)
    rd.state() / rd.update_state(**kv)    # finetune_run.json (locked read-modify-write)
    rd.log_tail(n)                        # the last n trainer_log.jsonl entries (dicts)
    rd.checkpoints()                      # [Checkpoint(step, path, complete)], oldest first
    rd.latest_checkpoint()                # newest *complete* checkpoint folder, or None
    rd.adapter() / rd.merged() / rd.evaluations() / rd.predictions()
    rd.status()                           # one of STATUSES
    rd.info()                             # RunInfo: all of it as one row; never raises
    rd.problems                           # what could not be read, one line each

    finetune.runs.discover(layout, newest_first=True)   # RunInfo of every run, newest first

Every read goes through :mod:`finetune.fileio` (size-capped, YAML without aliases) and only
regular files are opened (a FIFO or a folder in a file's place is a problem, not a hang).
Light: no torch / transformers / llamafactory.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.layout import Layout

# ---- file names (the only place they are spelled) --------------------------------------------------
TRAINING_ARGS = "training_args.yaml"  # what `llamafactory-cli train` reads (written by the page or us)
BOARD_CONFIG = "llamaboard_config.yaml"  # the page's element id -> value map ("Load arguments")
TRAINER_LOG = "trainer_log.jsonl"  # LLaMA-Factory's per-logging-step JSON lines
TRAINER_STATE = "trainer_state.json"  # HF Trainer state: top level at the end, in each checkpoint (last file)
TRAIN_RESULTS = "train_results.json"  # written after the final save: the run finished
RUN_STATE = "finetune_run.json"  # ours: pid, start time, how the trainer ended
RUNNING_LOG = "running_log.txt"  # what the Web UI shows (LLAMABOARD_ENABLED)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
LOSS_PLOT = "training_loss.png"
MERGED_DIR = "merged"  # `invoke merge` default output, inside the run folder
MERGE_RECORD = "finetune_merge.json"  # in a merged model: base, adapter, template, check
CHECKPOINT_PREFIX = "checkpoint-"
EVAL_PREFIX = "verify-"  # `invoke verify` reports: verify-<data name>.json
PREDICT_RESULTS = "all_results.json"  # in <run>/<name>/: the Web UI's Evaluate & Predict output
TRAIN_LOG = "train.log"  # the trainer child's output, in <logs>/<run_id>/
RUN_MARKERS = (TRAINING_ARGS, BOARD_CONFIG, TRAINER_LOG, ADAPTER_CONFIG, TRAINER_STATE, TRAIN_RESULTS, RUN_STATE,
               RUNNING_LOG)

STATUSES = ("finished", "running", "interrupted", "failed")
PID_TIME_TOLERANCE_S = 2.0  # recorded vs actual process start time (clock steps, boot-time rounding)
RECENT_S = 120.0  # where processes cannot be listed: a log this fresh means a live trainer
LOG_WINDOW = 20  # trainer-log entries read from the end (last step; last / min loss over these)
_ERROR_HINTS = ("Traceback (most recent call last)", "Error:", "error:", "Killed", "CUDA out of memory")
_ERROR_TAIL_BYTES = 20_000
# What a failed trainer's error line says about the cause (docs/guide 8.2, 8.3; invoke train and the Runs tab)
OOM_MARKERS = ("OutOfMemoryError", "out of memory", "not enough memory", "can't allocate memory")
DATA_MARKERS = ("DatasetGenerationError", "UnicodeDecodeError", "Cannot find valid samples", "ArrowInvalid",
                "JSONDecodeError")


def failure_kind(error: str) -> str | None:
    """``"oom"`` (the batch did not fit), ``"data"`` (the dataset did not load) or None, from an error line."""
    if any(m in error for m in OOM_MARKERS):
        return "oom"
    if any(m in error for m in DATA_MARKERS):
        return "data"
    return None


def weights_in(folder: Path, names: tuple[str, ...]) -> bool:
    return any((folder / n).is_file() for n in names)


def is_adapter_dir(folder: Path) -> bool:
    """A complete LoRA adapter: its config and its weights."""
    return (folder / ADAPTER_CONFIG).is_file() and weights_in(folder, ADAPTER_WEIGHTS)


def is_model_dir(folder: Path) -> bool:
    """A full Hugging Face model: config.json and weights (single or sharded)."""
    return (folder / MODEL_CONFIG).is_file() and (weights_in(folder, MODEL_WEIGHTS)
                                                  or any(folder.glob("model-*.safetensors")))


def is_run_dir(folder: Path) -> bool:
    try:
        return any((folder / m).exists() for m in RUN_MARKERS)
    except OSError:  # a folder we may not look into
        return False


def pid_alive(pid: Any, create_time: Any = None, tolerance: float = PID_TIME_TOLERANCE_S) -> bool:
    """``pid`` runs (not a zombie) and, when ``create_time`` is given, is the process started then."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        if isinstance(create_time, (int, float)) and abs(proc.create_time() - create_time) > tolerance:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return False


def process_create_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001
        return None


_LIVE: tuple[float, frozenset[Path] | None] | None = None
_PARSED: dict[tuple[str, int, int], tuple[dict[str, Any], str | None]] = {}  # see RunDir._read
_PARSED_MAX = 20_000
_PARSED_MAX_BYTES = 1 << 20  # a big trainer_state.json is parsed again rather than kept
LIVE_CACHE_S = 30.0  # how long one process listing serves (a listing refreshes it first: see runs.discover)


def live_trainer_args(max_age_s: float = LIVE_CACHE_S) -> frozenset[Path] | None:
    """``training_args.yaml`` files that a live ``llamafactory-cli train`` process was started with
    (how the Web UI starts trainers); a listing at most ``max_age_s`` old (0: list now). None when
    processes cannot be listed."""
    global _LIVE
    now = time.monotonic()
    if _LIVE is not None and now - _LIVE[0] <= max_age_s:
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
    _LIVE = (now, frozenset(found) if found is not None else None)
    return _LIVE[1]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    complete: bool  # trainer_state.json is there (the Trainer writes it last)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class RecordedArgs:
    """What a run was trained with: ``training_args.yaml`` first, then the page's
    ``llamaboard_config.yaml``, then the adapter's config (base model only)."""

    base_model: str | None = None
    template: str | None = None
    finetuning_type: str | None = None
    stage: str | None = None
    dataset: str | None = None  # comma list, as LLaMA-Factory takes it
    dataset_dir: str | None = None
    cutoff_len: int | None = None
    quantization_bit: int | None = None


@dataclass
class RunInfo:
    """One row of ``invoke runs`` (``--json`` prints :meth:`as_dict`; keys are only ever added)."""

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
    min_loss: float | None = None  # over the last LOG_WINDOW logged steps
    artifacts: dict[str, Any] = field(default_factory=dict)
    log: str | None = None
    started_at: str | None = None
    created_at: float | None = None  # when the run folder got its arguments (sorting: newest first)
    updated_at: float | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict's deep copy is slow
        out["artifacts"] = dict(self.artifacts)
        out["problems"] = list(self.problems)
        out["problem"] = "; ".join(self.problems) or None
        return out


class RunDir:
    """One run folder (see the module docstring). Reads are cached on the instance; what cannot be
    read becomes a line in :attr:`problems` and an empty value, never an exception."""

    def __init__(self, path: Path | str, run_id: str | None = None, source: str = "path"):
        self.path = Path(path)
        self.id = run_id or self.path.name
        self.source = source
        self.problems: list[str] = []
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- making one ----------------------------------------------------------------------------------
    @classmethod
    def of(cls, layout: Layout, run_id: str) -> RunDir:
        return cls(layout.run_dir(run_id), run_id, "outputs")

    @classmethod
    def create(cls, layout: Layout, name: str = "", run_id: str | None = None) -> RunDir:
        """A fresh run folder under the outputs (``run_id`` given: that one, which must be new or empty)."""
        layout.outputs_dir.mkdir(parents=True, exist_ok=True)
        if run_id:
            path = layout.run_dir(run_id)
            if path.exists() and any(path.iterdir()):
                raise UserError(f"run folder {path} already exists and is not empty", where=str(path),
                                fix=f"pick another --run-name, or continue it: invoke train --resume {run_id}")
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, run_id, "outputs")
        while True:
            rid = layout.new_run(name)
            try:
                layout.run_dir(rid).mkdir()
            except FileExistsError:  # another process took this id in the same second
                continue
            return cls(layout.run_dir(rid), rid, "outputs")

    # -- paths ---------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def training_args_path(self) -> Path:
        return self.path / TRAINING_ARGS

    @property
    def trainer_log_path(self) -> Path:
        return self.path / TRAINER_LOG

    def log_path(self, layout: Layout) -> Path:
        """Where ``invoke train`` sends the trainer's output for this run."""
        return layout.log_dir(self.id) / TRAIN_LOG

    # -- reading (bounded, never raising) ------------------------------------------------------------
    def entries(self) -> dict[str, os.DirEntry]:
        """The folder's entries, listed once (one ``scandir`` instead of a stat per question)."""
        if "entries" not in self._cache:
            try:
                with os.scandir(self.path) as it:
                    self._cache["entries"] = {e.name: e for e in it}
            except OSError:
                self._cache["entries"] = {}
        return self._cache["entries"]

    def has_file(self, name: str) -> bool:
        """``name`` is a regular file in the folder (a FIFO or a folder in its place is not)."""
        entry = self.entries().get(name)
        try:
            return entry is not None and entry.is_file()
        except OSError:
            return False

    def _mtime(self, name: str) -> float | None:
        entry = self.entries().get(name)
        try:
            return entry.stat().st_mtime if entry is not None else None
        except OSError:
            return None

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _read(self, name: str) -> dict[str, Any]:
        """A JSON / YAML mapping from the run folder; {} when absent or unreadable (with a problem).
        Parsed files are kept in a process-wide cache keyed by (path, mtime, size): a second listing
        (the Web UI polls) reads only what changed."""
        if name in self._cache:
            return self._cache[name]
        data, problem = self._parse(name)
        if problem:
            self._problem(problem)
        self._cache[name] = data
        return data

    def _parse(self, name: str) -> tuple[dict[str, Any], str | None]:
        if not self.has_file(name):
            return {}, (f"{name}: not a regular file" if name in self.entries() else None)
        path = self.path / name
        try:
            st = self.entries()[name].stat()
            key = (str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        if key is not None and key in _PARSED:
            data, problem = _PARSED[key]
            return dict(data), problem
        problem = None
        try:
            data = fileio.read_yaml(path, {}) if name.endswith((".yaml", ".yml")) else fileio.read_json(path, {})
        except UserError as err:
            line = err.where.rsplit(":", 1)[-1] if err.where.startswith(str(path) + ":") else ""
            data, problem = {}, f"{name}: {err.message}" + (f" (line {line})" if line.isdigit() else "")
        except (OSError, ValueError) as err:
            data, problem = {}, f"{name}: unreadable ({type(err).__name__}: {err})"[:200]
        if not isinstance(data, dict):
            data, problem = {}, f"{name}: not a mapping"
        if key is not None and key[2] <= _PARSED_MAX_BYTES:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.pop(next(iter(_PARSED)))
            _PARSED[key] = (data, problem)
        return dict(data), problem

    def training_args(self) -> dict[str, Any]:
        return self._read(TRAINING_ARGS)

    def board_config(self) -> dict[str, Any]:
        return self._read(BOARD_CONFIG)

    def state(self) -> dict[str, Any]:
        """``finetune_run.json``: what ``invoke train`` recorded about its trainer."""
        return self._read(RUN_STATE)

    def results(self) -> dict[str, Any]:
        return self._read(TRAIN_RESULTS)

    def is_finished(self) -> bool:
        return self.has_file(TRAIN_RESULTS)

    def recorded(self) -> RecordedArgs:
        """The one merge of training args, board config and adapter config."""
        if "recorded" in self._cache:
            return self._cache["recorded"]
        args = self.training_args()
        want = ("model_name_or_path", "template", "finetuning_type", "stage", "dataset", "dataset_dir", "cutoff_len")
        board = self.board_config() if any(not args.get(k) for k in want) else {}
        stage = args.get("stage")
        if not stage and board.get("train.training_stage"):
            from finetune.llama_factory.args import TRAINING_STAGES

            stage = TRAINING_STAGES.get(board["train.training_stage"])
        dataset = args.get("dataset")
        if not dataset and isinstance(board.get("train.dataset"), list):
            dataset = ",".join(str(d) for d in board["train.dataset"])
        base = args.get("model_name_or_path") or board.get("top.model_path")
        adapter_cfg = self._read(ADAPTER_CONFIG) if self.has_file(ADAPTER_CONFIG) else {}
        base = base or adapter_cfg.get("base_model_name_or_path")
        qbit = args.get("quantization_bit") or board.get("top.quantization_bit")
        rec = RecordedArgs(
            base_model=str(base) if base else None,
            template=_str(args.get("template") or board.get("top.template")),
            finetuning_type=_str(args.get("finetuning_type") or board.get("top.finetuning_type")
                                 or ("lora" if adapter_cfg else None)),
            stage=_str(stage),
            dataset=_str(dataset),
            dataset_dir=_str(args.get("dataset_dir") or board.get("train.dataset_dir")),
            cutoff_len=_int(args.get("cutoff_len") or board.get("train.cutoff_len")),
            quantization_bit=_int(qbit),
        )
        self._cache["recorded"] = rec
        return rec

    def log_tail(self, n: int = LOG_WINDOW) -> list[dict[str, Any]]:
        """The last ``n`` entries of ``trainer_log.jsonl`` (a half-written last line is skipped)."""
        key = f"log:{n}"
        if key in self._cache:
            return self._cache[key]
        out: list[dict[str, Any]] = []
        path = self.trainer_log_path
        try:
            lines = fileio.tail_lines(path, n) if self.has_file(TRAINER_LOG) else []
        except OSError as err:
            self._problem(f"{TRAINER_LOG}: unreadable ({err.strerror or err})")
            lines = []
        bad = 0
        for i, line in enumerate(lines):
            try:
                item = fileio.parse_json(line, TRAINER_LOG)
            except UserError:
                bad += i != len(lines) - 1  # a half-written last line is normal while training
                continue
            if isinstance(item, dict):
                out.append(item)
        if bad:
            self._problem(f"{TRAINER_LOG}: {bad} unreadable line(s)")
        self._cache[key] = out
        return out

    def progress(self) -> tuple[int | None, int | None, list[float]]:
        """(steps done, total steps, recent finite losses): from the log tail, else trainer_state.json,
        else the final train_loss."""
        logs = self.log_tail()
        last = logs[-1] if logs else {}
        steps, total = _int(last.get("current_steps")), _int(last.get("total_steps"))
        raw = [x.get("loss") for x in logs if "loss" in x]
        if not logs and self.has_file(TRAINER_STATE):
            tstate = self._read(TRAINER_STATE)
            steps, total = _int(tstate.get("global_step")), _int(tstate.get("max_steps"))
            history = tstate.get("log_history") if isinstance(tstate.get("log_history"), list) else []
            raw = [x.get("loss") for x in history[-LOG_WINDOW:] if isinstance(x, dict) and "loss" in x]
        bad = [x for x in raw if isinstance(x, float) and not math.isfinite(x)]
        if bad:
            self._problem(f"loss is {bad[-1]} in {len(bad)} logged step(s): training diverged "
                          "(lower --lr, or check the data)")
        losses = [float(x) for x in raw if _finite(x)]
        if not losses and _finite(self.results().get("train_loss")):
            losses = [float(self.results()["train_loss"])]  # fewer steps than logging_steps: the run's mean
        return steps, total, losses

    def checkpoints(self) -> list[Checkpoint]:
        """Every ``checkpoint-N`` folder, oldest first (``complete``: its trainer_state.json exists)."""
        found = []
        for name, entry in self.entries().items():
            tail = name[len(CHECKPOINT_PREFIX):]
            try:
                if name.startswith(CHECKPOINT_PREFIX) and tail.isdigit() and entry.is_dir():
                    child = self.path / name
                    found.append(Checkpoint(int(tail), child, (child / TRAINER_STATE).is_file()))
            except OSError:
                continue
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint(self) -> Path | None:
        """The newest *complete* checkpoint: the only kind a run can resume from."""
        complete = [c for c in self.checkpoints() if c.complete]
        return complete[-1].path if complete else None

    def adapter(self) -> Path | None:
        """The run folder when it holds a complete adapter (config and weights)."""
        complete = self.has_file(ADAPTER_CONFIG) and any(self.has_file(n) for n in ADAPTER_WEIGHTS)
        return self.path if complete else None

    def merged(self) -> Path | None:
        folder = self.path / MERGED_DIR
        return folder if MERGED_DIR in self.entries() and (folder / MODEL_CONFIG).is_file() else None

    def evaluations(self) -> list[Path]:
        """``invoke verify`` reports saved in the run folder."""
        return sorted(self.path / n for n in self.entries()
                      if n.startswith(EVAL_PREFIX) and n.endswith(".json") and self.has_file(n))

    def predictions(self) -> list[Path]:
        """Evaluate & Predict outputs kept in the run folder (``<run>/<name>/all_results.json``)."""
        found = []
        for name, entry in self.entries().items():
            if name.startswith(CHECKPOINT_PREFIX) or name == MERGED_DIR:
                continue
            try:
                if entry.is_dir() and (self.path / name / PREDICT_RESULTS).is_file():
                    found.append(self.path / name)
            except OSError:
                continue
        return sorted(found)

    def artifacts(self) -> dict[str, Any]:
        ft = self.recorded().finetuning_type
        if self.has_file(ADAPTER_CONFIG) and not self.adapter():
            self._problem(f"{ADAPTER_CONFIG} without adapter weights ({ADAPTER_WEIGHTS[0]})")
        adapter, merged = self.adapter(), self.merged()
        return {
            "adapter": str(adapter) if adapter else None,
            "merged": str(merged) if merged else None,
            "checkpoints": [c.name for c in self.checkpoints()],
            "loss_plot": str(self.path / LOSS_PLOT) if self.has_file(LOSS_PLOT) else None,
            "model": str(self.path) if self.has_file(MODEL_CONFIG) and ft in ("full", "freeze") else None,
            "evaluations": [str(p) for p in self.evaluations()],
            "predictions": [str(p) for p in self.predictions()],
        }

    def log_files(self) -> list[Path]:
        """The trainer child's output (recorded in finetune_run.json) and the Web UI's running log."""
        state = self.state()
        out = [Path(state["log"])] if isinstance(state.get("log"), str) else []
        return [*out, self.path / RUNNING_LOG] if RUNNING_LOG in self.entries() else out

    def updated_at(self) -> float | None:
        """When the trainer last wrote a log."""
        times = [t for t in (self._mtime(TRAINER_LOG), self._mtime(RUNNING_LOG)) if t is not None]
        for p in self.log_files()[:1]:
            try:
                times.append(p.stat().st_mtime)
            except OSError:
                continue
        return max(times) if times else None

    def created_at(self) -> float | None:
        """When the run got its arguments (the folder's own time when it has none)."""
        for name in (TRAINING_ARGS, BOARD_CONFIG):
            if (t := self._mtime(name)) is not None:
                return t
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def error_in_logs(self) -> str | None:
        """The last error-looking line of the logs' tails (Traceback, ...Error:, Killed, CUDA OOM)."""
        for path in self.log_files():
            try:
                if not path.is_file():
                    continue
                lines = fileio.tail_lines(path, 400, max_bytes=_ERROR_TAIL_BYTES)
            except OSError:
                continue
            for line in reversed(lines):
                s = line.strip()
                if any(h in s for h in _ERROR_HINTS) and "warning" not in s.lower():
                    return s[:200]
        return None

    def status(self) -> str:
        """``finished``: train_results.json is there (written after the final save).
        ``running``: the trainer recorded in finetune_run.json is alive, or a live
        ``llamafactory-cli train <this>/training_args.yaml`` exists (how the Web UI starts trainers);
        where processes cannot be listed, a log written in the last RECENT_S seconds.
        ``interrupted``: recorded as stopped (Ctrl-C), or the trainer is gone after logging steps
        without an error in its log. ``failed``: otherwise (non-zero exit, error, no step)."""
        if self.is_finished():
            return "finished"
        state = self.state()
        recorded = state.get("status")
        if "pid" in state and recorded == "running" and pid_alive(state.get("pid"), state.get("pid_create_time")):
            return "running"
        live = live_trainer_args()
        if live and self.training_args_path.resolve() in live:
            return "running"
        updated = self.updated_at()
        if live is None and "pid" not in state and updated is not None and time.time() - updated < RECENT_S \
                and not self.error_in_logs():
            return "running"
        if recorded in ("failed", "interrupted"):
            return recorded
        if self.error_in_logs():
            return "failed"
        steps = self.progress()[0]
        return "interrupted" if steps else "failed"

    def info(self) -> RunInfo:
        """Everything known about this run as one row; a bad folder gives a row with problems."""
        try:
            return self._info()
        except Exception as err:  # noqa: BLE001 - a folder must never crash a listing
            return RunInfo(id=self.id, path=str(self.path), status="failed", source=self.source,
                           problems=[*self.problems, f"could not read the folder: {type(err).__name__}: {err}"])

    def _info(self) -> RunInfo:
        rec = self.recorded()
        if not self.training_args() and TRAINING_ARGS not in self.entries():
            self._problem(f"no {TRAINING_ARGS} (not started by the Web UI or `invoke train`, or cleaned up)")
        steps, total, losses = self.progress()
        state = self.state()
        log = state.get("log") if isinstance(state.get("log"), str) else None
        if log is None and self.has_file(RUNNING_LOG):
            log = str(self.path / RUNNING_LOG)
        artifacts = self.artifacts()
        status = self.status()
        return RunInfo(
            id=self.id, path=str(self.path), status=status, source=self.source, stage=rec.stage,
            finetuning_type=rec.finetuning_type, base_model=rec.base_model, template=rec.template,
            dataset=rec.dataset, steps=steps, total_steps=total, last_loss=losses[-1] if losses else None,
            min_loss=min(losses) if losses else None, artifacts=artifacts, log=log,
            started_at=_str(state.get("started_at")), created_at=self.created_at(), updated_at=self.updated_at(),
            problems=list(self.problems),
        )

    # -- writing -------------------------------------------------------------------------------------
    def update_state(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into ``finetune_run.json`` (locked, atomic)."""
        self._cache.pop(RUN_STATE, None)

        def merge(current: Any) -> dict[str, Any]:
            return {**(current if isinstance(current, dict) else {}), **values}

        try:
            return fileio.update_json(self.path / RUN_STATE, merge, default={})
        except UserError:  # a broken state file is replaced, not kept
            fileio.atomic_write_text(self.path / RUN_STATE, fileio.dumps_json(values, indent=2) + "\n")
            return dict(values)

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        fileio.atomic_write_text(path, text)
        return path


def _str(x: Any) -> str | None:
    return str(x) if x not in (None, "") else None


def _int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        return int(x)
    if isinstance(x, str) and x.strip().isdigit():
        return int(x.strip())
    return None
