"""Pure pieces of rollouts: refit buckets, the agreement metrics and stop, sampling-settings checks, version pin."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.rollout.generator import Sample, SamplingSettings, in_prompt_order
from nemo_qwenlong.rollout.refit import EngineTrainerMismatch, agreement, buckets, check_agreement, probe_rows


def test_buckets_respect_the_byte_budget_in_order() -> None:
    named = [(f"t{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 100, 1])]  # float32: 4 B each
    groups = list(buckets(named, max_bytes=80))
    assert [[n for n, _ in g] for g in groups] == [["t0", "t1"], ["t2"], ["t3"], ["t4"], ["t5"]]  # 40+40 fit; 120 alone
    with pytest.raises(ValueError, match=">= 1 byte"):
        list(buckets(named, 0))


def test_agreement_metrics_and_threshold() -> None:
    engine = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    trainer = torch.tensor([[-1.1, -2.0, 9.0], [-0.3, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    m = agreement(engine, trainer, mask)
    assert m["logprob_abs_diff_mean"] == pytest.approx(0.1) and m["logprob_abs_diff_max"] == pytest.approx(0.2)
    assert m["prob_ratio_mean"] == pytest.approx((torch.exp(torch.tensor([0.1, 0.0, -0.2])).mean().item()))
    assert m["probe_tokens"] == 3
    check_agreement(m, None)
    check_agreement(m, 0.2)
    with pytest.raises(EngineTrainerMismatch, match="mean \\|diff\\| 0.1 > rollout.logprob_max_abs_diff=0.05"):
        check_agreement(m, 0.05)
    with pytest.raises(ValueError, match="at least one valid token"):
        agreement(engine, trainer, torch.zeros_like(mask))


def test_sampling_settings_are_validated_and_results_ordered() -> None:
    with pytest.raises(ValueError, match="SamplingSettings.top_p=0"):
        SamplingSettings(top_p=0)
    s = Sample((1, 2), (-0.1, -0.2), "length")
    assert s.truncated and not Sample((1,), (-0.1,), "stop").truncated
    assert in_prompt_order([(1, [s]), (0, [])], 2) == [[], [s]]
    with pytest.raises(RuntimeError, match="no samples for prompts \\[1\\]"):
        in_prompt_order([(0, [s])], 2)
    rows = probe_rows([[1, 2], [3], [4]], [[Sample((), (), "stop")], [s], [s]], 1)
    assert rows.prompt_ids.tolist() == [[3]] and rows.response_ids.tolist() == [[1, 2]]


def test_unsupported_vllm_versions_are_refused_by_name() -> None:
    from nemo_qwenlong.backends.vllm.version import check_vllm_version

    check_vllm_version("0.32.0")
    check_vllm_version("0.33.0+cu130")
    with pytest.raises(RuntimeError, match="vLLM 0.34.1 is installed; .* written against vLLM 0.32.0 / 0.33.0"):
        check_vllm_version("0.34.1")
