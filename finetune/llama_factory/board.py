"""Pre-filling LLaMA-Factory's Web UI (LlamaBoard) from our layout.

LlamaBoard keeps its state in folders relative to the current working directory
(``llamaboard_cache``, ``llamaboard_config``, ``data``, ``saves``). We pin them to fixed places of
the layout whatever folder the user starts from:

* the UI process runs with ``cwd = layout.state_dir``, so ``llamaboard_cache`` is
  ``layout.webui_cache_dir`` and ``llamaboard_config`` is ``layout.webui_config_dir``
  (public behaviour: plain relative paths);
* ``llamaboard_cache/user_config.yaml`` (LLaMA-Factory's user config) gets ``last_model`` and
  ``path_dict`` so the model path is filled when the page opens;
* ``llamaboard_config/<run_id>.yaml`` is a saved argument set (element id -> value) that the Train
  tab's "Load arguments" restores: template, Data dir, datasets, Output dir (an absolute path with
  the OS separator, which LLaMA-Factory uses as given) and the training arguments;
* with method ``env`` the child Python also points ``DEFAULT_DATA_DIR`` / ``DEFAULT_SAVE_DIR`` at
  the layout before the UI is built (so Data dir shows ``dataset/llamafactory`` and the Dataset
  dropdown lists our datasets on open). Those are LLaMA-Factory internals: used only on versions
  where they were verified (:data:`INTERNALS_VERIFIED`), otherwise the public mechanisms above
  remain (``FINETUNE_WEBUI_NO_PATCH=1`` forces that fallback).

Light at import: yaml and json only; LLaMA-Factory is imported inside :func:`run_child`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from finetune.env.platforms import LLAMAFACTORY_VERSION
from finetune.errors import UserError
from finetune.layout import Layout

USER_CONFIG = "user_config.yaml"
MODEL_NAME = "Custom"  # LlamaBoard's own entry for "a model given by path"
# Versions on which DEFAULT_DATA_DIR / DEFAULT_SAVE_DIR / DEFAULT_TEMPLATE were verified to pre-fill
# the page (tests/smoke/test_webui_board.py checks the running version).
INTERNALS_VERIFIED = (LLAMAFACTORY_VERSION,)
NO_PATCH_ENV = "FINETUNE_WEBUI_NO_PATCH"

# Environment handed to the child UI Python (method "env").
ENV_DATA_DIR = "FINETUNE_WEBUI_DATA_DIR"
ENV_SAVE_DIR = "FINETUNE_WEBUI_SAVE_DIR"
ENV_TEMPLATE = "FINETUNE_WEBUI_TEMPLATE"
ENV_HOST = "FINETUNE_WEBUI_HOST"
ENV_PORT = "FINETUNE_WEBUI_PORT"
ENV_SHARE = "FINETUNE_WEBUI_SHARE"
ENV_AUTH_USER = "FINETUNE_WEBUI_USER"
ENV_AUTH_PASSWORD = "FINETUNE_WEBUI_PASSWORD"
ENV_AUTH_PASSWORD_FILE = "FINETUNE_WEBUI_PASSWORD_FILE"
ENV_REFINE_ARG_SET = "FINETUNE_WEBUI_REFINE_ARG_SET"
ENV_LAYOUT = "FINETUNE_WEBUI_LAYOUT"  # the layout's folders as JSON (built once by the launcher)
ENV_DEFAULTS = "FINETUNE_WEBUI_DEFAULTS"  # the argument set the page opens with
DEFAULTS_SET = "finetune-defaults.yaml"
THROUGHPUT_SET = "finetune-throughput.yaml"
MODELS_FILE = "models.json"  # model path -> the template last used with it


# ---- small helpers -----------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically (:func:`finetune.fileio.atomic_write_text`)."""
    from finetune.fileio import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def run_output_dir(outputs_dir: str | PurePath, run_id: str, path_cls: type[PurePath] | None = None) -> str:
    """The Output dir value for a run, written with the separator of the OS that runs the UI.

    LlamaBoard treats an Output dir containing ``os.path.sep`` as a path and uses it as given
    (otherwise it goes under ``saves/<model>/<method>/``); on Windows ``/`` is not ``os.path.sep``,
    so the value must be built with the OS's path flavour (``path_cls`` is for tests).
    """
    cls = path_cls or type(Path())
    return str(cls(str(outputs_dir)) / run_id)


def _registry(layout: Layout) -> dict:
    from finetune.fileio import read_json

    try:
        info = read_json(layout.dataset_info, default={})
    except UserError as err:
        raise UserError(f"dataset registry is {err.message}", where=err.where or str(layout.dataset_info),
                        fix="invoke data.register --help  (re-register the files to rebuild it)") from None
    if not isinstance(info, dict):
        raise UserError("dataset registry must be a JSON object of name -> entry", where=str(layout.dataset_info),
                        fix="invoke data.register --help")
    return info


def registered_datasets(layout: Layout) -> list[str]:
    """Names in ``dataset_info.json`` that the SFT stage lists (not ``ranking``), in file order."""
    return [name for name, entry in _registry(layout).items() if isinstance(entry, dict) and not entry.get("ranking")]


def latest_dataset(layout: Layout) -> str | None:
    """The most recently registered SFT dataset: newest data file, the later entry on a tie."""
    info = _registry(layout)
    best: tuple[float, int, str] | None = None
    for i, (name, entry) in enumerate(info.items()):
        if not isinstance(entry, dict) or entry.get("ranking"):
            continue
        try:
            mtime = (layout.data_dir / str(entry.get("file_name", ""))).stat().st_mtime
        except OSError:
            mtime = 0.0
        if best is None or (mtime, i) >= best[:2]:
            best = (mtime, i, name)
    return best[2] if best else None


def choose_datasets(layout: Layout, wanted: Iterable[str] | None) -> list[str]:
    """``--dataset`` names checked against the registry (comma lists allowed), else the latest one."""
    names = [n.strip() for item in (wanted or []) for n in str(item).split(",") if n.strip()]
    known = registered_datasets(layout)
    if not names:
        latest = latest_dataset(layout)
        return [latest] if latest else []
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"dataset(s) not registered: {', '.join(missing)}", where=f"{layout.dataset_info} (--dataset)",
                        fix=("invoke data.register FILE.jsonl  (registered now: " + (", ".join(known) or "none") + ")"))
    return list(dict.fromkeys(names))


def remembered_template(layout: Layout, model_path: str) -> str | None:
    """The template last used with this model (``<state>/models.json``)."""
    from finetune.fileio import read_json

    try:
        data = read_json(layout.state_dir / MODELS_FILE, default={})
    except UserError:
        return None
    entry = data.get(model_path) if isinstance(data, dict) else None
    return entry.get("template") if isinstance(entry, dict) and isinstance(entry.get("template"), str) else None


def remember_template(layout: Layout, model_path: str, template: str) -> None:
    from finetune.fileio import update_json

    def put(data):
        data = data if isinstance(data, dict) else {}
        data[model_path] = {**(data.get(model_path) or {}), "template": template}
        return data

    layout.ensure(layout.state_dir)
    try:
        update_json(layout.state_dir / MODELS_FILE, put, default={})
    except UserError:  # a broken file: start it again
        (layout.state_dir / MODELS_FILE).unlink(missing_ok=True)
        update_json(layout.state_dir / MODELS_FILE, put, default={})


def _yaml_load(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _yaml_dump(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), allow_unicode=True, sort_keys=False)


# ---- the pre-fill ------------------------------------------------------------------------------
@dataclass
class BoardFiles:
    """What :func:`prepare` wrote (paths are absolute)."""

    run_id: str
    user_config: Path
    arg_set: Path
    output_dir: str
    datasets: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    template: str | None = None

    @property
    def arg_set_name(self) -> str:
        """The "Config path" to pick in the Train tab before pressing "Load arguments"."""
        return self.arg_set.name


def light_compute_type(env: Mapping[str, str] | None = None) -> str:
    """The compute type without importing torch (the launcher stays light): ``FINETUNE_COMPUTE_TYPE``,
    else fp32 without an NVIDIA driver, else bf16 (the UI child refines it, see :func:`refine_compute_type`)."""
    import shutil

    env = os.environ if env is None else env
    forced = env.get("FINETUNE_COMPUTE_TYPE", "").strip()
    if forced:
        return forced
    return "bf16" if shutil.which("nvidia-smi") else "fp32"


def refine_compute_type(arg_set: Path) -> str | None:
    """In the UI child (torch is loaded there anyway): replace a guessed bf16 by what the card supports."""
    from finetune.llama_factory.args import detect_compute_type

    values = _yaml_load(arg_set)
    if not values or values.get("train.compute_type") != "bf16":
        return None
    best = detect_compute_type()
    if best != "bf16":
        values["train.compute_type"] = best
        write_atomic(arg_set, _yaml_dump(values))
    return best


def demo_train_fields() -> dict[str, Any]:
    """The demo's hyper-parameters as :class:`TrainSpec` fields (``finetune.demo.TRAIN``: tuned so
    the tiny base learns the demo's facts in about a minute on two cores)."""
    from finetune import demo

    t = dict(demo.TRAIN)
    return dict(num_train_epochs=t["epochs"], learning_rate=t["lr"], per_device_train_batch_size=t["batch_size"],
                cutoff_len=t["cutoff"], lora_rank=t["lora_rank"], lora_alpha=t["lora_rank"] * 2,
                save_steps=t["save_steps"], logging_steps=10, gradient_accumulation_steps=1,
                lr_scheduler_type="cosine")


def default_board_values(layout: Layout, run_id: str, model: str | None, template: str | None,
                         datasets: Iterable[str]) -> dict[str, Any]:
    """The argument set the page opens with: LlamaBoard element id -> value.

    Uses ``TrainSpec.to_board_config()`` (finetune/llama_factory/args.py: the same arguments headless
    training writes) when that module exists; otherwise a minimal set of our own. The demo's data
    gets the demo's hyper-parameters (LlamaBoard's defaults would not teach the tiny model its facts).
    """
    datasets = list(datasets)
    output_dir = run_output_dir(layout.outputs_dir, run_id)
    values: dict[str, Any] | None = None
    try:
        from finetune.llama_factory import args as lf_args  # the same arguments headless training writes
    except ImportError:
        lf_args = None
    if lf_args is not None and hasattr(lf_args, "TrainSpec"):
        fields: dict[str, Any] = {}
        try:
            from finetune import demo

            if getattr(demo, "DEMO_DATASET", None) in datasets:
                fields = demo_train_fields()
        except (ImportError, AttributeError, KeyError):
            fields = {}
        try:
            workers = lf_args.default_workers() if hasattr(lf_args, "default_workers") else 1
            spec = lf_args.TrainSpec(model_path=model or "", template=template or "default",
                                     dataset=datasets, dataset_dir=str(layout.data_dir),
                                     output_dir=output_dir, extra={"preprocessing_num_workers": workers},
                                     compute_type=light_compute_type(), **fields)
            values = dict(spec.to_board_config())
        except (TypeError, ValueError):  # a TrainSpec of another shape: keep our own set below
            values = None
    if values is None:
        values = {
            "top.finetuning_type": "lora",
            "train.training_stage": "Supervised Fine-Tuning",
            "train.compute_type": light_compute_type(),
            "train.extra_args": json.dumps({"optim": "adamw_torch",
                                            "preprocessing_num_workers": max(1, min(16, (os.cpu_count() or 2) - 1))}),
        }
    # Our layout always wins for where things are.
    values["train.dataset_dir"] = str(layout.data_dir)
    values["train.dataset"] = datasets
    values["train.output_dir"] = output_dir
    # Without a model / template leave those fields to the page (user config, model name).
    if template:
        values["top.template"] = template
    else:
        values.pop("top.template", None)
    if model:
        values["top.model_path"] = str(model)
    else:
        values.pop("top.model_path", None)
    # Changing top.model_name resets model path and template (docs/field-notes.md#webui): never load it.
    values.pop("top.model_name", None)
    return values


# The page's sliders refuse values outside their range (gradio raises on Start): LLaMA-Factory 0.9.5's.
SLIDER_RANGES = {"train.save_steps": (10, 5000), "train.logging_steps": (1, 1000), "train.warmup_steps": (0, 5000),
                 "train.cutoff_len": (4, 131072), "train.batch_size": (1, 1024),
                 "train.gradient_accumulation_steps": (1, 1024), "train.lora_rank": (1, 1024),
                 "train.lora_alpha": (1, 2048)}


def clamp_to_page(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers moved into the range of the page's sliders (e.g. the demo's save_steps 100000, i.e.
    "no checkpoint", becomes 5000: still none for a run shorter than that)."""
    for key, (lo, hi) in SLIDER_RANGES.items():
        v = values.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[key] = type(v)(min(max(v, lo), hi))
    return values


def prepare(layout: Layout, run_id: str, model: str | Path | None = None, template: str | None = None,
            overrides: Mapping[str, Any] | None = None, datasets: Iterable[str] | None = None) -> BoardFiles:
    """Write user_config.yaml and the argument set the page opens with; return where they are.

    ``run_id`` only names the proposed Output dir: nothing is created for it here. ``model`` without
    ``template`` takes the template remembered for that model; ``datasets`` default to the most
    recently registered one.
    """
    model_path = str(Path(model).expanduser().resolve()) if model else None
    if model_path and not Path(model_path).exists():
        raise UserError(f"model path does not exist: {model_path}", where="--model",
                        fix="pass a folder with config.json and the tokenizer, e.g. --model finetune/cache/models/tiny-qwen2")
    chosen = choose_datasets(layout, datasets)
    layout.ensure(layout.webui_cache_dir, layout.webui_config_dir)

    # user_config.yaml: keep what the user had (language, hub, other models), set ours.
    cfg_path = layout.webui_cache_dir / USER_CONFIG
    cfg = {"lang": None, "hub_name": None, "last_model": None, "path_dict": {}, "cache_dir": None}
    cfg.update(_yaml_load(cfg_path))
    if not isinstance(cfg.get("path_dict"), dict):
        cfg["path_dict"] = {}
    if model_path:
        cfg["last_model"] = MODEL_NAME
        cfg["path_dict"][MODEL_NAME] = model_path
    elif cfg.get("last_model") == MODEL_NAME and isinstance(cfg["path_dict"].get(MODEL_NAME), str):
        model_path = cfg["path_dict"][MODEL_NAME]  # the model of the last launch: its template too
    write_atomic(cfg_path, _yaml_dump(cfg))
    if model_path and template:
        remember_template(layout, model_path, template)
    elif model_path:
        template = remembered_template(layout, model_path)

    values = default_board_values(layout, run_id, model_path, template, chosen)
    values.update(overrides or {})
    if not values.get("train.output_dir"):  # an override without a place: ours
        values["train.output_dir"] = run_output_dir(layout.outputs_dir, run_id)
    values.pop("top.model_name", None)
    clamp_to_page(values)
    arg_set = layout.webui_config_dir / DEFAULTS_SET
    write_atomic(arg_set, _yaml_dump(values))
    if model_path:
        write_throughput_set(layout, model_path, values)
    return BoardFiles(run_id=run_id, user_config=cfg_path, arg_set=arg_set,
                      output_dir=str(values["train.output_dir"]), datasets=chosen, values=values,
                      model=model_path, template=template)


def throughput_values(values: Mapping[str, Any], preset_args: Mapping[str, Any]) -> dict[str, Any]:
    """The saved argument set with ``--preset throughput`` applied: batch size in its box, the rest
    in "Extra arguments" (the page merges that JSON into the training arguments)."""
    out = dict(values)
    args = dict(preset_args)
    if "per_device_train_batch_size" in args:
        out["train.batch_size"] = int(args.pop("per_device_train_batch_size"))
    if "gradient_accumulation_steps" in args:
        out["train.gradient_accumulation_steps"] = int(args.pop("gradient_accumulation_steps"))
    if "cutoff_len" in args:
        out["train.cutoff_len"] = int(args.pop("cutoff_len"))
    extra = json.loads(out.get("train.extra_args") or "{}")
    extra.update(args)
    out["train.extra_args"] = json.dumps(extra)
    out["train.compute_type"] = "bf16" if args.get("bf16") else out.get("train.compute_type", "fp32")
    return out


def write_throughput_set(layout: Layout, model_path: str, values: Mapping[str, Any]) -> Path | None:
    """``finetune-throughput.yaml`` beside the default set, on machines with an NVIDIA GPU only."""
    from finetune.llama_factory.presets import ModelShape, throughput_preset
    from finetune.llama_factory.scale import cuda_free_gib

    free = cuda_free_gib()
    config = Path(model_path) / "config.json"
    if free is None or not config.is_file():
        return None
    import importlib.util

    preset = throughput_preset(ModelShape.from_config(Path(model_path)), free,
                               int(values.get("train.cutoff_len") or 2048),
                               flash_attn_installed=importlib.util.find_spec("flash_attn") is not None,
                               liger_installed=importlib.util.find_spec("liger_kernel") is not None)
    path = layout.webui_config_dir / THROUGHPUT_SET
    write_atomic(path, _yaml_dump(throughput_values(values, preset.args)))
    return path


# ---- the child UI process (method "env") ---------------------------------------------------------
def internals_usable(version: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether to set LlamaBoard's module defaults (verified versions only, unless disabled)."""
    env = os.environ if env is None else env
    return version in INTERNALS_VERIFIED and env.get(NO_PATCH_ENV, "") not in ("1", "true", "True")


def run_child(env: Mapping[str, str] | None = None) -> None:
    """Entry of the UI process started by the launcher with method ``env`` (blocks)."""
    env = os.environ if env is None else env
    if env.get(ENV_REFINE_ARG_SET):
        try:
            refine_compute_type(Path(env[ENV_REFINE_ARG_SET]))
        except Exception as err:  # noqa: BLE001 - the page works without it; say so in the log
            print(f"[finetune] could not check the compute type: {err}", flush=True)
    from finetune.llama_factory import board_patches

    ctx = board_patches.BoardContext.from_env(env)
    applied = board_patches.apply_all(ctx, env)
    from llamafactory.extras.misc import fix_proxy
    from llamafactory.webui.interface import create_ui

    host = env.get(ENV_HOST, "127.0.0.1")
    port = int(env.get(ENV_PORT, "7860"))
    user = env.get(ENV_AUTH_USER)
    password = _read_password(env)
    auth = (user, password) if user and password else None
    done = sum(v == "applied" for v in applied.values())
    print(f"[finetune] LlamaBoard on {host}:{port}; cwd {Path.cwd()}; {done}/{len(applied)} patches applied "
          f"({', '.join(k for k, v in applied.items() if v == 'applied') or 'none: use Load arguments'})", flush=True)
    fix_proxy(ipv6_enabled=":" in host)
    create_ui().queue().launch(server_name=host, server_port=port, share=env.get(ENV_SHARE) == "1",
                               auth=auth, inbrowser=False, show_error=True)


def _read_password(env: Mapping[str, str]) -> str | None:
    """The login password: from a file the launcher wrote (mode 0600, deleted once read) or the
    environment; never from a command line."""
    path = env.get(ENV_AUTH_PASSWORD_FILE)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        Path(path).unlink(missing_ok=True)
        if text:
            return text
    return env.get(ENV_AUTH_PASSWORD) or None


if __name__ == "__main__":  # python -m finetune.llama_factory.board (what the launcher starts)
    sys.exit(run_child())
