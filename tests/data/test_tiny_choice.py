"""The tiny task's opt-in second task (`data.synthetic.choice_every`): multiple-choice renderings that load,
route and score as choice items, over the same documents; off by default."""

from __future__ import annotations

from pathlib import Path

from nemo_qwenlong.config.pipeline import SyntheticDataConfig
from nemo_qwenlong.data.task import task_of
from nemo_qwenlong.data.loaders import load_items, write_docqa_parquet
from nemo_qwenlong.data.tiny_task import TinyTaskSpec, sft_response, tiny_items
from nemo_qwenlong.rewards.hybrid import HybridReward, RewardItem

SPEC = TinyTaskSpec(2, 1, 3)


def test_every_kth_item_is_multiple_choice_over_the_same_document(tmp_path: Path) -> None:
    assert SyntheticDataConfig().choice_every == 0  # the default tiny task has one task
    qa = list(tiny_items(6, seed=1, spec=SPEC, split="train", band="b"))
    mixed = list(tiny_items(6, seed=1, spec=SPEC, split="train", band="b", choice_every=3))
    assert [it.data_source for it in mixed] == ["tiny_qa_0_20000"] * 2 + ["tiny_choice_0_20000"] + [
        "tiny_qa_0_20000"] * 2 + ["tiny_choice_0_20000"]
    assert [it for i, it in enumerate(mixed) if i % 3 != 2] == [it for i, it in enumerate(qa) if i % 3 != 2]
    doc = lambda it: it.prompt_text.split("</text>")[0]  # noqa: E731
    assert doc(mixed[2]) == doc(qa[2]) and mixed[2].ground_truth in {f"The correct answer is ({x})." for x in "ABCD"}
    write_docqa_parquet(mixed, tmp_path / "t.parquet")
    loaded, _ = load_items(tmp_path / "t.parquet", "docqa_parquet")
    assert loaded == mixed and {task_of(it.data_source, "kind") for it in loaded} == {"qa", "choice"}
    reward = HybridReward(judge=None, judge_when="never", require_think=True, docmath_decimals=3, max_failure_rate=0.5)
    results, _ = reward.score([RewardItem(sft_response(it), it.ground_truth, it.data_source, it.question)
                               for it in mixed])
    assert [r.score for r in results] == [1.0] * 6
    wrong = next(x for x in "ABCD" if x != mixed[2].answers[0])
    results, _ = reward.score([RewardItem(f"<think>\n</think>\n\nThe correct answer is ({wrong}).",
                                          mixed[2].ground_truth, mixed[2].data_source)])
    assert results[0].score == 0.0
