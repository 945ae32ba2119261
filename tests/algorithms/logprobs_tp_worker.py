"""torchrun --nproc-per-node 2: vocab-parallel log-probs over 2 gloo ranks, pure torch (no megatron).

Each rank holds half the rows of a (possibly padded) output weight. For the logits path and the
fused path, the log-probs, entropy, weight gradient (this rank's rows) and hidden-state gradient
(summed over ranks, as megatron's copy-to-region backward does) are compared with the
single-process full-vocabulary computation. Rank 0 prints "LOGPROBS_TP2 <json>" of relative max differences.
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist

from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs, token_logprobs

TOKENS, HIDDEN = 17, 8


def case(path: str, vocab: int, vocab_size: int, temperature: float, chunk: int, rank: int, size: int) -> dict:
    g = torch.Generator().manual_seed(vocab + chunk)
    h0, w0 = torch.randn(TOKENS, HIDDEN, generator=g), torch.randn(vocab, HIDDEN, generator=g)
    targets = torch.randint(0, vocab_size, (TOKENS,), generator=g)
    w_lp, w_ent = torch.randn(TOKENS, generator=g), torch.randn(TOKENS, generator=g)
    kw = dict(chunk_size=chunk, temperature=temperature, with_entropy=True, vocab_size=vocab_size)

    h_ref, w_ref = h0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
    lp_ref, ent_ref = token_logprobs(h_ref @ w_ref.T, targets, **kw)  # one process, whole vocabulary
    (lp_ref * w_lp + ent_ref * w_ent).sum().backward()

    local = vocab // size
    rows = slice(rank * local, (rank + 1) * local)
    h, w = h0.clone().requires_grad_(True), w0[rows].clone().requires_grad_(True)
    par = dict(kw, group=dist.group.WORLD, vocab_start=rank * local)
    lp, ent = token_logprobs(h @ w.T, targets, **par) if path == "logits" else fused_token_logprobs(h, w, targets, **par)
    (lp * w_lp + ent * w_ent).sum().backward()
    grad_h = h.grad.clone()
    dist.all_reduce(grad_h)  # each rank's vocabulary slice contributes its share
    # max |difference| relative to the reference's largest magnitude (fp32 sums run in other orders)
    diff = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1.0))  # noqa: E731
    return {"lp": diff(lp, lp_ref), "ent": diff(ent, ent_ref), "grad_hidden": diff(grad_h, h_ref.grad),
            "grad_weight": diff(w.grad, w_ref.grad[rows]), "grad_scale": float(w_ref.grad.abs().max())}


def main() -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    report = {}
    for path in ("logits", "fused"):
        for vocab, vocab_size in ((96, 96), (96, 91)):  # 91 real ids padded to 96 rows: rank 1 holds the padding
            for temperature, chunk in ((1.0, 1000), (0.7, 3)):
                name = f"{path}-v{vocab_size}-t{temperature}-c{chunk}"
                report[name] = case(path, vocab, vocab_size, temperature, chunk, rank, size)
    if rank == 0:
        print("LOGPROBS_TP2 " + json.dumps(report), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
