"""Training arguments exactly as LLaMA-Factory 0.9.5's Web UI (LlamaBoard) writes them.

One :class:`TrainSpec` gives both files the Web UI leaves in a run folder:

* ``training_args.yaml`` (:meth:`TrainSpec.to_training_args`): what ``llamafactory-cli train`` reads;
  built the way ``llamafactory.webui.runner.Runner._parse_train_args`` builds it from the page's
  fields, then cleaned like ``webui.common._clean_cmd`` (None / False / "" dropped, except a few keys).
* ``llamaboard_config.yaml`` (:meth:`TrainSpec.to_board_config`): the map of Web UI element ids
  (``top.model_name``, ``train.dataset`` ...) to values that "Load arguments" and the output-dir
  restore read back into the page.

Two deliberate differences from the page's defaults, both visible in the files: ``report_to: none``
(the page's default too) and ``preprocessing_num_workers`` sized to this machine instead of a fixed
16. Anything else goes through ``extra`` (the page's "Extra arguments" JSON box), so a run started
headless and one started from the page look the same to discovery, inference and the Web UI.

Light module: no torch / transformers / llamafactory at import time.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# Web UI "Training stage" labels -> stage (llamafactory.extras.constants.TRAINING_STAGES).
TRAINING_STAGES = {
    "Supervised Fine-Tuning": "sft",
    "Reward Modeling": "rm",
    "PPO": "ppo",
    "DPO": "dpo",
    "KTO": "kto",
    "Pre-Training": "pt",
}
STAGE_LABELS = {v: k for k, v in TRAINING_STAGES.items()}
PEFT_METHODS = {"lora", "oft"}
FINETUNING_TYPES = ("lora", "oft", "freeze", "full")
COMPUTE_TYPES = ("bf16", "fp16", "fp32", "pure_bf16")
# The page's "Extra arguments" default.
UI_EXTRA_ARGS = {"optim": "adamw_torch"}

# Keys the Web UI keeps even when False (webui.common._clean_cmd).
_NO_SKIP_KEYS = ("packing", "enable_thinking", "use_reentrant_gc", "double_quantization",
                 "freeze_vision_tower", "freeze_multi_modal_projector")

# The train-tab inputs of the page and their initial values in LLaMA-Factory 0.9.5 (read from a
# built page; tests/smoke/test_runs_train.py checks them against the installed version).
UI_DEFAULTS: dict[str, Any] = {
    "top.model_name": None, "top.model_path": None, "top.finetuning_type": "lora", "top.checkpoint_path": [],
    "top.quantization_bit": "none", "top.quantization_method": "bnb", "top.template": "default",
    "top.rope_scaling": "none", "top.booster": "auto",
    "train.training_stage": "Supervised Fine-Tuning", "train.dataset_dir": "data", "train.dataset": [],
    "train.learning_rate": "5e-5", "train.num_train_epochs": "3.0", "train.max_grad_norm": "1.0",
    "train.max_samples": "100000", "train.compute_type": "bf16",
    "train.cutoff_len": 2048, "train.batch_size": 2, "train.gradient_accumulation_steps": 8,
    "train.val_size": 0, "train.lr_scheduler_type": "cosine",
    "train.logging_steps": 5, "train.save_steps": 100, "train.warmup_steps": 0, "train.neftune_alpha": 0,
    "train.extra_args": json.dumps(UI_EXTRA_ARGS),
    "train.packing": False, "train.neat_packing": False, "train.train_on_prompt": False,
    "train.mask_history": False, "train.resize_vocab": False, "train.use_llama_pro": False,
    "train.enable_thinking": True, "train.report_to": "none",
    "train.project": "huggingface", "train.trackio_space_id": "trackio", "train.hub_private_repo": False,
    "train.freeze_trainable_layers": 2, "train.freeze_trainable_modules": "all",
    "train.freeze_extra_modules": None,
    "train.lora_rank": 8, "train.lora_alpha": 16, "train.lora_dropout": 0, "train.loraplus_lr_ratio": 0,
    "train.create_new_adapter": False, "train.use_rslora": False, "train.use_dora": False,
    "train.use_pissa": False, "train.lora_target": None, "train.additional_target": None,
    "train.pref_beta": 0.1, "train.pref_ftx": 0, "train.pref_loss": "sigmoid", "train.reward_model": [],
    "train.ppo_score_norm": False, "train.ppo_whiten_rewards": False,
    "train.freeze_vision_tower": True, "train.freeze_multi_modal_projector": True,
    "train.freeze_language_model": False, "train.image_max_pixels": "768*768",
    "train.image_min_pixels": "32*32", "train.video_max_pixels": "256*256", "train.video_min_pixels": "16*16",
    "train.use_galore": False, "train.galore_rank": 16, "train.galore_update_interval": 200,
    "train.galore_scale": 2.0, "train.galore_target": "all",
    "train.use_apollo": False, "train.apollo_rank": 16, "train.apollo_update_interval": 200,
    "train.apollo_scale": 32.0, "train.apollo_target": "all",
    "train.use_badam": False, "train.badam_mode": "layer", "train.badam_switch_mode": "ascending",
    "train.badam_switch_interval": 50, "train.badam_update_ratio": 0.05,
    "train.use_swanlab": False, "train.swanlab_project": "llamafactory", "train.swanlab_run_name": None,
    "train.swanlab_workspace": None, "train.swanlab_api_key": None, "train.swanlab_mode": "cloud",
    "train.swanlab_link": None,
    "train.output_dir": None, "train.config_path": None, "train.ds_stage": "none", "train.ds_offload": False,
}
# What the Web UI leaves out of the llamaboard_config.yaml it saves (runner._build_config_dict).
BOARD_SKIP_IDS = ("top.lang", "top.model_path", "train.output_dir", "train.config_path")


def default_workers(cpu_count: int | None = None) -> int:
    """Dataset preprocessing workers for this machine: one core left free, at most 16."""
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, min(16, cpus - 1))


def detect_compute_type() -> str:
    """bf16 on a CUDA card that has it, fp16 on other CUDA cards, fp32 elsewhere (CPU, MPS).

    ``FINETUNE_COMPUTE_TYPE`` overrides. Imports torch (inside the function, once) only when asked.
    """
    forced = os.environ.get("FINETUNE_COMPUTE_TYPE", "").strip()
    return forced or _device_compute_type()


@functools.lru_cache(maxsize=1)
def _device_compute_type() -> str:
    try:
        import torch
    except Exception:  # noqa: BLE001 - no torch: nothing to accelerate
        return "fp32"
    try:
        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    except Exception:  # noqa: BLE001
        pass
    return "fp32"


def _num_str(value: float) -> str:
    """A number the way a person types it into the page's text box ("5e-05" -> "5e-05", 3 -> "3.0")."""
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


# Numeric settings: (check, what it must be). A problem names the flag when there is one.
_POSITIVE = (lambda v: v > 0, "a number above 0")
_AT_LEAST_1 = (lambda v: v >= 1, "a whole number of at least 1")
_NUMBER_RULES: dict[str, tuple[type, Any, str]] = {
    "learning_rate": (float, *_POSITIVE),
    "num_train_epochs": (float, *_POSITIVE),
    "max_grad_norm": (float, *_POSITIVE),
    "per_device_train_batch_size": (int, *_AT_LEAST_1),
    "gradient_accumulation_steps": (int, *_AT_LEAST_1),
    "cutoff_len": (int, *_AT_LEAST_1),
    "lora_rank": (int, *_AT_LEAST_1),
    "lora_alpha": (int, *_AT_LEAST_1),
    "logging_steps": (int, *_AT_LEAST_1),
    "save_steps": (int, *_AT_LEAST_1),
    "max_samples": (int, *_AT_LEAST_1),
    "preprocessing_num_workers": (int, *_AT_LEAST_1),
    "warmup_steps": (int, lambda v: v >= 0, "a whole number of at least 0"),
    "val_size": (float, lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
    "lora_dropout": (float, lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
}


@dataclass(frozen=True)
class TrainSpec:
    """One training run's settings, in the Web UI's terms (defaults are the page's defaults).

    Frozen: the train plan builds the final one once (``dataclasses.replace``); nothing edits it after.
    """

    model_path: str
    template: str = "default"
    dataset: list[str] = field(default_factory=list)
    dataset_dir: str = "data"
    output_dir: str = ""
    stage: str = "sft"
    finetuning_type: str = "lora"
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    cutoff_len: int = 2048
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target: str = "all"
    logging_steps: int = 5
    save_steps: int = 100
    max_samples: int = 100000
    quantization_bit: int | None = None
    compute_type: str = "auto"  # "auto": detect_compute_type() when the files are written
    plot_loss: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # Page fields that have no flag of their own.
    model_name: str = "Custom"
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    val_size: float = 0.0
    quantization_method: str = "bnb"
    preprocessing_num_workers: int = field(default_factory=default_workers)
    report_to: str = "none"

    def __post_init__(self) -> None:
        names = self.dataset.split(",") if isinstance(self.dataset, str) else self.dataset
        object.__setattr__(self, "dataset", [str(d).strip() for d in names if str(d).strip()])
        object.__setattr__(self, "extra", dict(self.extra))
        if self.stage not in STAGE_LABELS:
            raise ValueError(f"unknown stage {self.stage!r}; one of {sorted(STAGE_LABELS)}")
        if self.finetuning_type not in FINETUNING_TYPES:
            raise ValueError(f"unknown finetuning type {self.finetuning_type!r}; one of {FINETUNING_TYPES}")
        if self.compute_type not in (*COMPUTE_TYPES, "auto"):
            raise ValueError(f"unknown compute type {self.compute_type!r}; one of {COMPUTE_TYPES}")

    def resolved_compute_type(self) -> str:
        """The compute type, with "auto" replaced by what this machine supports."""
        return detect_compute_type() if self.compute_type == "auto" else self.compute_type

    def problems(self, labels: Mapping[str, str] | None = None) -> list[str]:
        """Every numeric setting that LLaMA-Factory would reject or misuse (a negative learning rate,
        batch size 0, infinite epochs ...), each named by its flag in ``labels`` (else the field)."""
        out = []
        for name, (kind, ok, what) in _NUMBER_RULES.items():
            value = getattr(self, name)
            label = (labels or {}).get(name, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kind is int and number and isinstance(value, float) and value.is_integer():
                value = int(value)
            if not number or (kind is int and not isinstance(value, int)) or not math.isfinite(value) or not ok(value):
                out.append(f"{label} must be {what} (got {value!r})")
        return out

    # -- the page's view --------------------------------------------------------------------------
    def _extra_args(self) -> dict[str, Any]:
        return {**UI_EXTRA_ARGS, **self.extra}

    def ui_values(self) -> dict[str, Any]:
        """Every train-tab field of the page, as the page would hold it for this spec."""
        compute_type = self.resolved_compute_type()
        values = dict(UI_DEFAULTS)
        values.update({
            "top.model_name": self.model_name,
            "top.model_path": str(self.model_path),
            "top.template": self.template,
            "top.finetuning_type": self.finetuning_type,
            "top.quantization_bit": "none" if self.quantization_bit is None else str(self.quantization_bit),
            "top.quantization_method": self.quantization_method,
            "train.training_stage": STAGE_LABELS[self.stage],
            "train.dataset_dir": str(self.dataset_dir),
            "train.dataset": list(self.dataset),
            "train.learning_rate": _num_str(self.learning_rate),
            "train.num_train_epochs": _num_str(self.num_train_epochs),
            "train.max_grad_norm": _num_str(self.max_grad_norm),
            "train.max_samples": str(int(self.max_samples)),
            "train.compute_type": compute_type,
            "train.cutoff_len": int(self.cutoff_len),
            "train.batch_size": int(self.per_device_train_batch_size),
            "train.gradient_accumulation_steps": int(self.gradient_accumulation_steps),
            "train.val_size": self.val_size,
            "train.lr_scheduler_type": self.lr_scheduler_type,
            "train.logging_steps": int(self.logging_steps),
            "train.save_steps": int(self.save_steps),
            "train.warmup_steps": int(self.warmup_steps),
            "train.extra_args": json.dumps(self._extra_args()),
            "train.report_to": self.report_to,
            "train.lora_rank": int(self.lora_rank),
            "train.lora_alpha": int(self.lora_alpha),
            "train.lora_dropout": self.lora_dropout,
            "train.lora_target": "" if self.lora_target == "all" else self.lora_target,
            "train.output_dir": str(self.output_dir),
        })
        return values

    def to_board_config(self, include_paths: bool = True) -> dict[str, Any]:
        """``llamaboard_config.yaml``: element id -> value, ``top.model_name`` first (setting it
        later resets the model path and template on the page).

        ``include_paths=False`` gives exactly what the page saves (it leaves out ``top.lang``,
        ``top.model_path``, ``train.output_dir``, ``train.config_path``); the default keeps the
        model path and output dir so that "Load arguments" restores a runnable set.
        """
        values = self.ui_values()
        skip = set(BOARD_SKIP_IDS) if not include_paths else {"top.lang", "train.config_path"}
        return {k: v for k, v in values.items() if k not in skip}

    # -- what the trainer reads -------------------------------------------------------------------
    def to_training_args(self) -> dict[str, Any]:
        """``training_args.yaml`` as the Web UI writes it for these settings."""
        if not self.output_dir:
            raise ValueError("TrainSpec.output_dir is empty; the train plan sets it to the run folder")
        ft = self.finetuning_type
        compute_type = self.resolved_compute_type()
        args: dict[str, Any] = dict(
            stage=self.stage,
            do_train=True,
            model_name_or_path=str(self.model_path),
            cache_dir=None,
            preprocessing_num_workers=int(self.preprocessing_num_workers),
            finetuning_type=ft,
            template=self.template,
            rope_scaling=None,
            flash_attn="auto",
            use_unsloth=False,
            enable_liger_kernel=False,
            dataset_dir=str(self.dataset_dir),
            dataset=",".join(self.dataset),
            cutoff_len=int(self.cutoff_len),
            learning_rate=float(self.learning_rate),
            num_train_epochs=float(self.num_train_epochs),
            max_samples=int(self.max_samples),
            per_device_train_batch_size=int(self.per_device_train_batch_size),
            gradient_accumulation_steps=int(self.gradient_accumulation_steps),
            lr_scheduler_type=self.lr_scheduler_type,
            max_grad_norm=float(self.max_grad_norm),
            logging_steps=int(self.logging_steps),
            save_steps=int(self.save_steps),
            warmup_steps=int(self.warmup_steps),
            neftune_noise_alpha=None,
            packing=False,
            neat_packing=False,
            train_on_prompt=False,
            mask_history=False,
            resize_vocab=False,
            use_llama_pro=False,
            enable_thinking=True,
            report_to=self.report_to,
            use_galore=False,
            use_apollo=False,
            use_badam=False,
            use_swanlab=False,
            output_dir=str(self.output_dir),
            fp16=compute_type == "fp16",
            bf16=compute_type == "bf16",
            pure_bf16=compute_type == "pure_bf16",
            plot_loss=bool(self.plot_loss),
            trust_remote_code=True,
            ddp_timeout=180000000,
            include_num_input_tokens_seen=True,
        )
        args.update(self._extra_args())
        if self.quantization_bit is not None:
            args["quantization_bit"] = int(self.quantization_bit)
            args["quantization_method"] = self.quantization_method
            args["double_quantization"] = True
        if args["finetuning_type"] == "freeze":
            args["freeze_trainable_layers"] = UI_DEFAULTS["train.freeze_trainable_layers"]
            args["freeze_trainable_modules"] = UI_DEFAULTS["train.freeze_trainable_modules"]
            args["freeze_extra_modules"] = None
        if args["finetuning_type"] == "lora":
            args["lora_rank"] = int(self.lora_rank)
            args["lora_alpha"] = int(self.lora_alpha)
            args["lora_dropout"] = self.lora_dropout
            args["loraplus_lr_ratio"] = None
            args["create_new_adapter"] = False
            args["use_rslora"] = False
            args["use_dora"] = False
            args["pissa_init"] = False
            args["pissa_convert"] = False
            args["lora_target"] = self.lora_target or "all"
            args["additional_target"] = None
        if self.stage in ("dpo", "kto"):
            args["pref_beta"] = UI_DEFAULTS["train.pref_beta"]
            args["pref_ftx"] = UI_DEFAULTS["train.pref_ftx"]
            args["pref_loss"] = UI_DEFAULTS["train.pref_loss"]
        if self.val_size > 1e-6 and self.stage != "ppo":
            args["val_size"] = self.val_size
            args["eval_strategy"] = "steps"
            args["eval_steps"] = args["save_steps"]
            args["per_device_eval_batch_size"] = args["per_device_train_batch_size"]
        return clean_args(args)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_args(args: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's ``_clean_cmd``: drop None / False / "" except a few keys it always keeps."""
    return {k: v for k, v in args.items() if k in _NO_SKIP_KEYS or (v is not None and v is not False and v != "")}


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text the way LLaMA-Factory writes it (``yaml.safe_dump``: keys sorted)."""
    import yaml

    return yaml.safe_dump(data, allow_unicode=True)


_TEMPLATE_RE = None


def known_templates() -> list[str]:
    """The chat template names the installed LLaMA-Factory registers, read from its source text
    (``data/template.py``) without importing it. Empty when LLaMA-Factory is not installed."""
    global _TEMPLATE_RE
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("llamafactory")
    if spec is None or not spec.submodule_search_locations:
        return []
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / "template.py"
    try:
        text = source.read_text(encoding="utf-8")
    except OSError:
        return []
    _TEMPLATE_RE = _TEMPLATE_RE or re.compile(r"^register_template\(\s*name=\"([^\"]+)\"", re.M)
    return sorted(set(_TEMPLATE_RE.findall(text)))


def nearest(name: str, choices: list[str], n: int = 5) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, choices, n=n, cutoff=0.4)
