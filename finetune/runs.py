"""Run discovery: every training run on disk, as rows (``invoke runs``).

Looks under the kit's outputs folder (``finetune/outputs/llamafactory/<run_id>``, and
``<model>/<type>/<dir>`` below it when the Web UI's Start was pressed without "Load arguments"),
under LLaMA-Factory's default ``saves/`` tree (in the project root, the Web UI state folder and the
current folder) and under any path given.

What one folder means (file names, status, checkpoints, recorded arguments) is
:class:`finetune.rundir.RunDir`; this module only finds folders and prints rows:

* :func:`run_dirs` -- the folders (cheap: no file is read), :func:`discover` -- their
  :class:`~finetune.rundir.RunInfo` rows (``newest_first=True`` for the Web UI),
  :func:`find_run` -- one run by id, :func:`nearest_runs` -- ids for "did you mean".
* :func:`as_json` -- strict JSON (``{"runs": [...]}``, NaN / Infinity as null);
  :func:`render` -- a table that stays readable at 80 columns.

Each row reads only what it needs (the trainer log's tail, capped YAML / JSON without aliases):
listing cost does not grow with log length, and a hostile or unreadable folder is a row with
``problems``, never a crash or a hang. Light module: no torch / transformers / llamafactory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from finetune import fileio
from finetune.errors import UserError
from finetune.layout import Layout
from finetune.rundir import STATUSES, RunDir, RunInfo, is_run_dir, live_trainer_args

__all__ = ["STATUSES", "RunDir", "RunInfo", "as_json", "discover", "find_run", "nearest_runs", "read_run", "render",
           "run_dirs", "saves_roots", "short_model", "sort_newest_first", "artifacts_summary"]


def read_run(folder: Path, run_id: str | None = None, source: str = "path") -> RunInfo:
    """Everything known about one run folder; never raises for a bad folder."""
    return RunDir(folder, run_id, source).info()


# ---- finding run folders --------------------------------------------------------------------------
def _walk_runs(top: Path, max_depth: int) -> Iterable[Path]:
    """Run folders at or below ``top`` (a run folder's own checkpoint-N / merged are not runs)."""
    try:
        if not top.is_dir():
            return
    except OSError:
        return
    if is_run_dir(top):
        yield top
        return
    if max_depth <= 0:
        return
    try:
        children = sorted(p for p in top.iterdir() if not p.name.startswith(".") and p.is_dir())
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


def run_dirs(layout: Layout, paths: Sequence[str | Path] = ()) -> list[RunDir]:
    """Every run folder (nothing read yet): ``paths``, the kit's outputs, LLaMA-Factory's ``saves/``."""
    found: list[RunDir] = []
    seen: set[Path] = set()

    def add(folder: Path, run_id: str, source: str) -> None:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            found.append(RunDir(folder, run_id, source))

    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UserError(f"no such folder: {path}", where="invoke runs PATH",
                            fix="pass a run folder or a folder that holds runs (or no path for the defaults)")
        top = path.resolve()
        for folder in _walk_runs(top, 4):
            add(folder, folder.relative_to(top).as_posix() if folder != top else folder.name, "path")
    # <run_id>, or <model name>/<finetuning type>/<output dir> when the Web UI's Start was pressed
    # without "Load arguments" (its save dir is our outputs folder then)
    for folder in _walk_runs(layout.outputs_dir, 3):
        add(folder, folder.relative_to(layout.outputs_dir).as_posix(), "outputs")
    for root in saves_roots(layout):
        for folder in _walk_runs(root, 3):
            add(folder, "saves/" + folder.relative_to(root).as_posix(), "saves")
    return found


def sort_newest_first(runs: Iterable[RunInfo]) -> list[RunInfo]:
    """Rows ordered by when their run folder got its arguments, newest first."""
    return sorted(runs, key=lambda r: (r.created_at or 0.0, r.id), reverse=True)


def discover(layout: Layout, paths: Sequence[str | Path] = (), newest_first: bool = False) -> list[RunInfo]:
    """Every run as a :class:`RunInfo` (the order found, or the newest first)."""
    dirs = run_dirs(layout, paths)
    live_trainer_args(max_age_s=0)  # one fresh process listing serves every row
    rows = [rd.info() for rd in dirs]
    return sort_newest_first(rows) if newest_first else rows


def find_run(layout: Layout, ref: str) -> RunInfo | None:
    """The run with this id (or the one id ending with ``ref``, or folder name ``ref``)."""
    dirs = run_dirs(layout)
    exact = [rd for rd in dirs if rd.id == ref]
    matches = exact or [rd for rd in dirs if rd.id.endswith(ref) or rd.path.name == ref]
    return matches[0].info() if len(matches) == 1 else None


def nearest_runs(layout: Layout, ref: str = "", n: int = 5) -> list[str]:
    import difflib

    try:
        ids = [rd.id for rd in run_dirs(layout)]
    except UserError:
        return []
    if not ref:
        return ids[-n:]
    return difflib.get_close_matches(ref, ids, n=n, cutoff=0.3) or ids[-n:]


# ---- output ---------------------------------------------------------------------------------------
def as_json(runs: Sequence[RunInfo]) -> str:
    """Strict JSON: ``{"runs": [{id, path, status, base_model, template, steps, total_steps, last_loss,
    artifacts: {adapter, merged, checkpoints, evaluations, predictions, ...}, problems, problem, ...}]}``."""
    return fileio.dumps_json({"runs": [r.as_dict() for r in runs]})


_STATUS_STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def short_model(name: str | None) -> str:
    """The last part of a model path or hub id (``/models/Qwen2.5-1.5B`` -> ``Qwen2.5-1.5B``)."""
    if not name:
        return "-"
    return name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or name


def artifacts_summary(art: dict) -> str:
    """The artifacts of a row in a few words: adapter, model, merged, ckpt×N, eval×N, pred×N."""
    bits = []
    if art.get("adapter"):
        bits.append("adapter")
    if art.get("model"):
        bits.append("model")
    if art.get("merged"):
        bits.append("merged")
    if art.get("checkpoints"):
        bits.append(f"ckpt\u00d7{len(art['checkpoints'])}")
    if art.get("evaluations"):
        bits.append(f"eval\u00d7{len(art['evaluations'])}")
    if art.get("predictions"):
        bits.append(f"pred\u00d7{len(art['predictions'])}")
    return " ".join(bits) or "-"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _table(runs: Sequence[RunInfo], wide: bool):
    from rich import box
    from rich.table import Table

    table = Table(title="runs", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    if wide:
        for col in ("id", "status", "model", "template", "steps", "loss"):
            table.add_column(col, no_wrap=True, justify="right" if col in ("steps", "loss") else "left")
    else:
        table.add_column("run  /  model \u00b7 template", no_wrap=True)
        table.add_column("status  /  steps \u00b7 loss", no_wrap=True)
    table.add_column("artifacts", min_width=7)
    for r in runs:
        steps = f"{r.steps if r.steps is not None else '-'}/{r.total_steps if r.total_steps is not None else '-'}"
        loss = f"{r.last_loss:.4f}" if r.last_loss is not None else "-"
        style = _STATUS_STYLE.get(r.status, "")
        status = f"[{style}]{r.status}[/]" if style else r.status
        model = _clip(short_model(r.base_model), 28)
        if wide:
            table.add_row(r.id, status, model, r.template or "-", steps, loss, artifacts_summary(r.artifacts or {}))
        else:
            table.add_row(f"{r.id}\n{model} \u00b7 {r.template or '-'}", f"{status}\n{steps} \u00b7 {loss}",
                          artifacts_summary(r.artifacts or {}))
    return table


def render(runs: Sequence[RunInfo], console=None) -> None:
    """The runs table: one line a run when it fits the terminal, else two (fits 80 columns); model
    names shortened, ids never broken, cells wrap between words only."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    if not runs:
        console.print("no runs yet. Start one: invoke train --model PATH --template NAME --dataset NAME "
                      "(or invoke webui)")
        return
    table = _table(runs, wide=True)
    if Measurement.get(console, console.options.update_width(10_000), table).maximum > console.width:
        table = _table(runs, wide=False)
    console.print(table)
    for r in runs:
        if r.problems:
            console.print(f"[yellow]![/] {r.id}: {'; '.join(r.problems)}", overflow="fold")
    done = [r for r in runs if r.status == "finished" and r.artifacts.get("adapter")]
    stopped = [r for r in runs if r.status == "interrupted" and r.artifacts.get("checkpoints")]
    if done:
        console.print(f"next: invoke infer {done[-1].id} --prompt \"Hello\"   "
                      f"(or invoke verify {done[-1].id} --data FILE)")
    if stopped:
        console.print(f"resume: invoke train --resume {stopped[-1].id}")
