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
