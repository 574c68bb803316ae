"""``invoke demo``: raw data to a verified fine-tuned answer, every stage timed.

doctor (fast) -> tiny base model (or ``--model``) -> convert the raw sample -> check -> register
-> Web UI pre-filled (URL printed) -> train (headless with the UI's arguments, or ``interactive``:
the user presses Start) -> discover the run -> verify before / after -> answers side by side ->
stop the UI -> summary with paths, numbers and the next commands.

A failure stops at its stage with that stage's fix. Light at import; stages import what they need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.layout import Layout
from finetune.rundir import MODEL_CONFIG

DEMO_DATASET = "demo_facts"
RAW_FACTS = Path("dataset", "raw", "demo_facts.json")
RAW_BACKGROUND = Path("dataset", "raw", "demo_background.jsonl")
DEMO_MODEL_NAME = "tiny-qwen2-demo"
# The tiny base's language pass and the LoRA run: tuned so the facts are learnt in ~1 minute on 2 cores.
PRETRAIN_STEPS = 600
DEMO_LAYERS = 4
TRAIN = dict(epochs=200.0, lr=1e-2, batch_size=8, cutoff=128, lora_rank=16, save_steps=100000)
GOAL_EXACT = 0.8


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    status: str = "pending"
    detail: str = ""


@dataclass
class DemoResult:
    stages: list[Stage] = field(default_factory=list)
    run_id: str = ""
    run_dir: str = ""
    model: str = ""
    url: str = ""
    base_exact: float | None = None
    tuned_exact: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_dir": self.run_dir, "model": self.model, "url": self.url,
                "base_exact_match": self.base_exact, "tuned_exact_match": self.tuned_exact,
                "goal_exact_match": GOAL_EXACT,
                "total_seconds": round(sum(s.seconds for s in self.stages), 2),
                "stages": [s.__dict__ for s in self.stages], "examples": self.examples}


def demo_model(layout: Layout, fresh: bool = False) -> Path:
    """The tiny base, made once and cached: it knows the demo's language, not its facts."""
    from finetune.models.tiny import make_tiny_model

    out = layout.models_dir / DEMO_MODEL_NAME
    if not fresh and _tiny_meta(out).get("pretrain_steps") == PRETRAIN_STEPS \
            and _tiny_meta(out).get("layers") == DEMO_LAYERS:
        return out
    return make_tiny_model(out, layers=DEMO_LAYERS, pretrain_on=[layout.root / RAW_BACKGROUND],
                           pretrain_steps=PRETRAIN_STEPS)


def _tiny_meta(model_dir: Path) -> dict[str, Any]:
    """What ``make_tiny_model`` recorded about a tiny model ({} when absent or unreadable)."""
    try:
        meta = fileio.read_json(model_dir / "tiny_model.json", {})
    except (UserError, OSError):
        return {}
    return meta if isinstance(meta, dict) else {}


class Demo:
    """The chain, one method a stage; ``run`` times them and stops at the first failure."""

    def __init__(self, layout: Layout, model: str | None = None, template: str = "qwen", webui: bool = True,
                 interactive: bool = False, port: int = 7860, fresh_model: bool = False,
                 console=None, progress: bool = True):
        from rich.console import Console

        self.layout, self.model_arg, self.template = layout, model, template
        self.webui, self.interactive, self.port, self.fresh_model = webui, interactive, port, fresh_model
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.result = DemoResult()
        self.handle = None
        self.spec = None
        self.data_file: Path | None = None

    # -- stages ----------------------------------------------------------------------------------
    def doctor(self) -> str:
        from finetune.env import doctor as doc

        checks = doc.run_doctor(self.layout, fast=True, port=self.port)
        fails = [c for c in checks if c.status == doc.FAIL]
        if fails:
            raise UserError("; ".join(f"{c.name}: {c.detail}" for c in fails), fix=fails[0].fix or "invoke doctor")
        return f"{len(checks)} checks, {sum(c.status == doc.WARN for c in checks)} warnings"

    def base_model(self) -> str:
        if self.model_arg:
            path = Path(self.model_arg).expanduser()
            if not (path / MODEL_CONFIG).is_file():
                raise UserError(f"--model {self.model_arg} is not a model folder (no {MODEL_CONFIG})",
                                where=str(path), fix="pass a local Hugging Face model folder: invoke demo --model PATH")
            self.result.model = str(path)
            return f"your model {path}"
        path = demo_model(self.layout, fresh=self.fresh_model)
        self.result.model = str(path)
        return f"tiny Qwen2 ({_tiny_meta(path).get('parameters', 0):,} parameters) at {path}"

    def convert(self) -> str:
        from finetune.data.convert import convert_file

        # the demo's own derived file: a changed raw sample replaces it (invoke demo has no --force to pass)
        res = convert_file(self.layout.root / RAW_FACTS, self.layout, fmt="alpaca", name=DEMO_DATASET, force=True)
        self.data_file = Path(res.out_path)
        if res.rejected:
            raise UserError(f"{res.rejected} raw records could not be converted", where=str(res.rejects_path),
                            fix=f"see {res.rejects_path}, or rewrite the sample: python tools/make_demo_data.py")
        return f"{res.written} conversations -> {res.out_path}"

    def check(self) -> str:
        from finetune.data.check import check_files

        report = check_files([self.data_file])
        if report.has_errors:
            first = next(p for f in report.files for p in f.problems if p.severity == "error")
            raise UserError(f"{first.code}: {first.message}", where=f"{self.data_file}:{first.line}",
                            fix=f"invoke data.check {self.data_file}")
        f = report.files[0]
        return f"{f.records} records, {f.valid} valid, no errors"

    def register(self) -> str:
        from finetune.data.register import register_files

        entries = register_files(self.layout, [self.data_file], names=[DEMO_DATASET])
        return f"'{DEMO_DATASET}' in {self.layout.dataset_info}" + ("" if entries else " (already registered)")

    def _spec(self):
        from finetune.llama_factory.train import spec_from_flags

        if self.spec is None:
            self.spec = spec_from_flags(self.layout, self.result.model, self.template, DEMO_DATASET,
                                        **TRAIN, logging_steps=10,
                                        gradient_accumulation_steps=1, lr_scheduler_type="cosine")
        return self.spec

    def start_webui(self) -> str:
        from finetune.llama_factory import launcher

        self.result.run_id = self.layout.new_run("demo")
        self.handle = launcher.start(self.layout, port=self.port, model=self.result.model, template=self.template,
                                     run_id=self.result.run_id, board_args=self._spec().to_board_config(),
                                     say=lambda msg: self.console.print(f"  {msg}"))
        self.result.url = self.handle.url
        return f"{self.handle.url} (pid {self.handle.pid}, log {self.handle.log_path})"

    def train(self) -> str:
        if self.interactive and self.handle:
            return self._follow_ui_run()
        from finetune.llama_factory.train import train

        res = train(self.layout, self._spec(), run_id=self.result.run_id or None, progress=self.progress,
                    name="demo")
        self.result.run_id, self.result.run_dir = res.run_id, str(res.run_dir)
        return f"run {res.run_id}"

    def _follow_ui_run(self) -> str:
        from finetune.runs import run_dirs

        self.console.print(f"  open {self.handle.url}, press [bold]Load arguments[/] then [bold]Start[/]; "
                           "waiting for a run to finish (Ctrl-C to give up)")
        started = time.time()
        while True:
            fresh = [rd.info() for rd in run_dirs(self.layout) if (rd.updated_at() or 0) >= started]
            done = [r for r in fresh if r.status in ("finished", "failed")]
            if done:
                run = done[0]
                if run.status == "failed":
                    raise UserError(f"the run started from the Web UI failed: {run.path}",
                                    fix=f"read {self.handle.log_path}, then invoke runs")
                self.result.run_id, self.result.run_dir = run.id, run.path
                return f"run {run.id} (started in the browser)"
            time.sleep(2)

    def discover(self) -> str:
        from finetune.runs import find_run

        run = find_run(self.layout, self.result.run_id)
        if run is None or run.status != "finished":
            raise UserError(f"run {self.result.run_id} is {'missing' if run is None else run.status}",
                            where=str(self.layout.run_dir(self.result.run_id)), fix="invoke runs")
        self.result.run_dir = run.path
        return f"{run.status}: {run.steps}/{run.total_steps} steps, last loss {run.last_loss}"

    def verify(self) -> str:
        from finetune.inference.verify import verify

        report = verify(self.layout, self.result.run_id, self.data_file, max_new_tokens=48)
        self.result.verify = report
        self.result.base_exact = report["base"]["exact_match"]
        self.result.tuned_exact = report["tuned"]["exact_match"]
        self.result.examples = report["examples"]
        return (f"exact match base {self.result.base_exact:.0%} -> fine-tuned {self.result.tuned_exact:.0%}; "
                f"loss {report['base']['loss']:.3f} -> {report['tuned']['loss']:.3f}")

    def stop_webui(self) -> str:
        if self.handle is None:
            return "not started"
        self.handle.stop()
        self.handle = None
        return "stopped (no process left)"

    # -- the chain -------------------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], str]]]:
        chain = [("doctor", self.doctor), ("base model", self.base_model), ("convert", self.convert),
                 ("check", self.check), ("register", self.register)]
        if self.webui:
            chain.append(("web ui", self.start_webui))
        chain += [("train", self.train), ("discover", self.discover), ("verify", self.verify)]
        if self.webui:
            chain.append(("stop web ui", self.stop_webui))
        return chain

    def run(self) -> DemoResult:
        try:
            for name, fn in self.stages():
                stage = Stage(name)
                self.result.stages.append(stage)
                start = time.perf_counter()
                try:
                    if name == "train":  # it has its own progress bar
                        stage.detail = fn()
                    else:
                        with self.console.status(f"[bold]{name}[/] ..."):
                            stage.detail = fn()
                except UserError as err:
                    stage.status, stage.seconds = "failed", time.perf_counter() - start
                    err.message = f"demo stopped at stage '{name}': {err.message}"
                    raise
                stage.status, stage.seconds = "ok", time.perf_counter() - start
                self.console.print(f"[green]✓[/] {name:<12} {stage.seconds:6.1f} s  {stage.detail}")
        finally:
            if self.handle is not None:
                self.handle.stop()
        return self.result


def render_summary(result: DemoResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Answers on the trained questions (greedy)")
    for col in ("question", "reference", "base", "fine-tuned"):
        table.add_column(col, overflow="fold")
    for ex in result.examples:
        table.add_row(ex["prompt"], ex["reference"], ex["base"], ex["tuned"])
    console.print(table)
    total = sum(s.seconds for s in result.stages)
    console.print(f"exact match: base [bold]{result.base_exact:.0%}[/] -> fine-tuned [bold]{result.tuned_exact:.0%}[/]"
                  f" (goal >= {GOAL_EXACT:.0%}); total {total:.0f} s")
    console.print(f"run folder: {result.run_dir}\nbase model: {result.model}")
    console.print("next:\n"
                  f"  invoke runs\n"
                  f"  invoke infer {result.run_id} --prompt \"{result.examples[0]['prompt'] if result.examples else 'Hi'}\"\n"
                  f"  invoke merge {result.run_id}\n"
                  f"  invoke webui --model {result.model} --template qwen")
