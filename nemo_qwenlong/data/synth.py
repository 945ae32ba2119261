"""Synthetic long-document QA in the DocQA-RL-1.6K layout (tests, benchmarks, the tiny CPU default).

Each item is a document of a requested length: filler prose, with the facts the question needs
and distractor facts of the same shape about other entities, at random positions. Four kinds:
- single-hop: "In which city was P born?"
- two-hop: "In which country was P born?" (P born in C; C lies in K)
- numeric: the combined revenue of two companies in a year (DocMath-style number)
- multiple choice: the single-hop question with four options
Gold answers use the released ground-truth format ("Therefore, the answer is X." /
"The correct answer is (B)"). `data_source` carries the released length-bucket suffix.
Deterministic: item i depends only on (seed, i).

Lengths are in *estimated* tokens (TOKENS_PER_WORD per word, about what Qwen's BPE gives on
English prose). Exact templated lengths come from `data.prompt.prompt_lengths` with the real tokenizer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Literal

from nemo_qwenlong.data.prompt import build_prompt
from nemo_qwenlong.data.schema import DataError, DocQAItem

TOKENS_PER_WORD = 1.3
MIN_DOCUMENT_TOKENS = 80  # the facts a question needs (up to ~50 words: the numeric kind's five revenue lines)
KINDS = ("single_hop", "two_hop", "numeric", "choice")
LengthProfile = Literal["uniform", "docqa"]
_SYLLABLES = ("ka", "lo", "mir", "ven", "sa", "tor", "el", "dri", "no", "ba", "qui", "ster", "an", "ro", "vi", "zel")
_SUBJECTS = ("The committee", "The report", "A later review", "The board", "Local historians", "The survey",
             "An earlier study", "The archive", "The council", "Several witnesses")
_VERBS = ("noted", "described", "questioned", "summarised", "recorded", "examined", "reported", "compared")
_OBJECTS = ("the annual figures", "the new regulations", "a change in policy", "the quarterly results",
            "the planning documents", "the regional budget", "the shipping schedule", "the audit findings",
            "the research programme", "the market conditions")
_TAILS = ("in some detail.", "without drawing firm conclusions.", "for the second time that year.",
          "as part of a wider effort.", "after long discussion.", "with considerable care.")


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def _filler(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"


def length_bucket(tokens: int) -> str:
    if tokens <= 20000:
        return "0_20000"
    return "20000_40000" if tokens <= 40000 else "40000_plus"


def _target_tokens(rng: random.Random, lo: int, hi: int, profile: LengthProfile) -> int:
    if profile == "uniform":
        return rng.randint(lo, hi)
    # log-normal around the released set's mean (~11K input tokens) with a long tail, clipped to [lo, hi]
    return int(min(hi, max(lo, rng.lognormvariate(math.log(8000), 0.8))))


def _document(rng: random.Random, facts: list[str], target_tokens: int) -> str:
    """Facts plus filler totalling int(target_tokens / TOKENS_PER_WORD) words (the last filler sentence
    is cut to fit), so the document's estimated length stays inside the requested bounds."""
    filler_words = int(target_tokens / TOKENS_PER_WORD) - len(" ".join(facts).split())
    sentences: list[str] = []
    while filler_words > 0:
        words = _filler(rng).split()[:filler_words]
        filler_words -= len(words)
        sentences.append(" ".join(words).rstrip(".") + ".")
    for fact in facts:
        sentences.insert(rng.randrange(len(sentences) + 1), fact)
    paragraphs = [" ".join(sentences[i:i + 6]) for i in range(0, len(sentences), 6)]
    return "\n\n".join(paragraphs)


def synth_item(seed: int, index: int, *, min_tokens: int, max_tokens: int, profile: LengthProfile = "uniform") -> DocQAItem:
    rng = random.Random(f"{seed}-{index}")
    kind = KINDS[index % len(KINDS)]
    target = _target_tokens(rng, max(min_tokens, MIN_DOCUMENT_TOKENS), max_tokens, profile)
    people = [_name(rng, 3) for _ in range(4)]
    cities = [_name(rng, 2) + "ville" for _ in range(4)]
    countries = [_name(rng, 2) + "ia" for _ in range(4)]
    born = [f"{p} was born in {c}." for p, c in zip(people, cities)]
    located = [f"{c} is a city in {k}." for c, k in zip(cities, countries)]
    choice = False
    if kind == "single_hop":
        facts, question, answer, source = born, f"In which city was {people[0]} born?", cities[0], "synth_qa"
    elif kind == "two_hop":
        facts, question, answer, source = born + located, f"In which country was {people[0]} born?", countries[0], "synth_qa"
    elif kind == "numeric":
        firms = [_name(rng, 2) + " Ltd" for _ in range(4)]
        year = rng.randint(1990, 2024)
        revenue = [round(rng.uniform(1, 900), 1) for _ in firms]
        facts = [f"In {year}, {f} reported revenue of {r} million dollars." for f, r in zip(firms, revenue)]
        facts += [f"In {year - 1}, {firms[0]} reported revenue of {round(revenue[0] * 0.8, 1)} million dollars."]
        question = f"What was the combined revenue, in million dollars, of {firms[0]} and {firms[1]} in {year}?"
        answer, source = f"{round(revenue[0] + revenue[1], 1)}", "synth_docmath"
    else:
        order = rng.sample(range(4), 4)
        letters = "ABCD"
        options = "\n".join(f"({letters[j]}) {cities[k]}" for j, k in enumerate(order))
        facts, question = born, f"In which city was {people[0]} born?\n{options}"
        answer, source, choice = letters[order.index(0)], "synth_long_toc_choices", True
    document = _document(rng, facts, target)
    gold = f"The correct answer is ({answer})" if choice else f"Therefore, the answer is {answer}."
    prompt = build_prompt(document, question, choice=choice)
    return DocQAItem(f"synth_{seed}_{index:06d}", f"{source}_{length_bucket(target)}",
                     ({"role": "user", "content": prompt},), question, gold, (answer,))


def synth_items(n: int, *, min_tokens: int, max_tokens: int, seed: int, profile: LengthProfile = "uniform") -> Iterator[DocQAItem]:
    """`n` items with documents of [min_tokens, max_tokens] estimated tokens; DataError for bounds it cannot honour."""
    if n < 1:
        raise DataError(f"n={n}: the number of items must be >= 1")
    if min_tokens < 1 or max_tokens < min_tokens or max_tokens < MIN_DOCUMENT_TOKENS:
        raise DataError(f"min_tokens={min_tokens}, max_tokens={max_tokens}: need 1 <= min_tokens <= max_tokens and "
                        f"max_tokens >= {MIN_DOCUMENT_TOKENS} (the estimated tokens of the facts a question needs)")
    for i in range(n):
        yield synth_item(seed, i, min_tokens=min_tokens, max_tokens=max_tokens, profile=profile)
