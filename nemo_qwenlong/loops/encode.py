"""Token ids for prompts (the chat template with the generation prompt) and SFT responses (+ EOS)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def response_ids(tokenizer: Any, text: str) -> list[int]:
    """The response's tokens followed by EOS (what the policy learns to end with)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)
