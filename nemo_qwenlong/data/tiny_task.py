"""The tiny CPU default's task: short synthetic document QA that a 2-layer Qwen2 can learn in minutes.

Each document is filler sentences with `facts` sentences "<person> was born in <city>." at random
places; the question asks for one person's city (the released QA prompt template, `data.prompt`).
People and cities come from fixed inventories that the tiny tokenizer holds as single tokens, so
answering is a retrieval over the document, not spelling. Gold answers use the released answer
sentence ("Therefore, the answer is X."), and the SFT response is
`<think>\n<person> was born in <city>.\n</think>\n\nTherefore, the answer is <city>.` (the released
answer format after a short reasoning trace).

Two tasks (opt-in, `data.synthetic.choice_every`, for task-balanced sampling): every k-th training,
validation and SFT item asks the same question as multiple choice (`data_source` `tiny_choice_0_20000`,
options (A)-(D), gold "The correct answer is (X)."); the document is the QA item's. Held-out items stay QA.

Held-out split: every (person, city) pair is assigned to train or held-out by a hash
(`HELDOUT_EVERY`), so a held-out question is never asked with its answer in training, and held-out
documents come from their own seed stream. `tests/data/test_tiny_task.py` checks both.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from nemo_qwenlong.data.prompt import build_prompt
from nemo_qwenlong.data.schema import DocQAItem

PEOPLE = tuple(f"Per{n}" for n in ("ak", "bo", "ci", "du", "ev", "fa", "gu", "hi", "io", "ju", "ko", "lu", "ma", "ne",
                                   "ol", "pu", "qi", "ra", "si", "tu", "ur", "vo", "wi", "xa", "ye", "zo", "al", "be",
                                   "ca", "da", "ed", "fi"))
CITIES = tuple(f"{n}ton" for n in ("Ar", "Bel", "Cor", "Dun", "El", "Far", "Gil", "Har", "Ist", "Jor", "Kel", "Lor",
                                   "Mer", "Nor", "Orn", "Pel", "Quin", "Ros", "Sel", "Tor", "Ul", "Ver", "Wes", "Yor"))
FILLER = ("The weather was mild that year.", "Many visitors came to the market.", "The river flooded in spring.",
          "A new road was built.", "The school opened a library.", "Farmers sold grain in the town.",
          "The council met every month.", "A bridge crossed the valley.")
HELDOUT_EVERY = 5  # one (person, city) pair in five is held out
Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class TinyTaskSpec:
    """One band of the task: how many facts and filler sentences a document has."""

    facts: int
    min_filler: int
    max_filler: int
    template: str = "qwenlong-l1"  # data.prompt_template


def is_heldout_pair(person: str, city: str) -> bool:
    digest = hashlib.sha1(f"{person}|{city}".encode()).digest()
    return digest[0] % HELDOUT_EVERY == 0


def _pairs(rng: random.Random, k: int, split: Split) -> list[tuple[str, str]]:
    """k facts with distinct people and cities; the first (the asked one) belongs to `split`."""
    while True:
        people, cities = rng.sample(PEOPLE, k), rng.sample(CITIES, k)
        if is_heldout_pair(people[0], cities[0]) == (split == "heldout"):
            return list(zip(people, cities))


def fact(person: str, city: str) -> str:
    return f"{person} was born in {city}."


def tiny_item(seed: int, index: int, spec: TinyTaskSpec, split: Split, band: str, *, choice: bool = False) -> DocQAItem:
    rng = random.Random(f"tiny-{split}-{band}-{seed}-{index}")
    pairs = _pairs(rng, spec.facts, split)
    sentences = [rng.choice(FILLER) for _ in range(rng.randint(spec.min_filler, spec.max_filler))]
    for person, city in pairs:
        sentences.insert(rng.randrange(len(sentences) + 1), fact(person, city))
    person, city = pairs[0]
    if choice:  # after every draw of the QA item, so the document is the same
        return _choice_item(rng, f"tiny_{split}_{band}_{seed}_{index:05d}", " ".join(sentences), person, city, spec)
    prompt = build_prompt(" ".join(sentences), f"In which city was {person} born?", template=spec.template)
    return DocQAItem(f"tiny_{split}_{band}_{seed}_{index:05d}", "tiny_qa_0_20000",
                     ({"role": "user", "content": prompt},), f"In which city was {person} born?",
                     f"Therefore, the answer is {city}.", (city,))


def _choice_item(rng: random.Random, item_id: str, document: str, person: str, city: str,
                 spec: TinyTaskSpec) -> DocQAItem:
    options = rng.sample([c for c in CITIES if c != city], 3)
    options.insert(rng.randrange(4), city)
    letter = "ABCD"[options.index(city)]
    question = f"In which city was {person} born?\n" + "\n".join(f"({k}) {c}" for k, c in zip("ABCD", options))
    prompt = build_prompt(document, question, choice=True, template=spec.template)
    return DocQAItem(item_id, "tiny_choice_0_20000", ({"role": "user", "content": prompt},), question,
                     f"The correct answer is ({letter}).", (letter,))


def tiny_items(n: int, *, seed: int, spec: TinyTaskSpec, split: Split, band: str,
               choice_every: int = 0) -> Iterator[DocQAItem]:
    """n items; with choice_every=k > 0, items k-1, 2k-1, … are multiple choice."""
    for i in range(n):
        yield tiny_item(seed, i, spec, split, band, choice=choice_every > 0 and i % choice_every == choice_every - 1)


def sft_response(item: DocQAItem) -> str:
    """The warm-up SFT target: a one-line reasoning trace, then the released answer sentence."""
    first, *options = item.question.split("\n")
    person = first.removeprefix("In which city was ").removesuffix(" born?")
    if options:  # multiple choice: "(B) Belton" lines, the gold letter in answers
        letter = item.answers[0]
        city = next(o[4:] for o in options if o.startswith(f"({letter}) "))
        return f"<think>\n{fact(person, city)}\n</think>\n\nThe correct answer is ({letter})."
    city = item.answers[0]
    return f"<think>\n{fact(person, city)}\n</think>\n\nTherefore, the answer is {city}."


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the template, filler and answer phrases."""
    sample = [tiny_item(0, i, TinyTaskSpec(3, 2, 4), "train", "corpus") for i in range(40)]
    return [it.messages[0]["content"] + "\n" + sft_response(it) for it in sample] * 3


def tokenizer_extra_tokens() -> tuple[str, ...]:
    """People, cities and the think tags as single tokens (a space before a name stays its own token)."""
    return ("<think>", "</think>") + PEOPLE + CITIES
