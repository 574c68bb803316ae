"""Data: ChatML rules (chatml), check, register, convert, stats (heavy: tokenizer), synth."""
