"""PPO-style clipped policy loss with DAPO clip-higher and global normalisation (spec §4.3). Pure torch.

Normalisation is never invented here: the caller counts, over the *whole optimiser step* (every
micro-batch on every data-parallel rank), the valid tokens (`level="token"`) or the non-empty
sequences (`level="sequence"`) and passes the count in. Summing the per-micro-batch losses (and
gradients) then gives exactly the full-batch value however the batch is split (design.md §4.1).

Per valid token t of response i (ρ = exp(logπ_θ − logπ_old), Â broadcast over the response):
    ℓ_pg  = max(−Â·ρ, −Â·clip(ρ, 1−clip_low, 1+clip_high))
    dual clip (c > 1, Â < 0 only): ℓ_pg = min(ℓ_pg, −Â·c)
    ℓ     = ℓ_pg + kl_coef·KL_t − entropy_coef·H_t
Off the response (mask false) both log-ratios are set to 0 before any `exp` (see `masked_log_ratio`),
so filler log-probs there can neither overflow nor send NaN into the backward pass.
Aggregation:
    token:    loss = Σ_i Σ_t ℓ_{i,t} / num_global_tokens                   (DAPO, Σ_i|o_i| over the step)
    sequence: loss = Σ_i ( Σ_t ℓ_{i,t} / |o_i| ) / num_global_sequences   (GRPO 1/|o_i|; empty rows add 0)

Metrics (floats, under no_grad) are means over this micro-batch's valid tokens, so the caller
combines micro-batches and ranks weighting by `num_tokens` (`metric_totals` → all-reduce →
`metrics_from_totals`: Σ per-token value / global valid tokens; ratio_max a maximum, ratio_min a minimum):
    clip_frac_low   tokens with Â<0 and ρ < 1−clip_low (low clip active, no gradient) / valid tokens
    clip_frac_high  tokens with Â>0 and ρ > 1+clip_high (high clip active, no gradient) / valid tokens
    dual_clip_frac  tokens where the dual-clip bound is active / valid tokens
    ratio_mean, ratio_min, ratio_max   over valid tokens
    approx_kl       mean of ρ − 1 − log ρ (k3 estimate of KL(π_old‖π_θ) on π_old's samples) over valid tokens
    kl_ref          mean of the reference KL term over valid tokens (only when kl_coef > 0)
    entropy         mean token entropy over valid tokens (only when entropy is given)
    num_tokens      valid tokens in this micro-batch (the weight above)
An all-padding micro-batch gives loss 0 (still connected to the graph) and zero metrics.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KL_CLAMP = 10.0  # verl's low_var_kl clamp of the k3 value
LOG_RATIO_CLAMP = 20.0  # verl's low_var_kl clamp of the log-ratio, applied before exp


def masked_log_ratio(numerator: Tensor, denominator: Tensor, mask: Tensor | None) -> Tensor:
    """numerator − denominator on valid tokens and exactly 0 elsewhere.

    Off the response the log-probs are fillers (0) or far apart, so `exp` of their difference can
    overflow; `torch.where` (not a multiplication by the mask) keeps those positions out of both the
    value and the backward pass, where `inf · 0` would give NaN.
    """
    diff = numerator - denominator
    return diff if mask is None else torch.where(mask.bool(), diff, 0.0)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: Literal["k1", "k3"] = "k3",
               mask: Tensor | None = None) -> Tensor:
    """Per-token KL(π_θ‖π_ref) estimate, 0 outside `mask`. With d = logπ_ref − logπ on valid tokens:
    k1 = −d; k3 = e^d' − d' − 1 clamped to ±10, where d' = clamp(d, ±20) (the clamp comes before `exp`,
    so no inf is formed; it never changes the value, which is clamped to 10 beyond |d| = 20 anyway)."""
    if estimator not in ("k1", "k3"):
        raise ValueError(f"unknown kl estimator {estimator!r}; accepted: k1, k3")
    diff = masked_log_ratio(ref_logprobs, logprobs, mask)
    if estimator == "k1":
        return -diff
    diff = torch.clamp(diff, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(diff) - diff - 1.0, min=-KL_CLAMP, max=KL_CLAMP)


def aggregate(
    per_token: Tensor,  # [N, T] float32
    mask: Tensor,  # [N, T] bool
    *,
    level: Literal["token", "sequence"],
    num_global_tokens: float | Tensor | None,
    num_global_sequences: float | Tensor | None,
    row_lengths: Tensor | None = None,
) -> Tensor:
    """Reduce a per-token loss with the caller's global denominator (see module docstring).

    `row_lengths` (sequence level only) replaces the per-row valid-token count taken from `mask`
    when the rows are split across ranks (context parallelism holds part of each row): [N] per row,
    or [N, T] each token's row length, when a tensor row holds several sequences (a packed layout).
    """
    m = mask.to(per_token.dtype)
    if level == "token":
        denom = _positive("num_global_tokens", num_global_tokens)
        return (per_token * m).sum() / denom
    if level == "sequence":
        denom = _positive("num_global_sequences", num_global_sequences)
        if row_lengths is not None and row_lengths.dim() == 2:  # per token: Σ_i mean_i = Σ_t x_t / len(row(t))
            return (per_token * m / row_lengths.to(m).clamp(min=1.0)).sum() / denom
        lengths = m.sum(dim=1) if row_lengths is None else row_lengths.to(m)
        per_seq = (per_token * m).sum(dim=1) / lengths.clamp(min=1.0)
        return per_seq.sum() / denom
    raise ValueError(f"unknown loss level {level!r}; accepted: token, sequence")


def _positive(name: str, value: float | Tensor | None) -> float | Tensor:
    if value is None:
        raise ValueError(f"{name} is required for this loss level (count it over the whole optimiser step)")
    if float(value) <= 0:
        raise ValueError(f"{name} must be > 0, got {float(value)} (no valid tokens in the optimiser step?)")
    return value


def policy_loss(
    logprobs: Tensor,  # [N, T] current policy token log-probs (requires grad)
    old_logprobs: Tensor,  # [N, T] behaviour policy token log-probs
    advantages: Tensor,  # [N] per sequence, or [N, T] per token
    mask: Tensor,  # [N, T] bool, valid response tokens
    *,
    clip_low: float,
    clip_high: float,
    num_global_tokens: float | Tensor | None,
    num_global_sequences: float | Tensor | None = None,
    level: Literal["token", "sequence"] = "token",
    dual_clip: float | None = None,
    ref_logprobs: Tensor | None = None,  # [N, T], needed only when kl_coef > 0
    kl_coef: float = 0.0,
    kl_estimator: Literal["k1", "k3"] = "k3",
    entropy: Tensor | None = None,  # [N, T] token entropy, needed only when entropy_coef > 0
    entropy_coef: float = 0.0,
    row_lengths: Tensor | None = None,  # [N] or [N, T] full valid row lengths when rows are split (see aggregate)
) -> tuple[Tensor, dict[str, float]]:
    """Clipped policy-gradient loss for one micro-batch; returns (scalar float32 loss, metrics)."""
    if logprobs.shape != old_logprobs.shape or logprobs.shape != mask.shape:
        raise ValueError(
            f"logprobs {list(logprobs.shape)}, old_logprobs {list(old_logprobs.shape)} and mask "
            f"{list(mask.shape)} must have the same [N, T] shape"
        )
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = mask.bool()
    logp = logprobs.float()
    adv = advantages.float()
    adv = adv.unsqueeze(1).expand_as(logp) if adv.dim() == 1 else adv
    log_ratio = masked_log_ratio(logp, old_logprobs.float(), mask)  # 0 off the response: ρ = 1 there
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(-adv * ratio, -adv * clipped)
    dual_active = torch.zeros_like(mask)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual_active = (adv < 0) & (pg > bound)
        pg = torch.where(adv < 0, torch.minimum(pg, bound), pg)
    per_token = pg
    kl = None
    if kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs")
        kl = kl_penalty(logp, ref_logprobs.float(), kl_estimator, mask=mask)
        per_token = per_token + kl_coef * kl
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the token entropy")
        per_token = per_token - entropy_coef * entropy.float()
    loss = aggregate(
        per_token, mask, level=level, num_global_tokens=num_global_tokens,
        num_global_sequences=num_global_sequences, row_lengths=row_lengths,
    )
    metrics = _metrics(ratio, log_ratio, adv, mask, clip_low, clip_high, dual_active, kl, entropy)
    return loss, metrics


@torch.no_grad()
def _metrics(
    ratio: Tensor,
    log_ratio: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float,
    clip_high: float,
    dual_active: Tensor,
    kl: Tensor | None,
    entropy: Tensor | None,
) -> dict[str, float]:
    n = int(mask.sum())
    out: dict[str, float] = {"num_tokens": float(n)}
    names = ["clip_frac_low", "clip_frac_high", "dual_clip_frac", "ratio_mean", "ratio_min", "ratio_max", "approx_kl"]
    if kl is not None:
        names.append("kl_ref")
    if entropy is not None:
        names.append("entropy")
    if n == 0:
        return out | {k: 0.0 for k in names}

    def mean(x: Tensor) -> float:
        return float(x.float()[mask].mean())

    r = ratio[mask]
    out |= {
        "clip_frac_low": mean((adv < 0) & (ratio < 1.0 - clip_low)),
        "clip_frac_high": mean((adv > 0) & (ratio > 1.0 + clip_high)),
        "dual_clip_frac": mean(dual_active),
        "ratio_mean": float(r.mean()),
        "ratio_min": float(r.min()),
        "ratio_max": float(r.max()),
        "approx_kl": mean(ratio - 1.0 - log_ratio),
    }
    if kl is not None:
        out["kl_ref"] = mean(kl)
    if entropy is not None:
        out["entropy"] = mean(entropy)
    return out


def count_tokens(mask: Tensor) -> int:
    """Valid tokens in one micro-batch; sum this over the optimiser step for `num_global_tokens`."""
    return int(mask.sum())


def count_sequences(mask: Tensor) -> int:
    """Non-empty rows in one micro-batch; sum over the optimiser step for `num_global_sequences`."""
    return int((mask.sum(dim=1) > 0).sum())


# Cross-rank reduction of the micro-batch metrics above: every mean metric travels as its token-weighted
# sum (Σ value·num_tokens) and is divided by the global token count at the end, so the logged value is
# Σ per-token value / global valid tokens, the same denominator the loss uses (design.md §4.1).
MEAN_METRICS = ("clip_frac_low", "clip_frac_high", "dual_clip_frac", "ratio_mean", "approx_kl", "kl_ref", "entropy")
SUMMED_METRICS = ("num_tokens", "loss")  # `loss` is already globally normalised: the step's loss is its sum
MAX_METRICS = (("ratio_max", 1.0), ("ratio_min", -1.0))  # reduced by MAX of sign·value: min x = −max(−x)


def metric_totals(per_micro: list[dict[str, float]]) -> tuple[Tensor, Tensor]:
    """One rank's micro-batch metrics as two float64 vectors for an all-reduce over ranks:
    `sums` (SUM): [Σ value·num_tokens per MEAN_METRICS, Σ per SUMMED_METRICS, micro-batches having each
    MEAN_METRICS key]; `maxima` (MAX): sign·value per MAX_METRICS over micro-batches with tokens, −inf
    when none. Keys and order are fixed, so every rank's vectors line up whatever it computed."""
    weights = [m.get("num_tokens", 0.0) for m in per_micro]
    weighted = [sum(m[k] * w for m, w in zip(per_micro, weights) if k in m) for k in MEAN_METRICS]
    summed = [sum(m.get(k, 0.0) for m in per_micro) for k in SUMMED_METRICS]
    present = [float(sum(k in m for m in per_micro)) for k in MEAN_METRICS]
    maxima = [max((sign * m[k] for m, w in zip(per_micro, weights) if w and k in m), default=float("-inf"))
              for k, sign in MAX_METRICS]
    return (torch.tensor(weighted + summed + present, dtype=torch.float64),
            torch.tensor(maxima, dtype=torch.float64))


def metrics_from_totals(sums: Tensor, maxima: Tensor) -> dict[str, float]:
    """The metrics dict from (all-reduced) `metric_totals` vectors: token-weighted means over every
    micro-batch counted, maxima as maxima, minima as minima; a metric no micro-batch produced is
    absent; with no valid token at all the means and extrema are 0."""
    n_mean = len(MEAN_METRICS)
    values = sums.tolist()
    weighted, summed, present = values[:n_mean], values[n_mean:n_mean + len(SUMMED_METRICS)], values[-n_mean:]
    out = dict(zip(SUMMED_METRICS, summed))
    total = out["num_tokens"]
    out |= {k: (w / total if total else 0.0) for k, w, p in zip(MEAN_METRICS, weighted, present) if p}
    for (k, sign), v in zip(MAX_METRICS, maxima.tolist()):
        if v != float("-inf"):
            out[k] = sign * v
        elif present[MEAN_METRICS.index("ratio_mean")]:  # the ratio metrics exist but no token was valid
            out[k] = 0.0
    return out


def merge_micro_metrics(per_micro: list[dict[str, float]]) -> dict[str, float]:
    """Combine one process's micro-batch metrics: token-weighted means, min of minima, max of maxima,
    summed `num_tokens` and `loss` (already globally normalised, so the sum is the step's loss).
    Keys other than the loss's metrics are dropped. Across ranks, all-reduce `metric_totals` instead."""
    if not per_micro:
        return {}
    return metrics_from_totals(*metric_totals(per_micro))
