"""Chunked log-probs/entropy: equal to the unchunked fp32 computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from nemo_qwenlong.algorithms.logprobs import token_logprobs


def reference(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    logsm = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logsm.gather(-1, targets.unsqueeze(-1)).squeeze(-1), -(logsm.exp() * logsm).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_equals_unchunked_with_gradients(chunk: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(chunk)
    logits = (3 * torch.randn(3, 11, 97, generator=g)).requires_grad_(True)
    targets = torch.randint(0, 97, (3, 11), generator=g)
    w_lp, w_ent = torch.randn(3, 11, generator=g), torch.randn(3, 11, generator=g)
    lp, ent = token_logprobs(logits, targets, chunk_size=chunk, temperature=temperature, with_entropy=True)
    (lp * w_lp + ent * w_ent).sum().backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref_lp, ref_ent = reference(logits, targets, temperature)
    (ref_lp * w_lp + ref_ent * w_ent).sum().backward()
    assert lp.dtype == torch.float32 and lp.shape == targets.shape
    assert torch.allclose(lp.double(), ref_lp, atol=2e-6)
    assert torch.allclose(ent.double(), ref_ent, atol=5e-6)
    assert torch.allclose(ours, logits.grad.float(), atol=5e-6)


def test_entropy_not_requested_and_logprob_only_gradient() -> None:
    logits = torch.randn(5, 13, requires_grad=True)
    targets = torch.randint(0, 13, (5,))
    lp, ent = token_logprobs(logits, targets, chunk_size=2)
    assert ent is None
    lp.sum().backward()
    expected = torch.nn.functional.one_hot(targets, 13) - torch.softmax(logits.detach(), -1)
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_bf16_logits_keep_their_dtype_for_the_gradient_and_upcast_per_chunk() -> None:
    logits = torch.randn(4, 9, 50).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 50, (4, 9))
    lp, _ = token_logprobs(logits, targets, chunk_size=5)
    lp.sum().backward()
    assert lp.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    ref, _ = reference(logits.detach().float(), targets, 1.0)
    assert torch.allclose(lp.double(), ref, atol=1e-5)  # fp32 math on bf16 inputs


def test_vocab_slices_outside_this_rank_contribute_nothing_locally() -> None:
    # a rank holding vocab [50, 100) sees targets below 50 as "elsewhere": its local target logit is 0
    logits = torch.randn(6, 50)
    targets = torch.tensor([0, 10, 49, 50, 75, 99])
    lp, _ = token_logprobs(logits, targets, vocab_start=50)
    logz = torch.logsumexp(logits, -1)
    here = targets >= 50
    assert torch.allclose(lp[here], logits[here].gather(-1, (targets[here] - 50).unsqueeze(-1)).squeeze(-1) - logz[here])
    assert torch.allclose(lp[~here], -logz[~here])


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="disagree before the vocab dim"):
        token_logprobs(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="temperature > 0"):
        token_logprobs(torch.randn(2, 5), torch.zeros(2, dtype=torch.int64), temperature=0.0)


def test_vocabulary_padding_gets_no_probability() -> None:
    # 10 real ids padded to 12 rows (for TP): the padding rows' logits must not enter the softmax
    g = torch.Generator().manual_seed(5)
    real = torch.randn(7, 10, generator=g)
    padded = torch.cat([real, torch.full((7, 2), 3.0)], dim=-1).requires_grad_(True)
    targets = torch.randint(0, 10, (7,), generator=g)
    lp, ent = token_logprobs(padded, targets, chunk_size=3, with_entropy=True, vocab_size=10)
    ref_lp, ref_ent = reference(real, targets, 1.0)
    assert torch.allclose(lp.double(), ref_lp, atol=1e-6) and torch.allclose(ent.double(), ref_ent, atol=1e-5)
    (lp.sum() + ent.sum()).backward()
    assert torch.isfinite(padded.grad).all() and padded.grad[:, 10:].abs().max() == 0
    # a rank whose slice [6, 12) is half padding, targets elsewhere: finite, and only the real columns count
    lp_slice, _ = token_logprobs(padded[:, 6:].detach(), targets, vocab_start=6, vocab_size=10)
    assert torch.isfinite(lp_slice).all()


# ---- fused: from hidden states and the output weight, equal to the logits path ------------------
def _fused_vs_logits(n_tokens: int, hidden: int, vocab: int, chunk: int, temperature: float, *,
                     tied: bool = False, vocab_size: int | None = None, seed: int = 0):
    """Values and gradients (hidden, weight) of both paths on the same loss; `tied` also uses the
    weight as an input embedding, so its gradient is the sum of both uses."""
    from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs

    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(2, n_tokens, hidden, generator=g)
    w0 = torch.randn(vocab, hidden, generator=g)
    ids = torch.randint(0, vocab_size or vocab, (2, n_tokens), generator=g)
    targets = torch.randint(0, vocab_size or vocab, (2, n_tokens), generator=g)
    w_lp, w_ent = torch.randn(2, n_tokens, generator=g), torch.randn(2, n_tokens, generator=g)
    out = {}
    for path in ("logits", "fused"):
        h, w = h0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        x = h + w[ids] if tied else h
        kw = dict(chunk_size=chunk, temperature=temperature, with_entropy=True, vocab_size=vocab_size)
        lp, ent = token_logprobs(x @ w.T, targets, **kw) if path == "logits" else fused_token_logprobs(x, w, targets, **kw)
        (lp * w_lp + ent * w_ent).sum().backward()
        out[path] = (lp.detach(), ent.detach(), h.grad, w.grad)
    return out


@pytest.mark.parametrize("chunk", [1, 5, 64, 10_000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("tied", [False, True])
def test_fused_equals_logits_path_values_and_gradients(chunk: int, temperature: float, tied: bool) -> None:
    out = _fused_vs_logits(13, 8, 97, chunk, temperature, tied=tied, seed=chunk)
    for a, b, tol in zip(out["logits"], out["fused"], (2e-6, 5e-6, 2e-5, 2e-5)):  # fp32 sums in other orders
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a, b, atol=tol, rtol=1e-5), float((a - b).abs().max())
    assert out["fused"][3].abs().max() > 1e-3  # the weight gradient is really exercised


def test_fused_padded_vocabulary_rows_get_no_probability_and_no_gradient() -> None:
    # 90 real ids padded to 97 rows: the padding rows never enter the softmax and get zero gradient
    out = _fused_vs_logits(11, 8, 97, 4, 0.7, vocab_size=90, seed=3)
    for a, b in zip(out["logits"], out["fused"]):
        assert torch.allclose(a, b, atol=5e-6, rtol=1e-5), float((a - b).abs().max())
    grad_w = out["fused"][3]
    assert grad_w[90:].abs().max() == 0 and grad_w[:90].abs().max() > 1e-3


def test_fused_bf16_keeps_dtypes_and_matches_the_logits_path() -> None:
    from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs

    g = torch.Generator().manual_seed(9)
    h = torch.randn(20, 16, generator=g).bfloat16().requires_grad_(True)
    w = torch.randn(50, 16, generator=g).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 50, (20,), generator=g)
    lp, _ = fused_token_logprobs(h, w, targets, chunk_size=6)
    lp.sum().backward()
    assert lp.dtype == torch.float32 and h.grad.dtype == w.grad.dtype == torch.bfloat16
    ref, _ = token_logprobs(h.detach() @ w.detach().T, targets, chunk_size=6)
    assert torch.equal(lp, ref)  # same bf16 logits, same fp32 statistics


def test_fused_rejects_a_weight_of_the_wrong_width() -> None:
    from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs

    with pytest.raises(ValueError, match=r"weight \[50, 8\] must be \[V_local, 16\]"):
        fused_token_logprobs(torch.randn(3, 16), torch.randn(50, 8), torch.zeros(3, dtype=torch.int64))


def test_logprob_tp2_both_paths_match_the_full_vocabulary() -> None:
    """2 gloo ranks, each with half the (padded) vocabulary: chunked-from-logits and fused log-probs,
    entropy and gradients equal the single-process full-vocabulary computation (logprobs_tp_worker.py)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.fixtures.vllm_server import free_port

    worker = Path(__file__).with_name("logprobs_tp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(worker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOGPROBS_TP2 ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-2000:], proc.stderr[-3000:])
    report = json.loads(lines[-1].removeprefix("LOGPROBS_TP2 "))
    assert len(report) == 8  # {logits, fused} × {padded vocabulary or not} × {temperature 1 chunk 1000, 0.7 chunk 3}
    for case, diffs in report.items():
        # relative to the reference's largest value; a sign or slice slip would be O(1)
        assert max(diffs["lp"], diffs["ent"], diffs["grad_hidden"], diffs["grad_weight"]) <= 2e-5, (case, diffs)
        assert diffs["grad_scale"] > 1e-3, (case, diffs)
