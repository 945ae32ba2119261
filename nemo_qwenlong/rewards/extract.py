"""Answer extraction from model responses and ground-truth sentences (qwenlong-l1-spec.md §2.2, §8).

The same extractor reads the prediction and the ground truth (the released ground truths are answer
sentences such as "Therefore, the answer is 12.5."). Choices where the released code is
inconsistent, and ours:

| point | released code | ours (why) |
|---|---|---|
| no `</think>` | training: score 0; eval: use the whole response | `require_think` chooses: True in training (config `reward.require_think`), False in eval |
| QA phrase case | case-sensitive `the answer is` ("The answer is X" scores 0) | case-insensitive: the prompt asks for "Therefore, the answer is"; a capital T is still an answer |
| QA occurrence | last | last |
| math occurrence | first, case-insensitive, with a number right after the phrase | last occurrence that holds a number (a corrected answer comes last); agrees on every peer vector |
| multiple choice | case-sensitive `The correct answer is (X)`, then `… is X`, first | same two forms, case-insensitive phrase, last occurrence, letters A-D |

Nothing here evaluates model text; numbers are parsed by `rewards.numbers`.
"""

from __future__ import annotations

import re

THINK_END = "</think>"
# DeepSeek-R1 special tokens that can survive decoding (released docqa.py strips the same two).
SPECIAL_TOKENS = ("<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<|im_end|>", "<|endoftext|>")
_QA_PHRASE = re.compile(r"the answer is", re.IGNORECASE)
_CHOICE = re.compile(r"the correct answer is\s*(?:\(\s*([A-D])\s*\)|([A-D])\b)", re.IGNORECASE)


def strip_special_tokens(text: str) -> str:
    for token in SPECIAL_TOKENS:
        text = text.replace(token, "")
    return text


def answer_region(response: str | None, *, require_think: bool) -> str | None:
    """Text after the last `</think>`; without one, None (training) or the whole response (eval)."""
    if response is None:
        return None
    response = strip_special_tokens(response)
    if THINK_END in response:
        return response.rsplit(THINK_END, 1)[-1].strip()
    return None if require_think else response.strip()


def extract_qa_answer(text: str | None) -> str | None:
    """The text after the last 'the answer is' (any case), without markdown stars and end periods."""
    tails = qa_phrase_tails(text)
    if not tails:
        return None
    answer = tails[0].strip().strip(".").strip()
    return answer or None


def qa_phrase_tails(text: str | None) -> list[str]:
    """What follows each 'the answer is' (any case), last occurrence first (for the numeric extractor)."""
    if not text:
        return []
    text = strip_special_tokens(text.replace("*", ""))
    return [text[m.end():] for m in reversed(list(_QA_PHRASE.finditer(text)))]


def extract_choice(text: str | None) -> str | None:
    """The letter of the last 'The correct answer is (X)' / '… is X', upper-case, or None."""
    if not text:
        return None
    matches = list(_CHOICE.finditer(text.replace("*", "")))
    if not matches:
        return None
    last = matches[-1]
    return (last.group(1) or last.group(2)).upper()
