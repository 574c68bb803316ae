"""Merge a LoRA adapter into its base model (LLaMA-Factory's own export), then prove it: the merged
model must give the adapter's greedy answers for a few prompts.

The merged folder gets ``finetune_merge.json`` (base, adapter, template, dtype, check result), so
``invoke infer`` / ``invoke verify`` know its template without flags. A quantized base is refused
before anything is loaded (merging into 4/8-bit weights is lossy and LLaMA-Factory rejects it).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from finetune import fileio
from finetune.errors import UserError
from finetune.inference.resolve import ModelRef, resolve
from finetune.layout import Layout
from finetune.rundir import MERGE_RECORD, MERGED_DIR, MODEL_CONFIG

DEFAULT_CHECK_PROMPTS = ["Hello!", "What can you do?", "Tell me one short fact."]
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def _model_config(folder: str | Path) -> dict[str, Any]:
    """A model's config.json ({} when absent or unreadable)."""
    try:
        cfg = fileio.read_json(Path(folder) / MODEL_CONFIG, {})
    except (UserError, OSError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def base_dtype(base: str) -> str:
    """The dtype the base model was saved in (config.json), float32 when unknown."""
    cfg = _model_config(base)
    value = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return _DTYPES.get(str(value), "float32")


def check_not_quantized(ref: ModelRef) -> None:
    """Refuse a quantized base (bitsandbytes / GPTQ / AWQ ... weights) with the fix."""
    quant = _model_config(ref.base).get("quantization_config")
    if quant:
        method = quant.get("quant_method", "quantized") if isinstance(quant, dict) else "quantized"
        raise UserError(
            f"the base model {ref.base} is quantized ({method}); an adapter cannot be merged into quantized weights",
            where=str(Path(ref.base) / MODEL_CONFIG),
            details=["merging needs the full-precision (fp16 / bf16 / fp32) weights of the same model; "
                     "QLoRA adapters trained on a 4/8-bit base merge into its unquantized original"],
            fix="pass the unquantized base: invoke merge RUN --base PATH_TO_FULL_PRECISION_MODEL",
        )


def check_prompts_for(ref: ModelRef, n: int) -> list[str]:
    """A few user prompts from the run's own dataset (else generic ones)."""
    from finetune.data.register import read_dataset_info

    prompts: list[str] = []
    if ref.dataset and ref.dataset_dir:
        try:
            info = read_dataset_info(Path(ref.dataset_dir) / "dataset_info.json")
            first = info[ref.dataset.split(",")[0]]
            file = Path(ref.dataset_dir) / first["file_name"]
            with file.open(encoding="utf-8") as fh:
                for line in fh:
                    rec = fileio.parse_json(line, str(file))
                    msgs = rec.get("messages") or rec.get("conversations") or []
                    users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
                    if users and isinstance(users[0], str) and users[0] not in prompts:
                        prompts.append(users[0])
                    if len(prompts) >= n:
                        break
        except Exception:  # noqa: BLE001 - any trouble: fall back to generic prompts
            prompts = []
    return prompts[:n] if len(prompts) >= n else (prompts + DEFAULT_CHECK_PROMPTS)[:n]


def merge(layout: Layout, ref: str, out_dir: str | None = None, base: str | None = None, template: str | None = None,
          dtype: str | None = None, n_check: int = 3, prompts: list[str] | None = None, force: bool = False,
          max_new_tokens: int = 32) -> dict[str, Any]:
    """Merge ``ref``'s adapter into its base; returns a summary (paths, dtype, check result)."""
    model_ref = resolve(layout, ref, base=base, template=template)
    if not model_ref.adapter:
        raise UserError(f"{model_ref.source} is already a full model ({model_ref.kind}); nothing to merge",
                        where=model_ref.base, fix="invoke infer --run " + model_ref.source + " (use it as is)")
    check_not_quantized(model_ref)
    out = Path(out_dir).expanduser().resolve() if out_dir else (
        Path(model_ref.run_dir) / MERGED_DIR if model_ref.run_dir and model_ref.kind == "run"
        else Path(model_ref.adapter) / MERGED_DIR)
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} already exists and is not empty", where=str(out),
                        fix="pass --out NEW_FOLDER, or --force to replace it")
    chosen = _DTYPES.get(dtype or "", None) if dtype else base_dtype(model_ref.base)
    if chosen is None:
        raise UserError(f"unknown dtype {dtype!r}", where="--dtype", fix="use float32, float16 or bfloat16")

    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    from llamafactory.train.tuner import export_model

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        export_model({
            "model_name_or_path": model_ref.base, "adapter_name_or_path": model_ref.adapter,
            "template": model_ref.template, "finetuning_type": model_ref.finetuning_type,
            "export_dir": str(tmp), "export_size": 5, "export_device": "cpu", "infer_dtype": chosen,
            "trust_remote_code": True,
        })
    except (ValueError, OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"merge failed: {str(err).splitlines()[0][:300]}", where=model_ref.adapter,
                        fix="check the base model matches the adapter (invoke runs), or pass --base PATH") from None
    merge_s = time.perf_counter() - t0
    record = {"base": model_ref.base, "adapter": model_ref.adapter, "template": model_ref.template,
              "run_id": model_ref.run_id, "run_dir": model_ref.run_dir, "dtype": chosen,
              "merged_at": datetime.now().isoformat(timespec="seconds")}
    fileio.atomic_write_text(tmp / MERGE_RECORD, fileio.dumps_json(record, indent=2) + "\n")
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)

    result: dict[str, Any] = {"merged": str(out), "dtype": chosen, "merge_s": round(merge_s, 2), **record}
    if n_check > 0:
        result["check"] = equivalence_check(model_ref, out, prompts or check_prompts_for(model_ref, n_check), chosen,
                                            max_new_tokens)
        record["check"] = result["check"]
        fileio.atomic_write_text(out / MERGE_RECORD, fileio.dumps_json(record, indent=2) + "\n")
        if not result["check"]["equal"]:
            diffs = [f"{c['prompt']!r}: adapter {c['adapter']!r} != merged {c['merged']!r}"
                     for c in result["check"]["cases"] if not c["equal"]]
            raise UserError("the merged model does not answer like the adapter", where=str(out),
                            details=diffs + [f"the merged files were kept in {out} for inspection"],
                            fix="merge in float32 (--dtype float32), or report the model type")
    return result


def equivalence_check(model_ref: ModelRef, merged: Path, prompts: list[str], dtype: str,
                      max_new_tokens: int = 32) -> dict[str, Any]:
    """Greedy answers of adapter vs merged model for ``prompts`` (same dtype, same template)."""
    from finetune.inference.chat import generate_answers, load

    adapter_chat = load(model_ref, infer_dtype=dtype)
    want = generate_answers(adapter_chat, prompts, max_new_tokens=max_new_tokens)
    adapter_chat.close()
    del adapter_chat
    merged_ref = ModelRef(base=str(merged), adapter=None, template=model_ref.template, kind="merged",
                          source=str(merged), run_dir=model_ref.run_dir, run_id=model_ref.run_id,
                          finetuning_type="full")
    merged_chat = load(merged_ref, infer_dtype=dtype)
    got = generate_answers(merged_chat, prompts, max_new_tokens=max_new_tokens)
    merged_chat.close()
    cases = [{"prompt": p, "adapter": a, "merged": b, "equal": a == b} for p, a, b in zip(prompts, want, got, strict=True)]
    return {"equal": all(c["equal"] for c in cases), "prompts": len(cases), "cases": cases}
