"""Token log-probs and entropy from vocab-parallel logits, chunked over tokens. Torch only.

Each tensor-parallel rank holds logits for its vocabulary slice [vocab_start, vocab_start + V_local).
Per chunk of `chunk_size` tokens the chunk alone is cast to fp32; the softmax statistics are combined
over the group with two collectives (MAX of the row max; one SUM of [Σe^(x−m), target logit, Σe^(x−m)·x]):

    log Z = m + log Σ_v e^(x_v − m)           log p(target) = x_target − log Z
    H     = log Z − E_p[x],  E_p[x] = Σ_v e^(x_v − m)·x_v / Σ_v e^(x_v − m)

Backward recomputes each chunk's probabilities from the saved per-token log Z (no collective):

    ∂ log p(target)/∂x_v = 1[v = target] − p_v        ∂H/∂x_v = p_v·(E_p[x] − x_v)

So neither pass materialises a [tokens × vocab] fp32 tensor (60K × 152K × 4 B = 36 GB); the largest
temporaries are a few [chunk_size × V_local] fp32 tensors. The logits' own gradient has their dtype.
`temperature` divides the logits first (the sampling distribution's log-probs).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

DEFAULT_CHUNK = 4096


def token_logprobs(
    logits: Tensor,  # [..., V_local] vocab-parallel logits (any float dtype)
    targets: Tensor,  # [...] int64 global vocabulary ids
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    temperature: float = 1.0,
    with_entropy: bool = False,
    vocab_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """fp32 log p(target) of shape `targets.shape`, and the token entropy when asked (else None).
    `vocab_size`: ids at or above it are vocabulary padding (for TP) and get no probability."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {list(logits.shape)} and targets {list(targets.shape)} disagree before the vocab dim")
    if chunk_size < 1 or temperature <= 0:
        raise ValueError(f"chunk_size must be >= 1 and temperature > 0, got {chunk_size} and {temperature}")
    flat = logits.reshape(-1, logits.shape[-1])
    local = flat.shape[-1]
    padded = 0 if vocab_size is None else max(0, min(local, vocab_start + local - vocab_size))
    lp, ent = _ChunkedLogProbs.apply(flat, targets.reshape(-1), group, vocab_start, chunk_size,
                                     1.0 / temperature, with_entropy, padded)
    return lp.view(targets.shape), (ent.view(targets.shape) if with_entropy else None)


def _all_reduce(t: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> None:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)


def _chunk_values(logits: Tensor, s: int, chunk: int, inv_temp: float, padded: int) -> Tensor:
    """fp32 tempered logits of one chunk; the last `padded` (vocabulary padding) columns at -inf."""
    x = logits[s : s + chunk].float() * inv_temp
    if padded:
        x[:, -padded:] = float("-inf")
    return x


def _local_targets(targets: Tensor, vocab_start: int, local_vocab: int) -> tuple[Tensor, Tensor]:
    local = targets - vocab_start
    here = (local >= 0) & (local < local_vocab)
    return local.clamp(0, local_vocab - 1), here


class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, group, vocab_start, chunk, inv_temp, with_entropy, padded):  # noqa: ANN001
        n, v = logits.shape
        logz = torch.empty(n, dtype=torch.float32, device=logits.device)
        logp = torch.empty_like(logz)
        mean_x = torch.empty_like(logz) if with_entropy else None
        for s in range(0, n, chunk):
            x = _chunk_values(logits, s, chunk, inv_temp, padded)
            m = x.max(dim=-1).values
            _all_reduce(m, dist.ReduceOp.MAX, group)
            e = torch.exp(x - m.unsqueeze(-1))
            local, here = _local_targets(targets[s : s + chunk], vocab_start, v)
            sums = torch.stack([e.sum(-1), torch.where(here, x.gather(-1, local.unsqueeze(-1)).squeeze(-1), 0.0),
                                torch.where(e > 0, e * x, 0.0).sum(-1) if with_entropy else torch.zeros_like(m)])
            del e
            _all_reduce(sums, dist.ReduceOp.SUM, group)
            logz[s : s + chunk] = m + torch.log(sums[0])
            logp[s : s + chunk] = sums[1] - logz[s : s + chunk]
            if with_entropy:
                mean_x[s : s + chunk] = sums[2] / sums[0]
        ctx.save_for_backward(logits, targets, logz, *( [mean_x] if with_entropy else []))
        ctx.meta = (vocab_start, chunk, inv_temp, with_entropy, padded)
        ctx.set_materialize_grads(False)
        entropy = logz - mean_x if with_entropy else torch.empty(0, device=logits.device)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):  # noqa: ANN001
        logits, targets, logz, *rest = ctx.saved_tensors
        vocab_start, chunk, inv_temp, with_entropy, padded = ctx.meta
        grad = torch.empty_like(logits)
        n, v = logits.shape
        for s in range(0, n, chunk):
            x = _chunk_values(logits, s, chunk, inv_temp, padded)
            p = torch.exp(x - logz[s : s + chunk].unsqueeze(-1))
            g = torch.zeros_like(p)
            if grad_logp is not None:
                gl = grad_logp[s : s + chunk].float()
                g -= p * gl.unsqueeze(-1)
                local, here = _local_targets(targets[s : s + chunk], vocab_start, v)
                g.scatter_add_(-1, local.unsqueeze(-1), (gl * here).unsqueeze(-1))
            if with_entropy and grad_ent is not None:
                ge = grad_ent[s : s + chunk].float().unsqueeze(-1)
                g += torch.where(p > 0, ge * p * (rest[0][s : s + chunk].unsqueeze(-1) - x), 0.0)
            grad[s : s + chunk] = (g * inv_temp).to(grad.dtype)
        return grad, None, None, None, None, None, None, None
