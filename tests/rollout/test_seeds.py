"""Per-sample seeds (issue 22.3): sample j of the prompt at position i is seeded seed + i·n + j on both
backends, so no two samples of a round share a seed. With the old rule (prompt i seeded seed + i, vLLM
adding j) two identical prompts drew shifted-identical samples: prompt i sample j = prompt i+1 sample j-1."""

from __future__ import annotations

from nemo_qwenlong.rollout.generator import SamplingSettings, prompt_seed, sample_seed

PROMPT = [5, 17, 99, 3, 250, 41]


def test_every_sample_of_a_round_has_its_own_seed() -> None:
    assert prompt_seed(100, 3, 8) == 124  # 100 + 3·8
    assert [sample_seed(100, 3, 8, j) for j in (0, 7)] == [124, 131] and sample_seed(100, 4, 8, 0) == 132
    prompts, n, seed = 384, 8, 12345  # one released generation round: 3,072 samples
    seeds = {sample_seed(seed, i, n, j) for i in range(prompts) for j in range(n)}
    assert len(seeds) == prompts * n == 3072
    old = {seed + i + j for i in range(prompts) for j in range(n)}  # the old rule: seed + i, vLLM + j
    assert len(old) == prompts + n - 1 == 391


def _shifted_pairs(groups: list, n: int) -> list[tuple]:
    """(prompt 0 sample j, prompt 1 sample j-1) token ids for j = 1..n-1."""
    return [(groups[0][j].token_ids, groups[1][j - 1].token_ids) for j in range(1, n)]


def test_vllm_identical_prompts_no_longer_draw_shifted_identical_samples(vllm_engine) -> None:  # noqa: ANN001
    s = SamplingSettings(n=4, temperature=1.0, max_tokens=10, seed=21)
    groups = vllm_engine.generate([PROMPT, PROMPT], s)
    assert groups == vllm_engine.generate([PROMPT, PROMPT], s)  # same seed, same samples
    assert all(a != b for a, b in _shifted_pairs(groups, 4))  # old rule: all equal (same seed 21 + j)
    assert len({x.token_ids for g in groups for x in g}) == 8  # 8 samples, 8 seeds, 8 different draws
    # prompt 1 sample 2 is what a lone request seeded 21 + 1·4 + 2 draws: independent of batch and split
    alone = vllm_engine.generate([PROMPT], SamplingSettings(n=1, temperature=1.0, max_tokens=10, seed=27))
    assert alone[0][0].token_ids == groups[1][2].token_ids


def test_transformers_backend_follows_the_same_rule(hf_generator) -> None:  # noqa: ANN001
    s = SamplingSettings(n=2, temperature=1.0, max_tokens=6, seed=21)
    groups = hf_generator.generate([PROMPT, PROMPT], s)
    assert groups == hf_generator.generate([PROMPT, PROMPT], s)
    assert all(a != b for a, b in _shifted_pairs(groups, 2))
    alone = hf_generator.generate([PROMPT], SamplingSettings(n=1, temperature=1.0, max_tokens=6, seed=23))
    assert alone[0][0] == groups[1][0]  # prompt 1 sample 0: seed 21 + 1·2 + 0


def test_rounds_and_neighbouring_steps_draw_disjoint_seed_ranges():
    """A 384-prompt × 8-sample round seeds base .. base + 3071; the next round of the step and the
    rounds of the next step must not re-use any of them (consecutive bases would: round r+1 = round r
    shifted by one)."""
    from nemo_qwenlong.loops.rl import ROUND_SEED_SPAN, round_seed

    width = 384 * 8
    for seed in (1, 2026):
        spans = {(step, r): round_seed(seed, step, r) for step in range(1, 41) for r in range(4)}
        assert len(set(spans.values())) == len(spans)
        assert all(0 <= b and b + width <= ROUND_SEED_SPAN + 2**24 for b in spans.values())
        for (step, r), base in spans.items():
            for other in ((step, r + 1), (step + 1, 0), (step + 1, r)):
                if other in spans:
                    assert abs(spans[other] - base) >= width, (seed, step, r, other)
        assert round_seed(seed, 3, 1) == round_seed(seed, 3, 1)  # a resumed run draws the same seeds
