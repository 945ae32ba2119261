"""Token log-probs and entropy over a vocab-parallel output layer, chunked over tokens. Torch only.

Each tensor-parallel rank holds its vocabulary slice [vocab_start, vocab_start + V_local). Per chunk
of `chunk_size` tokens the chunk alone is cast to fp32; the softmax statistics are combined over
the group with two collectives (MAX of the row max; one SUM of [Σe^(x−m), target logit, Σe^(x−m)·x]):

    log Z = m + log Σ_v e^(x_v − m)           log p(target) = x_target − log Z
    H     = log Z − E_p[x],  E_p[x] = Σ_v e^(x_v − m)·x_v / Σ_v e^(x_v − m)

Backward recomputes each chunk's probabilities from the saved per-token log Z (no collective):

    ∂ log p(target)/∂x_v = 1[v = target] − p_v        ∂H/∂x_v = p_v·(E_p[x] − x_v)

Two entry points share that math:
- `token_logprobs(logits, ...)` takes the output layer's logits (held whole by the caller, and so
  is their gradient; the largest temporaries are a few [chunk_size × V_local] fp32 tensors);
- `fused_token_logprobs(hidden, weight, ...)` takes the final hidden states and this rank's output
  weight and makes each chunk's logits itself (x = hidden_chunk · Wᵀ), again in backward, so neither
  [tokens × V_local] logits nor their gradient ever exist: ∂/∂hidden = g·W, ∂/∂W = gᵀ·hidden per
  chunk, with g the chunk's logit gradient above. ∂/∂hidden is this rank's vocabulary slice's share;
  the caller sums it over the group (megatron's copy-to-tensor-parallel-region does).
`temperature` divides the logits first (the sampling distribution's log-probs); vocabulary padding
(ids ≥ `vocab_size`, added for TP) is left out of the softmax and gets zero gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

DEFAULT_CHUNK = 4096


def _check(batch_shape: torch.Size, targets: Tensor, chunk_size: int, temperature: float, what: str,
           last: str) -> None:
    if batch_shape != targets.shape:
        raise ValueError(f"{what} {list(batch_shape)} and targets {list(targets.shape)} disagree before the {last} dim")
    if chunk_size < 1 or temperature <= 0:
        raise ValueError(f"chunk_size must be >= 1 and temperature > 0, got {chunk_size} and {temperature}")


def _padded_columns(local_vocab: int, vocab_start: int, vocab_size: int | None) -> int:
    return 0 if vocab_size is None else max(0, min(local_vocab, vocab_start + local_vocab - vocab_size))


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
    _check(logits.shape[:-1], targets, chunk_size, temperature, "logits", "vocab")
    flat = logits.reshape(-1, logits.shape[-1])
    padded = _padded_columns(flat.shape[-1], vocab_start, vocab_size)
    lp, ent = _ChunkedLogProbs.apply(flat, targets.reshape(-1), group, vocab_start, chunk_size,
                                     1.0 / temperature, with_entropy, padded)
    return lp.view(targets.shape), (ent.view(targets.shape) if with_entropy else None)


def fused_token_logprobs(
    hidden: Tensor,  # [..., h] final hidden states (after the final norm), replicated over the group
    weight: Tensor,  # [V_local, h] this rank's rows of the output layer (or tied embedding)
    targets: Tensor,  # [...] int64 global vocabulary ids
    *,
    group: dist.ProcessGroup | None = None,
    vocab_start: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
    temperature: float = 1.0,
    with_entropy: bool = False,
    vocab_size: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """As `token_logprobs(hidden @ weight.T, ...)` without ever holding those logits or their gradient.
    The hidden states' gradient is this rank's share (sum it over `group`); the weight's is complete."""
    _check(hidden.shape[:-1], targets, chunk_size, temperature, "hidden", "hidden")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {list(weight.shape)} must be [V_local, {hidden.shape[-1]}] for hidden "
                         f"{list(hidden.shape)}")
    padded = _padded_columns(weight.shape[0], vocab_start, vocab_size)
    lp, ent = _FusedLogProbs.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), group,
                                   vocab_start, chunk_size, 1.0 / temperature, with_entropy, padded)
    return lp.view(targets.shape), (ent.view(targets.shape) if with_entropy else None)


# ---- the shared per-chunk math ----------------------------------------------------------------
def _all_reduce(t: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> None:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)


def _local_targets(targets: Tensor, vocab_start: int, local_vocab: int) -> tuple[Tensor, Tensor]:
    local = targets - vocab_start
    here = (local >= 0) & (local < local_vocab)
    return local.clamp(0, max(local_vocab - 1, 0)), here


def _chunk_statistics(x: Tensor, targets: Tensor, vocab_start: int, with_entropy: bool,
                      group: dist.ProcessGroup | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """x: [c, V_real] fp32 tempered logits of one chunk → (log Z, log p(target), E_p[x] or None), [c] each."""
    c, v = x.shape
    m = x.max(dim=-1).values if v else x.new_full((c,), float("-inf"))
    _all_reduce(m, dist.ReduceOp.MAX, group)
    e = (x - m.unsqueeze(-1)).exp_()
    local, here = _local_targets(targets, vocab_start, v)
    target_x = x.gather(-1, local.unsqueeze(-1)).squeeze(-1) if v else torch.zeros_like(m)
    # Σ e·x as a batched dot product: no third [c, V] temporary
    ex = (e.unsqueeze(-2) @ x.unsqueeze(-1)).view(c) if with_entropy else torch.zeros_like(m)
    sums = torch.stack([e.sum(-1), torch.where(here, target_x, 0.0), ex])
    del e
    _all_reduce(sums, dist.ReduceOp.SUM, group)
    logz = m + torch.log(sums[0])
    return logz, sums[1] - logz, (sums[2] / sums[0] if with_entropy else None)


def _chunk_logit_grad(x: Tensor, targets: Tensor, logz: Tensor, mean_x: Tensor | None, grad_logp: Tensor | None,
                      grad_ent: Tensor | None, vocab_start: int, inv_temp: float) -> Tensor:
    """∂(Σ grad_logp·log p + grad_ent·H)/∂(untempered logits) for one chunk, fp32 [c, V_real].
    Overwrites `x` (the chunk's tempered logits) with the result."""
    c, v = x.shape
    p = (x - logz.unsqueeze(-1)).exp_()
    gl = grad_logp.float() if grad_logp is not None else torch.zeros(c, device=x.device)
    if mean_x is not None and grad_ent is not None:  # p·(ge·(E_p[x] − x) − gl)
        x.sub_(mean_x.unsqueeze(-1)).mul_(-grad_ent.float().unsqueeze(-1)).sub_(gl.unsqueeze(-1)).mul_(p)
    else:  # −gl·p
        torch.mul(p, -gl.unsqueeze(-1), out=x)
    del p
    if grad_logp is not None and v:
        local, here = _local_targets(targets, vocab_start, v)
        x.scatter_add_(-1, local.unsqueeze(-1), (gl * here).unsqueeze(-1))
    return x.mul_(inv_temp) if inv_temp != 1.0 else x


def _tempered(x: Tensor, inv_temp: float) -> Tensor:
    """A fresh fp32 tensor x·inv_temp (never a view of the caller's logits)."""
    y = x.float()
    if y.data_ptr() == x.data_ptr():
        return y * inv_temp if inv_temp != 1.0 else y.clone()
    return y.mul_(inv_temp) if inv_temp != 1.0 else y


def _logits_chunk(hidden: Tensor, w: Tensor, inv_temp: float) -> Tensor:
    """fp32 tempered logits of one chunk of hidden states (computed in their dtype, as the output layer does)."""
    x = (hidden @ w.T).float()  # a fresh tensor either way: safe to scale in place
    return x.mul_(inv_temp) if inv_temp != 1.0 else x


def _outputs(logp: Tensor, logz: Tensor, mean_x: Tensor | None) -> tuple[Tensor, Tensor]:
    return logp, (logz - mean_x if mean_x is not None else torch.empty(0, device=logp.device))


def _forward_chunks(make_chunk, n: int, targets: Tensor, vocab_start: int, chunk: int, with_entropy: bool,
                    group: dist.ProcessGroup | None, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-token (log Z, log p, E_p[x]) over every chunk; `make_chunk(s)` gives chunk s's tempered logits."""
    logz = torch.empty(n, dtype=torch.float32, device=device)
    logp = torch.empty_like(logz)
    mean_x = torch.empty_like(logz) if with_entropy else None
    for s in range(0, n, chunk):
        z, lp, mx = _chunk_statistics(make_chunk(s), targets[s : s + chunk], vocab_start, with_entropy, group)
        logz[s : s + chunk], logp[s : s + chunk] = z, lp
        if mean_x is not None:
            mean_x[s : s + chunk] = mx
    return logz, logp, mean_x


def _grad_chunks(make_chunk, n: int, targets: Tensor, logz: Tensor, mean_x: Tensor | None, grad_logp: Tensor | None,
                 grad_ent: Tensor | None, vocab_start: int, chunk: int, inv_temp: float):  # noqa: ANN202
    """Yields (s, fp32 logit gradient of chunk s)."""
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        yield s, _chunk_logit_grad(make_chunk(s), targets[sl], logz[sl], None if mean_x is None else mean_x[sl],
                                   None if grad_logp is None else grad_logp[sl],
                                   None if grad_ent is None else grad_ent[sl], vocab_start, inv_temp)


# ---- from logits ------------------------------------------------------------------------------
class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, group, vocab_start, chunk, inv_temp, with_entropy, padded):  # noqa: ANN001
        n, v = logits.shape
        real = v - padded
        make = lambda s: _tempered(logits[s : s + chunk, :real], inv_temp)  # noqa: E731
        logz, logp, mean_x = _forward_chunks(make, n, targets, vocab_start, chunk, with_entropy, group, logits.device)
        ctx.save_for_backward(logits, targets, logz, *([mean_x] if with_entropy else []))
        ctx.meta = (vocab_start, chunk, inv_temp, real)
        ctx.set_materialize_grads(False)
        return _outputs(logp, logz, mean_x)

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):  # noqa: ANN001
        logits, targets, logz, *rest = ctx.saved_tensors
        vocab_start, chunk, inv_temp, real = ctx.meta
        make = lambda s: _tempered(logits[s : s + chunk, :real], inv_temp)  # noqa: E731
        grad = torch.zeros_like(logits)  # padding columns stay 0
        for s, g in _grad_chunks(make, logits.shape[0], targets, logz, rest[0] if rest else None, grad_logp,
                                 grad_ent, vocab_start, chunk, inv_temp):
            grad[s : s + chunk, :real] = g
        return grad, None, None, None, None, None, None, None


# ---- from hidden states and the output weight -------------------------------------------------
class _FusedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, group, vocab_start, chunk, inv_temp, with_entropy, padded):  # noqa: ANN001
        w = weight[: weight.shape[0] - padded]
        make = lambda s: _logits_chunk(hidden[s : s + chunk], w, inv_temp)  # noqa: E731
        logz, logp, mean_x = _forward_chunks(make, hidden.shape[0], targets, vocab_start, chunk, with_entropy,
                                             group, hidden.device)
        ctx.save_for_backward(hidden, weight, targets, logz, *([mean_x] if with_entropy else []))
        ctx.meta = (vocab_start, chunk, inv_temp, padded)
        ctx.set_materialize_grads(False)
        return _outputs(logp, logz, mean_x)

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):  # noqa: ANN001
        hidden, weight, targets, logz, *rest = ctx.saved_tensors
        vocab_start, chunk, inv_temp, padded = ctx.meta
        real = weight.shape[0] - padded
        w = weight[:real]
        make = lambda s: _logits_chunk(hidden[s : s + chunk], w, inv_temp)  # noqa: E731
        want_hidden, want_w = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        for s, g in _grad_chunks(make, hidden.shape[0], targets, logz, rest[0] if rest else None, grad_logp,
                                 grad_ent, vocab_start, chunk, inv_temp):
            if grad_hidden is not None:  # the logit gradient in the logits' dtype, as the output layer's backward sees it
                torch.matmul(g.to(weight.dtype), w, out=grad_hidden[s : s + chunk])
            if grad_w is not None:  # accumulated over chunks in fp32; padding rows stay 0
                grad_w[:real].addmm_(g.T, hidden[s : s + chunk].float())
        return (grad_hidden, None if grad_w is None else grad_w.to(weight.dtype),
                None, None, None, None, None, None, None)
