"""Guarded patches of LlamaBoard (LLaMA-Factory's Web UI) internals, applied in the UI child.

Each :class:`Patch` names the internals it touches (``module:attribute(parameters)``); it is
applied only when the installed LLaMA-Factory is in :data:`board.INTERNALS_VERIFIED`, every named
internal exists with those parameters, and ``FINETUNE_WEBUI_NO_PATCH`` is not set. Otherwise it is
skipped, the UI log says so and what to do instead (its ``fallback``), and the page is LlamaBoard's
own. ``tests/smoke/test_webui_launcher.py`` checks every target on the pinned version, so an
upgrade that moves one fails there first.

=================  ======================================================================================
patch              what it changes
=================  ======================================================================================
defaults           Data dir / save dir / the Custom model's template point at our layout before the
                   components copy them
ready_on_open      the page opens with the argument set the launcher wrote (model, template, Data dir,
                   datasets, compute type, a fresh run id as Output dir, hyper-parameters)
new_run_per_start  every Start trains in a new run id (an interrupted run is continued only when picked
                   from the Output dir list, labelled "continue"); the Output dir list shows those runs
workers            ``preprocessing_num_workers`` follows the machine's cores (train and evaluate)
checkpoints        Checkpoint path lists our runs of the selected model (newest first, + checkpoint-N)
export_dir         Export dir defaults to ``<run>/merged``; a bare name goes inside the run folder
eval_dir           Evaluate & Predict's bare output dir (LlamaBoard's ``eval_<time>``) goes inside the
                   chosen run folder
config_paths       Config path hides argument sets of earlier launches that never trained
trainer_guard      trainers run under ``python -m finetune.proc guard``: stopped when the UI dies; their
                   stderr is kept in ``<logs>/<run_id>/train.log`` (``<name>.eval.log`` for an evaluation)
runs_tab           a Runs tab after Export: table, loss curves, Verify
=================  ======================================================================================
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.layout import Layout
from finetune.llama_factory import board, runs_tab

MARK = "**finetune**"
_START_RE = re.compile(rf"^{re.escape(MARK)}: run `[^`]+` in `([^`]+)`")
_OLD_SET_RE = re.compile(r"^(\d{8}-\d{6}(?:-[\w.-]+)?)(?:-throughput)?\.yaml$")


@dataclass(frozen=True)
class Patch:
    name: str
    targets: tuple[str, ...]  # "module:Attr.attr(param,param)"
    what: str
    fallback: str


PATCHES: tuple[Patch, ...] = (
    Patch("defaults", ("llamafactory.webui.common:DEFAULT_DATA_DIR", "llamafactory.webui.common:DEFAULT_SAVE_DIR",
                       "llamafactory.extras.constants:DEFAULT_TEMPLATE"),
          "Data dir, save dir and the Custom model's template point at our layout",
          "type dataset/llamafactory into Data dir, or pick Config path finetune-defaults.yaml and press Load arguments"),
    Patch("ready_on_open", ("llamafactory.webui.engine:Engine.resume(self)",
                            "llamafactory.webui.manager:Manager.get_elem_by_id(self,elem_id)"),
          "the Train tab is filled when the page opens",
          "pick Config path finetune-defaults.yaml and press Load arguments before Start"),
    Patch("new_run_per_start", ("llamafactory.webui.runner:Runner.run_train(self,data)",
                                "llamafactory.webui.runner:Runner.running",
                                "llamafactory.webui.interface:create_train_tab(engine)",
                                "llamafactory.webui.components.train:list_output_dirs(model_name,finetuning_type,current_time)",
                                "llamafactory.webui.common:get_model_path(model_name)"),
          "every Start is a new run id; an interrupted run is continued only when picked",
          "before each Start, pick Config path finetune-defaults.yaml, press Load arguments, and check that Output "
          "dir is a run id that does not exist yet (invoke runs)"),
    Patch("workers", ("llamafactory.webui.runner:Runner._parse_train_args(self,data)",
                      "llamafactory.webui.runner:Runner._parse_eval_args(self,data)"),
          "preprocessing workers follow the machine's cores",
          'put {"preprocessing_num_workers": 2} into Extra arguments'),
    Patch("checkpoints", ("llamafactory.webui.control:list_checkpoints(model_name,finetuning_type)",
                          "llamafactory.webui.components.top:list_checkpoints",
                          "llamafactory.webui.components.train:list_checkpoints",
                          "llamafactory.webui.common:get_model_path(model_name)"),
          "Checkpoint path lists our runs of the selected model",
          "type the run folder's absolute path into Checkpoint path (invoke runs shows it)"),
    Patch("export_dir", ("llamafactory.webui.components.export:save_model(lang,model_name,model_path,finetuning_type,"
                         "checkpoint_path,template,export_size,export_quantization_bit,export_quantization_dataset,"
                         "export_device,export_legacy_format,export_dir,export_hub_model_id,extra_args)",
                         "llamafactory.webui.interface:create_export_tab(engine)"),
          "Export dir defaults to <run>/merged",
          "type <run folder>/merged into Export dir (or use invoke merge RUN_ID)"),
    Patch("eval_dir", ("llamafactory.webui.runner:Runner.run_eval(self,data)",),
          "Evaluate & Predict writes inside the chosen run folder",
          "type <run folder>/eval into Output dir of Evaluate & Predict"),
    Patch("config_paths", ("llamafactory.webui.components.train:list_config_paths(current_time)",),
          "Config path hides argument sets of launches that never trained",
          "ignore the older YYYYMMDD-HHMMSS.yaml entries in Config path"),
    Patch("trainer_guard", ("llamafactory.webui.runner:Popen",),
          "trainers stop when the Web UI process dies",
          "after a crash of the UI, stop leftover trainers: invoke webui --stop, or invoke runs and kill the PID"),
    Patch("runs_tab", ("llamafactory.webui.interface:create_footer()", "gradio:Timer", "gradio:LinePlot",
                       "gradio:Dataframe"),
          "a Runs tab (table, loss curves, Verify)",
          "use invoke runs and invoke verify RUN_ID FILE in a terminal"),
)


# ---- checking the targets -----------------------------------------------------------------------
def _resolve(target: str) -> tuple[Any, str | None]:
    """The object a target names and a problem ('' when fine)."""
    mod_name, _, rest = target.partition(":")
    params = None
    if rest.endswith(")") and "(" in rest:
        rest, _, plist = rest[:-1].partition("(")
        params = [p for p in plist.split(",") if p]
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as err:  # noqa: BLE001 - any import failure means the target moved
        return None, f"cannot import {mod_name}: {type(err).__name__}: {err}"
    for part in rest.split("."):
        if part == "running" and isinstance(obj, type):  # an instance attribute set in __init__
            src = inspect.getsource(obj.__init__)
            if "self.running" not in src:
                return None, f"{target}: no self.running in {obj.__name__}.__init__"
            return obj, ""
        if not hasattr(obj, part):
            return None, f"{mod_name} has no {rest}"
        obj = getattr(obj, part)
    if params is not None:
        try:
            got = list(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            return obj, f"{target}: no signature"
        if got != params:
            return obj, f"{mod_name}:{rest} takes ({', '.join(got)}), verified with ({', '.join(params)})"
    return obj, ""


def check(patch: Patch) -> list[str]:
    """Problems with a patch's targets on the installed version ([] when it can be applied)."""
    return [p for p in (_resolve(t)[1] for t in patch.targets) if p]


def check_all() -> dict[str, list[str]]:
    return {p.name: check(p) for p in PATCHES}


# ---- the context the patched functions use ------------------------------------------------------
class BoardContext:
    """What the patched page knows: the layout and the argument set the page opens with."""

    def __init__(self, layout: Layout, defaults_path: Path | None, log: Callable[[str], None] | None = None):
        self.layout = layout
        self.defaults_path = defaults_path
        self.log = log or (lambda msg: print(f"[finetune] {msg}", flush=True))
        self._defaults: tuple[float, dict] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BoardContext:
        raw = env.get(board.ENV_LAYOUT)
        if raw:
            folders = json.loads(raw)
            layout = Layout(**{k: Path(v) for k, v in folders.items()})
        else:
            layout = Layout.from_env()
        defaults = env.get(board.ENV_DEFAULTS)
        return cls(layout, Path(defaults) if defaults else None)

    def defaults(self) -> dict[str, Any]:
        if self.defaults_path is None:
            return {}
        try:
            mtime = self.defaults_path.stat().st_mtime
        except OSError:
            return {}
        if self._defaults is None or self._defaults[0] != mtime:
            from finetune.fileio import read_yaml

            data = read_yaml(self.defaults_path, default={})
            self._defaults = (mtime, data if isinstance(data, dict) else {})
        return dict(self._defaults[1])

    def fresh_output_dir(self) -> str:
        return board.run_output_dir(self.layout.outputs_dir, self.layout.new_run())


_CTX: BoardContext | None = None


def _ctx() -> BoardContext:
    assert _CTX is not None, "board_patches.apply_all() was not called"
    return _CTX


# ---- the patches ------------------------------------------------------------------------------------
# Fields always sent when the page opens; other fields only when they differ from the page's default.
_ALWAYS = ("top.model_path", "top.template", "train.dataset_dir", "train.dataset", "train.output_dir",
           "train.compute_type")


def open_values(ctx: BoardContext) -> dict[str, Any]:
    """Element id -> value for the page's first state (the argument set, a fresh Output dir)."""
    from finetune.llama_factory.args import UI_DEFAULTS

    values = ctx.defaults()
    values.pop("top.model_name", None)
    proposed = values.get("train.output_dir")
    if not proposed or Path(str(proposed)).exists():  # the launcher's proposal was used meanwhile
        values["train.output_dir"] = ctx.fresh_output_dir()
    return {k: v for k, v in values.items() if k in _ALWAYS or UI_DEFAULTS.get(k, object()) != v}


def _patch_defaults(ctx: BoardContext, env: Mapping[str, str]) -> None:
    from llamafactory.extras import constants
    from llamafactory.webui import common

    common.DEFAULT_DATA_DIR = str(ctx.layout.data_dir)
    common.DEFAULT_SAVE_DIR = str(ctx.layout.outputs_dir)
    template = env.get(board.ENV_TEMPLATE) or ctx.defaults().get("top.template")
    if template and isinstance(getattr(constants, "DEFAULT_TEMPLATE", None), dict):
        constants.DEFAULT_TEMPLATE[board.MODEL_NAME] = template


def _patch_ready_on_open(ctx: BoardContext) -> None:
    from llamafactory.webui.engine import Engine

    orig = Engine.resume

    def resume(self):
        gen = orig(self)
        first = next(gen, None)
        if first is None:
            return
        if not getattr(self, "pure_chat", False) and not getattr(self, "demo_mode", False):
            try:
                first.update(_open_updates(ctx, self.manager))
            except Exception as err:  # noqa: BLE001 - the page still opens, as LlamaBoard's
                ctx.log(f"could not fill the form on open ({type(err).__name__}: {err}); use Load arguments")
        yield first
        yield from gen

    Engine.resume = resume


def _open_updates(ctx: BoardContext, manager) -> dict:
    updates = {}
    values = open_values(ctx)
    for elem_id, value in values.items():
        try:
            elem = manager.get_elem_by_id(elem_id)
        except KeyError:
            continue
        kwargs: dict[str, Any] = {"value": value}
        if elem_id == "train.output_dir":
            kwargs["choices"] = runs_tab.output_dir_choices(ctx.layout, values.get("top.model_path"), value)
        elif elem_id == "train.dataset":
            kwargs["choices"] = board.registered_datasets(ctx.layout)
        updates[elem] = elem.__class__(**kwargs)
    return updates


def _patch_new_run_per_start(ctx: BoardContext) -> None:
    import gradio as gr
    from llamafactory.webui import common, interface
    from llamafactory.webui.components import train as train_mod
    from llamafactory.webui.runner import Runner

    orig_run = Runner.run_train

    def run_train(self, data):
        if getattr(self, "running", False):
            yield from orig_run(self, data)
            return
        elem = self.manager.get_elem_by_id("train.output_dir")
        plan = runs_tab.plan_output_dir(ctx.layout, data.get(elem))
        data[elem] = plan.output_dir
        self.finetune_planned_dir = plan.output_dir  # the Output dir box takes it on the next log update
        msg = f"{MARK}: run `{plan.run_id}` in `{plan.output_dir}`" + (f": {plan.note}" if plan.note else "")
        ctx.log(msg.replace("**", "").replace("`", ""))
        yield {self.manager.get_elem_by_id("train.output_box"): msg}
        yield from orig_run(self, data)

    Runner.run_train = run_train

    orig_tab = interface.create_train_tab

    def create_train_tab(engine):
        elems = orig_tab(engine)

        def follow(text):
            # Start's outputs are only the log box, bar and loss plot: the box's change carries the new
            # run's folder to Output dir. The trainer's log lines can replace our line before the browser
            # sends its change, so the folder comes from the runner, once per Start, not from the text.
            planned = engine.runner.__dict__.pop("finetune_planned_dir", None)
            if planned is None and (m := _START_RE.match(text or "")):
                planned = m.group(1)
            return gr.update(value=planned) if planned else gr.update()

        elems["output_box"].change(follow, [elems["output_box"]], [elems["output_dir"]], queue=False,
                                   show_progress="hidden")
        return elems

    interface.create_train_tab = create_train_tab

    def list_output_dirs(model_name, finetuning_type, current_time):
        model_path = common.get_model_path(model_name) if model_name else None
        return gr.Dropdown(choices=runs_tab.output_dir_choices(ctx.layout, model_path, ctx.fresh_output_dir()))

    train_mod.list_output_dirs = list_output_dirs


def _patch_workers(ctx: BoardContext) -> None:
    from llamafactory.webui.runner import Runner

    from finetune.llama_factory.args import default_workers

    orig_train, orig_eval = Runner._parse_train_args, Runner._parse_eval_args

    def parse_train(self, data):
        args = orig_train(self, data)
        try:
            extra = json.loads(data[self.manager.get_elem_by_id("train.extra_args")] or "{}")
        except (ValueError, KeyError, TypeError):
            extra = {}
        if "preprocessing_num_workers" not in extra:
            args["preprocessing_num_workers"] = default_workers()
        return args

    def parse_eval(self, data):
        args = orig_eval(self, data)
        args["preprocessing_num_workers"] = default_workers()
        return args

    Runner._parse_train_args, Runner._parse_eval_args = parse_train, parse_eval


def _patch_checkpoints(ctx: BoardContext) -> None:
    import gradio as gr
    from llamafactory.webui import common, control
    from llamafactory.webui.components import top as top_mod
    from llamafactory.webui.components import train as train_mod

    orig = control.list_checkpoints

    def list_checkpoints(model_name, finetuning_type):
        theirs = orig(model_name, finetuning_type)
        model_path = common.get_model_path(model_name) if model_name else None
        ours = runs_tab.checkpoint_choices(ctx.layout, model_path, finetuning_type)
        choices = ours + [c for c in (getattr(theirs, "choices", None) or []) if c not in ours]
        multi = bool(getattr(theirs, "multiselect", True))
        return gr.Dropdown(value=[] if multi else None, choices=choices, multiselect=multi)

    control.list_checkpoints = top_mod.list_checkpoints = train_mod.list_checkpoints = list_checkpoints


def _patch_export_dir(ctx: BoardContext) -> None:
    import gradio as gr
    from llamafactory.webui import interface
    from llamafactory.webui.components import export as export_mod

    orig_save = export_mod.save_model

    def save_model(lang, model_name, model_path, finetuning_type, checkpoint_path, template, export_size,
                   export_quantization_bit, export_quantization_dataset, export_device, export_legacy_format,
                   export_dir, export_hub_model_id, extra_args):
        inside = runs_tab.inside_run(ctx.layout, checkpoint_path, export_dir)
        if inside:
            ctx.log(f"Export dir {export_dir!r} -> {inside}")
            export_dir = inside
        yield from orig_save(lang, model_name, model_path, finetuning_type, checkpoint_path, template, export_size,
                             export_quantization_bit, export_quantization_dataset, export_device,
                             export_legacy_format, export_dir, export_hub_model_id, extra_args)

    export_mod.save_model = save_model
    orig_tab = interface.create_export_tab

    def create_export_tab(engine):
        elems = orig_tab(engine)
        checkpoint = engine.manager.get_elem_by_id("top.checkpoint_path")

        def default_dir(value):
            target = runs_tab.default_export_dir(ctx.layout, value)
            return gr.update(value=target) if target else gr.update()

        checkpoint.change(default_dir, [checkpoint], [elems["export_dir"]], queue=False)
        return elems

    interface.create_export_tab = create_export_tab


def _patch_eval_dir(ctx: BoardContext) -> None:
    from llamafactory.webui.runner import Runner

    orig = Runner.run_eval

    def run_eval(self, data):
        elem = self.manager.get_elem_by_id("eval.output_dir")
        checkpoint = data.get(self.manager.get_elem_by_id("top.checkpoint_path"))
        inside = runs_tab.inside_run(ctx.layout, checkpoint, data.get(elem))
        if inside and not getattr(self, "running", False):
            data[elem] = inside
            yield {self.manager.get_elem_by_id("eval.output_box"): f"{MARK}: results go to `{inside}`"}
        yield from orig(self, data)

    Runner.run_eval = run_eval


def _patch_config_paths(ctx: BoardContext) -> None:
    import gradio as gr
    from llamafactory.webui.components import train as train_mod

    orig = train_mod.list_config_paths

    def list_config_paths(current_time):
        theirs = orig(current_time)
        keep = []
        for label, value in getattr(theirs, "choices", None) or []:
            m = _OLD_SET_RE.match(str(value))
            if m and not ctx.layout.run_dir(m.group(1)).exists():
                continue  # an argument set of an earlier launch that never trained
            keep.append((label, value))
        first = [c for c in keep if c[1] == board.DEFAULTS_SET]
        return gr.Dropdown(choices=first + [c for c in keep if c[1] != board.DEFAULTS_SET])

    train_mod.list_config_paths = list_config_paths


def trainer_log_for(layout: Layout, cmd: Sequence[str]) -> Path | None:
    """Where a LlamaBoard trainer's stderr is copied: ``<logs>/<run_id>/train.log`` for a training run
    of ours (``llamafactory-cli train <outputs>/<run_id>/training_args.yaml``),
    ``<logs>/<run_id>/<name>.eval.log`` for an Evaluate & Predict inside one (``<run>/<name>/``);
    None for anything else."""
    from finetune.rundir import TRAIN_LOG, TRAINING_ARGS

    args = next((Path(str(a)) for a in cmd if str(a).endswith(TRAINING_ARGS)), None)
    run = runs_tab.run_of(layout, str(args.parent)) if args is not None else None
    if run is None:
        return None
    try:
        inside = args.parent.resolve().relative_to(run.resolve()).parts
    except (OSError, ValueError):
        return None
    if not inside:
        return layout.log_dir(run.name) / TRAIN_LOG
    return layout.log_dir(run.name) / f"{inside[0]}.eval.log" if len(inside) == 1 else None


def guarded_popen_for(ctx: BoardContext) -> Callable[..., subprocess.Popen]:
    """``subprocess.Popen`` for LlamaBoard's trainers, under :func:`finetune.proc.guard`; their stderr
    (the traceback LlamaBoard keeps only in memory) is also written to :func:`trainer_log_for`'s file,
    a training run's recorded in its finetune_run.json as for ``invoke train``."""

    def guarded_popen(cmd, *args, **kwargs):
        from finetune.proc import guarded_command
        from finetune.rundir import TRAIN_LOG, RunDir

        log = trainer_log_for(ctx.layout, list(cmd))
        if log is not None and log.name == TRAIN_LOG:
            try:
                RunDir(ctx.layout.run_dir(log.parent.name), log.parent.name).update_state(log=str(log))
            except Exception as err:  # noqa: BLE001 - a record must never stop a Start
                ctx.log(f"could not record the trainer log of {log.parent.name}: {err}")
        return subprocess.Popen(guarded_command(list(cmd), stderr_copy=log), *args, **kwargs)

    return guarded_popen


def _patch_trainer_guard(ctx: BoardContext) -> None:
    from llamafactory.webui import runner

    runner.Popen = guarded_popen_for(ctx)


def _patch_runs_tab(ctx: BoardContext) -> None:
    import gradio as gr
    from llamafactory.webui import interface

    orig = interface.create_footer

    def create_footer():
        try:
            with gr.Tab("Runs") as tab:
                elems = runs_tab.build_runs_tab(ctx.layout)

            def opened():
                return (gr.Timer(active=True), *elems["table_update"]())

            tab.select(opened, outputs=[elems["timer"], *elems["outputs"]], queue=False)
        except Exception as err:  # noqa: BLE001 - the rest of the page must still be built
            ctx.log(f"the Runs tab could not be built ({type(err).__name__}: {err}); use invoke runs")
        return orig()

    interface.create_footer = create_footer


_APPLY = {
    "defaults": None,  # needs env: applied in apply_all
    "ready_on_open": _patch_ready_on_open,
    "new_run_per_start": _patch_new_run_per_start,
    "workers": _patch_workers,
    "checkpoints": _patch_checkpoints,
    "export_dir": _patch_export_dir,
    "eval_dir": _patch_eval_dir,
    "config_paths": _patch_config_paths,
    "trainer_guard": _patch_trainer_guard,
    "runs_tab": _patch_runs_tab,
}


def apply_all(ctx: BoardContext, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Apply every patch whose targets check out; returns name -> "applied" or why not. Must run
    before ``llamafactory.webui.interface.create_ui`` is called (the defaults before the components
    are imported)."""
    global _CTX
    from importlib.metadata import version

    env = os.environ if env is None else env
    _CTX = ctx
    result: dict[str, str] = {}
    lf_version = version("llamafactory")
    if not board.internals_usable(lf_version, env):
        why = (f"{board.NO_PATCH_ENV} is set" if env.get(board.NO_PATCH_ENV) else
               f"LLaMA-Factory {lf_version} is not one of the verified versions {', '.join(board.INTERNALS_VERIFIED)}")
        for p in PATCHES:
            result[p.name] = f"skipped: {why}"
            ctx.log(f"{p.name}: not applied ({why}); instead: {p.fallback}")
        return result
    # The defaults first: the components copy them when they are imported (check() imports them).
    defaults = PATCHES[0]
    problems = [pr for pr in (_resolve(t)[1] for t in defaults.targets) if pr]
    if problems:
        result["defaults"] = "skipped: " + "; ".join(problems)
    else:
        _patch_defaults(ctx, env)
        result["defaults"] = "applied"
    for p in PATCHES[1:]:
        problems = check(p)
        if problems:
            result[p.name] = "skipped: " + "; ".join(problems)
            continue
        try:
            _APPLY[p.name](ctx)
            result[p.name] = "applied"
        except Exception as err:  # noqa: BLE001 - a failed patch leaves LlamaBoard's behaviour
            result[p.name] = f"skipped: {type(err).__name__}: {err}"
    for p in PATCHES:
        if result[p.name] != "applied":
            ctx.log(f"{p.name}: not applied ({result[p.name][9:]}); instead: {p.fallback}")
    return result


if __name__ == "__main__":  # python -m finetune.llama_factory.board_patches: check the installed version
    res = check_all()
    for name, probs in res.items():
        print(f"{name:18s} {'ok' if not probs else 'MOVED: ' + '; '.join(probs)}")
    sys.exit(1 if any(res.values()) else 0)
