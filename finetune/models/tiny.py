"""A deterministic tiny Qwen2-architecture model + byte-level BPE tokenizer, made in seconds.

LLaMA-Factory trains it with ``template: qwen`` on the CPU. Users point the same flows at a real
model path; tests and the demo use this one because nothing can be downloaded in CI.

Optionally (``pretrain_on``) the fresh model gets a short full-parameter pass over some ChatML
conversations so that it knows a little of the data's language before LoRA (the demo uses it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# The Qwen2 ChatML chat template (what `template: qwen` produces, with its default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A small bilingual corpus so the tokenizer has real merges even without data.
_BASE_CORPUS = [
    "You are a helpful assistant.", "Hello! How can I help you today?", "What is the capital of France?",
    "The capital of France is Paris.", "Please explain the answer step by step.", "Thank you!",
    "你好！有什么可以帮你的吗？", "请用一句话解释。", "中国的首都是北京。", "谢谢你的帮助。",
    "system", "user", "assistant", "function_call", "observation",
    "0123456789 + - * / = ( ) [ ] { } : ; , . ! ? ' \"",
]

MOE = "moe"
DENSE = "dense"


def _corpus_from_chatml(files: Sequence[Path], limit: int = 5000) -> list[str]:
    texts: list[str] = []
    for file in files:
        with Path(file).open(encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= limit:
                    break
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                for msg in record.get("messages", []) if isinstance(record, dict) else []:
                    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                        texts.append(msg["content"])
    return texts


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer with Qwen's special tokens and chat template."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic merges
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048
    return fast


def make_tiny_model(
    out_dir: Path,
    kind: str = DENSE,
    seed: int = 0,
    corpus_files: Sequence[Path] = (),
    extra_corpus: Sequence[str] = (),
    pretrain_on: Sequence[Path] = (),
    pretrain_steps: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 1024,
) -> Path:
    """Write a tiny Qwen2 (or Qwen2-MoE with ``kind='moe'``) model + tokenizer to ``out_dir``.

    Deterministic: the same arguments give byte-identical weights and tokenizer files.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    corpus = list(_BASE_CORPUS) + list(extra_corpus) + _corpus_from_chatml([*corpus_files, *pretrain_on])
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    common = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, torch_dtype="float32",
    )
    if kind == MOE:
        from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

        config = Qwen2MoeConfig(intermediate_size=hidden_size * 2, moe_intermediate_size=hidden_size,
                                shared_expert_intermediate_size=hidden_size, num_experts=4,
                                num_experts_per_tok=2, decoder_sparse_step=1, **common)
        model = Qwen2MoeForCausalLM(config)
    elif kind == DENSE:
        config = Qwen2Config(intermediate_size=hidden_size * 2, **common)
        model = Qwen2ForCausalLM(config)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; use 'dense' or 'moe'")

    if pretrain_on and pretrain_steps > 0:
        _pretrain(model, tokenizer, pretrain_on, pretrain_steps, seed)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = common["eos_token_id"]
    model.generation_config.pad_token_id = common["pad_token_id"]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny_model.json").write_text(json.dumps({
        "kind": kind, "seed": seed, "hidden_size": hidden_size, "layers": layers, "vocab_size": len(tokenizer),
        "pretrain_on": [Path(p).name for p in pretrain_on], "pretrain_steps": pretrain_steps,
        "template": "qwen", "parameters": sum(p.numel() for p in model.parameters()),
    }, indent=2), encoding="utf-8")
    return out_dir


def _pretrain(model, tokenizer, files: Sequence[Path], steps: int, seed: int, lr: float = 3e-3) -> None:
    """A short full-parameter pass over whole conversations (ChatML rendered with the template)."""
    import torch

    texts = []
    for file in files:
        with Path(file).open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    msgs = json.loads(line)["messages"]
                    texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
                except (ValueError, KeyError, TypeError):
                    continue
    if not texts:
        return
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    batch = 8
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch,), generator=gen).tolist()
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=256)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
