"""Toy document QA: a random token "document", a question token, and a one-token answer.

Vocabulary: 0 PAD, 1 EOS, 2 ASK_FIRST, 3 ASK_LAST, 4 SEP, then `num_content` content tokens.
Prompt = document + [SEP, question]; the answer is the document's first or last token. The rule
reward reads the answer as the first response token; ending with EOS early is left to the overlong
shaping, so the run also shows dynamic sampling filtering on the *unshaped* correctness.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PAD, EOS, ASK_FIRST, ASK_LAST, SEP = 0, 1, 2, 3, 4
FIRST_CONTENT = 5


@dataclass(frozen=True)
class ToyItem:
    item_id: str
    prompt: list[int]
    answer: int


class ToyDocQA:
    def __init__(self, num_content: int = 16) -> None:
        self.num_content = num_content

    @property
    def vocab_size(self) -> int:
        return FIRST_CONTENT + self.num_content

    def sample(self, rng: random.Random, min_prompt: int, max_prompt: int, item_id: str) -> ToyItem:
        """An item whose prompt length lies in (min_prompt, max_prompt] (the stage's band)."""
        low = max(min_prompt + 1, 3)
        if low > max_prompt:
            raise ValueError(f"no prompt length fits ({min_prompt}, {max_prompt}]: prompts need >= 3 tokens")
        doc = [rng.randrange(FIRST_CONTENT, self.vocab_size) for _ in range(rng.randint(low, max_prompt) - 2)]
        ask = rng.choice((ASK_FIRST, ASK_LAST))
        return ToyItem(item_id, doc + [SEP, ask], doc[0] if ask == ASK_FIRST else doc[-1])


def is_correct(response: list[int], answer: int) -> bool:
    """The first response token is the answer (an empty response is never correct)."""
    return bool(response) and response[0] == answer
