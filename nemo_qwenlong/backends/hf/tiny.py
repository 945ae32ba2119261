"""Tiny Qwen2 checkpoints built offline: a byte-level BPE tokenizer trained on a few KB of text and a
random-weight `Qwen2ForCausalLM` from `TinyArch`. For tests, the CPU default and benchmarks; nothing is
downloaded. vLLM's CPU attention needs head_dim in {32, 64, ...}: the default TinyArch has 128/4 = 32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from nemo_qwenlong.config.training import TinyArch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_CORPUS = (
    "Please read the following text and answer the question below. <text> </text> "
    "Format your response as follows: Therefore, the answer is (insert answer here). "
    "Problem: Answer 1: Answer 2: The answers agree. They are equivalent, not equivalent. "
    "The correct answer is (A) (B) (C) (D). <think> </think> 0 1 2 3 4 5 6 7 8 9 12.5 percent million "
    "Paris London Berlin Rome the of and a to in is was for on that with as by at from"
)


def build_tiny_tokenizer(
    out_dir: str | Path, *, vocab_size: int = 512, corpus: Iterable[str] | None = None,
    extra_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ChatML specials, save it to `out_dir`, and return it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else [DEFAULT_CORPUS] * 20, trainer)
    if extra_tokens:
        tok.add_tokens([AddedToken(t, normalized=False) for t in extra_tokens])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def tiny_qwen2_config(arch: TinyArch, vocab_size: int, eos_token_id: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=arch.hidden_size, intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads, max_position_embeddings=arch.max_position_embeddings,
        rope_theta=arch.rope_theta, rms_norm_eps=arch.rms_norm_eps, tie_word_embeddings=arch.tie_word_embeddings,
        eos_token_id=eos_token_id, bos_token_id=None, pad_token_id=None, torch_dtype="float32",
    )


def build_tiny_qwen2(
    out_dir: str | Path, arch: TinyArch | None = None, *, seed: int = 0,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> Qwen2ForCausalLM:
    """A random-weight Qwen2 (and its tokenizer) saved to `out_dir` as safetensors; returns the model."""
    out_dir = Path(out_dir)
    arch = arch or TinyArch()
    tokenizer = tokenizer or build_tiny_tokenizer(out_dir, vocab_size=min(arch.vocab_size, 512))
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = tiny_qwen2_config(arch, max(arch.vocab_size, len(tokenizer)), tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(config).float().eval()
    model.save_pretrained(out_dir)
    return model
