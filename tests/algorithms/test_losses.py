"""Policy loss: hand-computed values, gradients, metrics, options and edge cases (spec §4.3)."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_qwenlong.algorithms.losses import count_sequences, count_tokens, kl_penalty, policy_loss

CLIP = dict(clip_low=0.2, clip_high=0.28)  # clip range [0.8, 1.28]


def _case():
    # row 0: Â=+1, ratios 1.0, 1.3, 0.5 (all valid); row 1: Â=−1, ratios 0.7, 1.5, (masked)
    ratios = torch.tensor([[1.0, 1.3, 0.5], [0.7, 1.5, 1.0]])
    logp = ratios.log().requires_grad_(True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return logp, old, adv, mask


def test_token_level_hand_values() -> None:
    logp, old, adv, mask = _case()
    # ℓ = max(−Â·ρ, −Â·clip(ρ)):
    # row 0: ρ=1.0 → −1; ρ=1.3 → max(−1.3, −1.28) = −1.28 (high clip); ρ=0.5 → max(−0.5, −0.8) = −0.5
    # row 1: ρ=0.7 → max(0.7, 0.8) = 0.8 (low clip); ρ=1.5 → max(1.5, 1.28) = 1.5
    # Σ = −1 − 1.28 − 0.5 + 0.8 + 1.5 = −0.48; / 5 tokens = −0.096
    loss, m = policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=5)
    assert loss.item() == pytest.approx(-0.096, abs=1e-6)
    assert m["clip_frac_high"] == pytest.approx(1 / 5)  # row 0, ρ=1.3
    assert m["clip_frac_low"] == pytest.approx(1 / 5)  # row 1, ρ=0.7
    assert m["ratio_mean"] == pytest.approx(1.0)  # (1 + 1.3 + 0.5 + 0.7 + 1.5) / 5
    assert (m["ratio_min"], m["ratio_max"]) == (pytest.approx(0.5), pytest.approx(1.5))
    assert m["num_tokens"] == 5.0
    # approx_kl = mean(ρ − 1 − log ρ) over the 5 valid tokens
    expect_kl = sum(r - 1 - math.log(r) for r in (1.0, 1.3, 0.5, 0.7, 1.5)) / 5
    assert m["approx_kl"] == pytest.approx(expect_kl, rel=1e-5)


def test_token_level_gradient() -> None:
    logp, old, adv, mask = _case()
    loss, _ = policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=5)
    loss.backward()
    # ∂ℓ/∂logπ = −Â·ρ on the unclipped branch, 0 where the clip is active, 0 when masked; / 5
    # row 0: −1.0/5, 0, −0.5/5 ; row 1: 0, +1.5/5, 0
    expect = torch.tensor([[-0.2, 0.0, -0.1], [0.0, 0.3, 0.0]])
    torch.testing.assert_close(logp.grad, expect, atol=1e-6, rtol=0)


def test_sequence_level_hand_values() -> None:
    logp, old, adv, mask = _case()
    # row means: (−1 − 1.28 − 0.5)/3 = −0.926667; (0.8 + 1.5)/2 = 1.15; Σ = 0.223333; / 2 sequences
    loss, _ = policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=None, num_global_sequences=2, level="sequence")
    assert loss.item() == pytest.approx((-2.78 / 3 + 1.15) / 2, abs=1e-6)


def test_dual_clip_caps_negative_advantage_loss() -> None:
    ratios = torch.tensor([[4.0, 2.0]])
    adv = torch.tensor([-1.0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # without dual clip: max(ρ, clip(ρ)) = 4, 2 → mean 3.0; with c=3: min(4, 3)=3, min(2, 3)=2 → mean 2.5
    plain, _ = policy_loss(ratios.log(), torch.zeros(1, 2), adv, mask, **CLIP, num_global_tokens=2)
    dual, m = policy_loss(ratios.log(), torch.zeros(1, 2), adv, mask, **CLIP, num_global_tokens=2, dual_clip=3.0)
    assert plain.item() == pytest.approx(3.0)
    assert dual.item() == pytest.approx(2.5)
    assert m["dual_clip_frac"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss(ratios.log(), torch.zeros(1, 2), adv, mask, **CLIP, num_global_tokens=2, dual_clip=0.5)


def test_kl_estimators_hand_values() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    # k1 = logπ − logπ_ref = log 2 = 0.693147
    # k3 = e^(ref−logπ) − (ref−logπ) − 1 = 0.5 + 0.693147 − 1 = 0.193147
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(0.693147, abs=1e-6)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.193147, abs=1e-6)
    with pytest.raises(ValueError, match="accepted: k1, k3"):
        kl_penalty(logp, ref, "k2")  # type: ignore[arg-type]


def test_kl_and_entropy_terms_enter_the_loss() -> None:
    mask = torch.ones(1, 2, dtype=torch.bool)
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    ent = torch.tensor([[1.0, 3.0]])
    zero_adv = torch.zeros(1)
    # Â = 0 → pg = 0; loss = 0.1·k3 − 0.01·mean(H) = 0.1·0.193147 − 0.01·2 = −0.000685
    loss, m = policy_loss(
        logp, logp.detach(), zero_adv, mask, **CLIP, num_global_tokens=2,
        ref_logprobs=ref, kl_coef=0.1, entropy=ent, entropy_coef=0.01,
    )
    assert loss.item() == pytest.approx(0.1 * 0.193147 - 0.02, abs=1e-6)
    assert m["kl_ref"] == pytest.approx(0.193147, abs=1e-6) and m["entropy"] == pytest.approx(2.0)


def test_kl_coef_zero_never_needs_the_reference() -> None:
    logp, old, adv, mask = _case()
    loss, m = policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=5, kl_coef=0.0, ref_logprobs=None)
    assert "kl_ref" not in m and torch.isfinite(loss)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_logprobs"):
        policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=5, kl_coef=0.1)
    with pytest.raises(ValueError, match="entropy_coef > 0 needs the token entropy"):
        policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=5, entropy_coef=0.1)


def test_missing_or_zero_denominator_is_an_error() -> None:
    logp, old, adv, mask = _case()
    with pytest.raises(ValueError, match="num_global_tokens is required"):
        policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=None)
    with pytest.raises(ValueError, match="num_global_sequences must be > 0"):
        policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=None, num_global_sequences=0, level="sequence")
    with pytest.raises(ValueError, match="same \\[N, T\\] shape"):
        policy_loss(logp, old[:, :2], adv, mask, **CLIP, num_global_tokens=5)


def test_empty_mask_rows_and_all_padding_batch() -> None:
    logp = torch.randn(3, 4).requires_grad_(True)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])
    loss, _ = policy_loss(logp, logp.detach() - 0.1, torch.tensor([1.0, 5.0, -1.0]), mask, **CLIP,
                          num_global_tokens=count_tokens(mask))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert torch.all(logp.grad[1] == 0)  # the empty row gets no gradient
    seq, _ = policy_loss(logp, logp.detach(), torch.ones(3), mask, **CLIP, num_global_tokens=None,
                         num_global_sequences=count_sequences(mask), level="sequence")
    assert count_sequences(mask) == 2 and torch.isfinite(seq)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    lp = torch.randn(2, 3, requires_grad=True)
    loss0, m0 = policy_loss(lp, lp.detach(), torch.ones(2), empty, **CLIP, num_global_tokens=7)
    loss0.backward()
    assert loss0.item() == 0.0 and m0["num_tokens"] == 0.0 and m0["ratio_mean"] == 0.0
    assert torch.all(lp.grad == 0)


def test_single_token_responses() -> None:
    # ρ = 1.5, Â = +1 → clipped at 1.28: ℓ = −1.28; ρ = 0.9, Â = −1 → max(0.9, 0.9) = 0.9
    logp = torch.log(torch.tensor([[1.5], [0.9]]))
    loss, _ = policy_loss(logp, torch.zeros(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1, dtype=torch.bool),
                          **CLIP, num_global_tokens=2)
    assert loss.item() == pytest.approx((-1.28 + 0.9) / 2, abs=1e-6)


def test_bf16_inputs_match_float32() -> None:
    torch.manual_seed(0)
    lp32 = (torch.randn(4, 6) * 0.1 - 1).requires_grad_(True)
    old = lp32.detach() + 0.05 * torch.randn(4, 6)
    adv = torch.randn(4)
    mask = torch.rand(4, 6) > 0.2
    lp16 = lp32.detach().bfloat16().requires_grad_(True)
    l32, _ = policy_loss(lp32, old, adv, mask, **CLIP, num_global_tokens=count_tokens(mask))
    l16, _ = policy_loss(lp16, old.bfloat16(), adv.bfloat16(), mask, **CLIP, num_global_tokens=count_tokens(mask))
    l32.backward()
    l16.backward()
    assert l16.dtype == torch.float32 and lp16.grad.dtype == torch.bfloat16
    assert l16.item() == pytest.approx(l32.item(), abs=2e-2)
    torch.testing.assert_close(lp16.grad.float(), lp32.grad, atol=1e-2, rtol=0.05)


def _far_from_reference_batch():
    """Valid tokens near the reference; masked positions 100 nats away from it in both directions
    (the reference is filled with 0 off the response, as the sequence layout does)."""
    logp = torch.tensor([[-1.0, -0.5, -100.0], [-2.0, 0.0, -100.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    ref = torch.where(mask, torch.tensor([[-1.5, -0.2, 0.0], [-1.0, 0.0, 0.0]]), 0.0)
    ref[1, 1] = -100.0  # the other direction: policy 0, reference −100
    return logp, ref, mask


def test_k3_kl_far_off_the_response_gives_finite_gradients_and_unchanged_values() -> None:
    logp, ref, mask = _far_from_reference_batch()
    old = torch.where(mask, logp.detach(), 0.0)  # ρ = 1 on valid tokens
    adv = torch.tensor([1.0, -1.0])
    loss, m = policy_loss(logp, old, adv, mask, **CLIP, num_global_tokens=3, ref_logprobs=ref, kl_coef=0.1,
                          kl_estimator="k3")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all(), logp.grad
    assert torch.all(logp.grad[~mask] == 0)
    # valid tokens, d = ref − logπ: ℓ = −Â·1 + 0.1·(e^d − d − 1); ∂ℓ/∂logπ = −Â + 0.1·(1 − e^d); / 3 tokens
    valid = [(0, 0, 1.0), (0, 1, 1.0), (1, 0, -1.0)]
    d = {(i, j): float(ref[i, j] - logp.detach()[i, j]) for i, j, _ in valid}
    k3 = {k: math.exp(v) - v - 1 for k, v in d.items()}
    assert loss.item() == pytest.approx(sum(-a + 0.1 * k3[i, j] for i, j, a in valid) / 3, abs=1e-6)
    assert m["kl_ref"] == pytest.approx(sum(k3.values()) / 3, abs=1e-6)
    for i, j, a in valid:
        assert logp.grad[i, j].item() == pytest.approx((-a + 0.1 * (1 - math.exp(d[i, j]))) / 3, abs=1e-6)


def test_kl_penalty_is_zero_off_the_mask_and_clamps_before_exp() -> None:
    logp, ref, mask = _far_from_reference_batch()
    for estimator in ("k1", "k3"):
        kl = kl_penalty(logp, ref, estimator, mask=mask)
        kl.sum().backward()
        assert torch.all(kl[~mask] == 0) and torch.isfinite(logp.grad).all(), (estimator, logp.grad)
        logp.grad = None
    # a valid token 50 nats from the reference: e^50 − 51 is clamped to 10, with no gradient and no inf
    lp = torch.tensor([-50.0], requires_grad=True)
    kl = kl_penalty(lp, torch.zeros(1), "k3", mask=torch.ones(1, dtype=torch.bool))
    kl.backward()
    assert kl.item() == 10.0 and lp.grad.item() == 0.0


def test_masked_positions_with_an_overflowing_ratio_stay_finite() -> None:
    # masked position: logπ = 0 while the behaviour log-prob there is −100, so e^(logπ − old) = inf
    logp = torch.tensor([[-1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -100.0]])
    mask = torch.tensor([[True, False]])
    loss, m = policy_loss(logp, old, torch.tensor([-1.0]), mask, **CLIP, num_global_tokens=1)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and m["ratio_max"] == pytest.approx(1.0)  # Â=−1, ρ=1 → ℓ = 1
    assert logp.grad.tolist() == [[pytest.approx(1.0), 0.0]]


def test_metrics_reduced_over_ranks_are_the_whole_batch_metrics() -> None:
    """Two "ranks" (row 0 | row 1 plus an all-padding micro-batch), their `metric_totals` summed and
    maxed as the all-reduce does: the metrics of the whole batch in one call, entropy included with
    entropy_coef 0 (token-weighted, not a mean of per-rank means)."""
    from nemo_qwenlong.algorithms.losses import merge_micro_metrics, metric_totals, metrics_from_totals

    logp, old, adv, mask = _case()
    ent = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 9.0]])  # 9.0 is masked
    kw = dict(**CLIP, num_global_tokens=5, entropy=ent)

    def micro(rows: list[int], m: torch.Tensor = mask) -> dict[str, float]:
        loss, out = policy_loss(logp[rows], old[rows], adv[rows], m[rows], **{**kw, "entropy": ent[rows]})
        return out | {"loss": float(loss)}

    whole = micro([0, 1])
    rank_a = [micro([0])]  # 3 tokens: entropy mean 2, ratios 1.0, 1.3, 0.5
    rank_b = [micro([1]), micro([1], torch.zeros_like(mask))]  # 2 tokens: entropy mean 4.5, ratios 0.7, 1.5
    (sa, ma), (sb, mb) = metric_totals(rank_a), metric_totals(rank_b)
    reduced = metrics_from_totals(sa + sb, torch.maximum(ma, mb))
    # entropy: (1 + 2 + 3 + 4 + 5) / 5 = 3 (the mean of the two ranks' means would be 3.25)
    assert reduced["entropy"] == pytest.approx(3.0) and rank_a[0]["entropy"] == pytest.approx(2.0)
    assert (reduced["ratio_min"], reduced["ratio_max"]) == (pytest.approx(0.5), pytest.approx(1.5))
    assert reduced["num_tokens"] == 5.0 and reduced["loss"] == pytest.approx(-0.096, abs=1e-6)
    assert reduced.keys() == whole.keys()
    for key, value in whole.items():
        assert reduced[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert merge_micro_metrics(rank_a + rank_b) == reduced


def test_metrics_with_no_valid_token_anywhere_are_zero() -> None:
    from nemo_qwenlong.algorithms.losses import merge_micro_metrics

    logp, old, adv, mask = _case()
    _, m = policy_loss(logp, old, adv, torch.zeros_like(mask), **CLIP, num_global_tokens=1)
    merged = merge_micro_metrics([m | {"loss": 0.0}])
    assert merged["num_tokens"] == 0.0 and merged["ratio_min"] == merged["ratio_max"] == merged["approx_kl"] == 0.0
    assert "entropy" not in merged and merge_micro_metrics([{"num_tokens": 3.0, "loss": 0.5}]) == {"num_tokens": 3.0,
                                                                                                   "loss": 0.5}
