"""Template text (exact), question cutting, token-length cache, synthetic generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_qwenlong.data.prompt import build_prompt, prompt_lengths, question_from_prompt, templated_length
from nemo_qwenlong.data.synth import KINDS, synth_item, synth_items
from nemo_qwenlong.rewards.hybrid import HybridReward, RewardItem

EXPECTED = (
    "Please read the following text and answer the question below.\n"
    "\n"
    "<text>\n"
    "The document.\n"
    "</text>\n"
    "\n"
    "What is it?\n"
    "\n"
    'Format your response as follows: "Therefore, the answer is (insert answer here)".'
)


def test_template_text_exact() -> None:
    assert build_prompt("  The document.\n", "\nWhat is it?  ") == EXPECTED
    assert build_prompt("d", "q", choice=True).endswith('"The correct answer is (insert answer here)".')


# The quick-start template of Tongyi-Zhiwen/Qwen-Doc QwenLong-L1.5/README.md (commit 12489b07), as written there;
# the README fills it with template.replace('$DOC$', context.strip()).replace('$Q$', question.strip()).
L15_README_TEMPLATE = """Please read the following text and answer the question below.

<text>
$DOC$
</text>

$Q$

Format your response as follows: "Therefore, the answer is (insert answer here)"."""


def test_l15_template_is_the_readme_text_and_the_l1_one() -> None:
    document, question = "  Para one.\nPara two.\n", "\nHow many paras?  "
    readme = L15_README_TEMPLATE.replace("$DOC$", document.strip()).replace("$Q$", question.strip())
    assert build_prompt(document, question, template="qwenlong-l1.5") == readme
    assert build_prompt(document, question, template="qwenlong-l1") == readme  # no difference, char for char
    # the judge's question cut (first </text> .. the format line) still finds the question
    assert question_from_prompt(readme) == "How many paras?"
    with pytest.raises(ValueError, match=r"data.prompt_template='l2' is not one of qwenlong-l1, qwenlong-l1.5"):
        build_prompt("d", "q", template="l2")


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from nemo_qwenlong.backends.hf.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_lengths_use_the_chat_template_and_are_cached(tiny_tokenizer, tmp_path: Path) -> None:
    items = list(synth_items(6, min_tokens=30, max_tokens=200, seed=1))
    raw = len(tiny_tokenizer(items[0].messages[0]["content"])["input_ids"])
    assert templated_length(tiny_tokenizer, items[0].messages) > raw  # template tokens counted
    cache = tmp_path / "train.parquet.lengths.json"
    first = prompt_lengths(items, tiny_tokenizer, cache_path=cache)
    assert cache.exists() and first[items[0].item_id] == templated_length(tiny_tokenizer, items[0].messages)
    table = json.loads(cache.read_text())
    [fingerprint] = table
    table[fingerprint][items[1].item_id][1] = 999_999  # a cached value is used, not recomputed
    cache.write_text(json.dumps(table))
    assert prompt_lengths(items, tiny_tokenizer, cache_path=cache)[items[1].item_id] == 999_999


def test_synth_is_deterministic_and_covers_every_kind() -> None:
    a = list(synth_items(8, min_tokens=100, max_tokens=400, seed=9))
    b = list(synth_items(8, min_tokens=100, max_tokens=400, seed=9))
    assert a == b and a != list(synth_items(8, min_tokens=100, max_tokens=400, seed=10))
    assert synth_item(9, 5, min_tokens=100, max_tokens=400) == a[5]  # item i depends only on (seed, i)
    assert {it.kind for it in a} == {"qa", "math", "choice"} and len(KINDS) == 4
    long_item = synth_item(1, 0, min_tokens=30000, max_tokens=30000)
    assert long_item.data_source.endswith("_20000_40000")
    words = len(long_item.messages[0]["content"].split())
    assert 30000 / 1.3 * 0.95 < words < 30000 / 1.3 * 1.1


def test_synth_gold_is_answerable_from_the_document() -> None:
    # A response that states the gold answer scores 1 with the released-format reward rules.
    reward = HybridReward(judge=None, judge_when="never", require_think=True, docmath_decimals=3, max_failure_rate=0.5)
    items = list(synth_items(8, min_tokens=100, max_tokens=300, seed=4))
    responses = []
    for it in items:
        answer = it.answers[0]
        assert answer.rstrip(".").split()[-1] in it.messages[0]["content"] or it.kind != "qa"
        text = f"The correct answer is ({answer})" if it.kind == "choice" else f"Therefore, the answer is {answer}."
        responses.append(RewardItem(f"<think>..</think>{text}", it.ground_truth, it.data_source))
    results, _ = reward.score(responses)
    assert all(r.score == 1.0 for r in results)


def test_synth_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="min_tokens <= max_tokens"):
        list(synth_items(3, min_tokens=500, max_tokens=100, seed=1))


def test_question_cut_from_prompt() -> None:
    prompt = ("Please read the following text and answer the question below.\n\n<text>\nDoc </text> inside\n</text>"
              "\n\nWho won?\n\nFormat your response as follows: \"Therefore, the answer is (insert answer here)\".")
    # between the FIRST </text> and the format line (released behaviour)
    assert question_from_prompt(prompt) == "inside\n</text>\n\nWho won?"
    assert question_from_prompt("plain question") == "plain question"
