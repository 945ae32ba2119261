"""Optimisers (backends/megatron/optim.py): one weight-decay rule for both, fp32 master weights in
LocalAdamW, the CPU fallback warning; and, on a real megatron-core GPTModel in one gloo process
(megatron_optim_worker.py), megatron's own param groups and a bf16 checkpoint round trip."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nemo_qwenlong.backends.megatron.optim import (
    LocalAdamW,
    apply_group_schedule,
    choose_optimizer_kind,
    decay_groups,
    decays,
)
from nemo_qwenlong.config.training import OptimConfig
from tests.fixtures.vllm_server import free_port

WORKER = Path(__file__).with_name("megatron_optim_worker.py")


def test_decays_exempts_biases_and_every_1d_parameter() -> None:
    matrix, vector = torch.zeros(4, 4), torch.zeros(4)
    assert decays("decoder.layers.0.self_attention.linear_qkv.weight", matrix)
    assert decays("module.embedding.word_embeddings.weight", matrix)  # embeddings and output decay
    assert not decays("decoder.layers.0.self_attention.linear_qkv.bias", vector)
    assert not decays("decoder.final_layernorm.weight", vector)  # RMSNorm
    assert not decays("module.decoder.layers.0.mlp.linear_fc1.layer_norm_weight", vector)  # TE fused norm
    assert not decays("some.bias", matrix)  # a bias never decays, whatever its shape
    assert not decays("bias", vector) and not decays("scale", torch.zeros(()))


def test_local_adamw_decays_matrices_only() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = LocalAdamW(model, OptimConfig(lr=0.1, weight_decay=0.5, grad_clip=0.0))
    by_group = [sorted(n for n, p in model.named_parameters() if any(p is q for q in g["params"]))
                for g in opt.torch.param_groups]
    assert by_group == [["0.weight"], ["0.bias", "1.bias", "1.weight"]]
    assert [g["weight_decay"] for g in opt.torch.param_groups] == [0.5, 0.0]
    opt.step()  # zero gradients: only decoupled weight decay moves anything, p ← p·(1 − lr·wd)
    for n, p in model.named_parameters():
        expect = before[n] * 0.95 if n == "0.weight" else before[n]
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-7, msg=n)
    assert decay_groups([("w", torch.zeros(2, 2))], 0.1)[1] == {"params": [], "weight_decay": 0.0}


def test_apply_group_schedule_multiplies_weight_decay_by_wd_mult() -> None:
    groups = [{"wd_mult": 1.0}, {"wd_mult": 0.0}, {}]
    apply_group_schedule(groups, lr=3e-6, weight_decay=0.01)
    assert groups == [{"wd_mult": 1.0, "lr": 3e-6, "weight_decay": 0.01},
                      {"wd_mult": 0.0, "lr": 3e-6, "weight_decay": 0.0},
                      {"lr": 3e-6, "weight_decay": 0.01}]


def _bf16_linear() -> torch.nn.Linear:
    lin = torch.nn.Linear(4, 2).to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.fill_(1e-3)  # bf16 spacing here ~7.6e-6: a few 2e-6 steps cross a rounding boundary
        lin.bias.fill_(1.0)  # spacing 7.8e-3: 5 steps of 2e-6 stay below it
    return lin


def test_bf16_parameter_moves_at_small_lr_through_fp32_master() -> None:
    lin = _bf16_linear()
    weight0, bias0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = LocalAdamW(lin, OptimConfig(lr=2e-6, weight_decay=0.0, grad_clip=0.0))
    for _ in range(5):
        lin.weight.grad, lin.bias.grad = torch.ones_like(lin.weight), torch.ones_like(lin.bias)
        opt.step()  # Adam with a constant gradient: each step moves the master by ≈ lr
        opt.zero_grad()
    print("weight", weight0[0, 0].item(), "->", lin.weight[0, 0].item(),
          "bias", bias0[0].item(), "->", lin.bias[0].item())
    assert not torch.equal(lin.weight, weight0)  # in-place bf16 AdamW left it bit-identical
    masters = opt.master_tensors()
    assert sorted(masters) == [0, 1] and all(m.dtype == torch.float32 for m in masters.values())
    moved = [(masters[0] - weight0.float()).max().item(), (masters[1] - bias0.float()).max().item()]
    print("masters moved by", moved)
    torch.testing.assert_close(masters[0], weight0.float() - 5 * 2e-6, rtol=0, atol=1e-8)
    torch.testing.assert_close(masters[1], bias0.float() - 5 * 2e-6, rtol=0, atol=3e-7)
    assert torch.equal(lin.bias, bias0)  # below bf16 resolution the parameter waits; the master keeps it
    for p, m in ((lin.weight, masters[0]), (lin.bias, masters[1])):
        assert p.dtype == torch.bfloat16 and torch.equal(p, m.to(torch.bfloat16))
    assert all(t.dtype == torch.float32 for s in opt.state_tensors().values() for t in s.values())


def test_masters_follow_loaded_weights_and_restored_state() -> None:
    lin = _bf16_linear()
    opt = LocalAdamW(lin, OptimConfig(lr=2e-6, weight_decay=0.0, grad_clip=0.0))
    with torch.no_grad():
        lin.weight.fill_(0.5)
    opt.weights_loaded()  # re-derived from the parameters
    assert torch.equal(opt.master_tensors()[0], torch.full((2, 4), 0.5))
    saved = {0: torch.full((2, 4), 0.25 + 1e-6), 1: torch.full((2,), 2.0)}
    opt.set_master_tensors(saved)
    assert torch.equal(opt.master_tensors()[0], saved[0]) and torch.equal(lin.weight, saved[0].bfloat16())
    # fp32 parameters are their own masters: nothing separate to save, state keyed by the parameter
    fp32 = torch.nn.Linear(2, 2)
    opt32 = LocalAdamW(fp32, OptimConfig(lr=1e-3, weight_decay=0.0))
    assert opt32.master_tensors() == {} and all(m is p for m, p in zip(opt32.masters, opt32.params))
    fp32.weight.grad, fp32.bias.grad = torch.ones(2, 2), torch.ones(2)
    opt32.step()
    assert set(opt32.state_tensors()[0]) == {"exp_avg", "exp_avg_sq"} and fp32.weight in opt32.torch.state


def test_choose_optimizer_kind_warns_when_falling_back_without_cuda(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nemo_qwenlong.backends.megatron.optim"):
        assert choose_optimizer_kind(distributed=True, cuda=True) == "distributed"
        assert choose_optimizer_kind(distributed=False, cuda=True) == "local"
        assert choose_optimizer_kind(distributed=False, cuda=False) == "local"
        assert not caplog.records
        assert choose_optimizer_kind(distributed=True, cuda=False) == "local"
    assert len(caplog.records) == 1
    print(caplog.records[0].getMessage())
    assert "distributed_optimizer=true but CUDA is not available" in caplog.records[0].getMessage()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("optim")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(out)], capture_output=True, text=True, timeout=600,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OPTIM ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(lines[-1].removeprefix("OPTIM "))


def test_megatron_param_groups_decay_exactly_what_decays_says(report: dict) -> None:
    r = report["decay"]
    print("exempt:", r["exempt"])
    print("without our overrides and schedule, megatron decayed:", r["old_megatron_wrong"])
    assert r["megatron_wrong"] == [] and r["local_wrong"] == []  # both optimisers: the same params decay
    # per layer: 2 norms + the QKV bias; plus the final norm
    assert len(r["exempt"]) == 7 and len(r["decayed"]) == 10 and r["params"] == 17
    assert sorted(r["old_megatron_wrong"]) == r["exempt"]  # before: megatron decayed every exempt one too
    assert r["standard_rule_agrees"]  # Megatron-LM's default rule exempts the same parameters


def test_bf16_policy_checkpoint_restores_fp32_masters_bit_exact(report: dict) -> None:
    r = report["masters"]
    print({k: r[k] for k in ("masters", "params", "master_vs_param", "master_moved", "weights_changed")})
    assert r["master_dtypes"] == ["torch.float32"] and r["moment_dtypes"] == ["torch.float32"]
    assert r["masters"] >= 10 and "torch.bfloat16" in r["dtypes"]
    assert 0 < r["master_vs_param"] < 1e-3 and r["master_moved"] > 0 and r["weights_changed"] > 0
    assert r["manifest_optimizer"]["has_master_params"] is True
    assert r["manifest_optimizer"]["has_state"] is True
    assert r["after_load"] == {"weights": 0.0, "masters": 0.0, "moments": 0.0, "step_count": 3}
    assert r["next_step"] == {"weights": 0.0, "masters": 0.0}


def test_weights_only_load_starts_a_fresh_optimizer_and_schedule(report: dict) -> None:
    """RL starts from the SFT checkpoint without its optimiser: the saved step count (3 here) must
    not carry over, or the RL warm-up starts part-way and Adam's bias correction counts SFT steps."""
    r = report["masters"]["weights_only"]
    print(r)
    assert r["step_count"] == 0 and r["has_state"] is False
    assert r["lr"] == pytest.approx(1e-3 * 1 / 4, rel=1e-12)  # warm-up's first value: (0 + 1)/4 · lr
    refused = "load_optimizer=False into a policy whose optimiser has already stepped (step_count=4)"
    assert refused in r["refused"]


def _nan_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))


def test_a_nan_gradient_skips_the_update_and_is_counted() -> None:
    """bf16 has no loss scaler, and `nan > grad_clip` is False, so before this rule a NaN gradient
    reached AdamW and turned every weight into NaN."""
    from nemo_qwenlong.backends.megatron.optim import update_allowed

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = LocalAdamW(model, OptimConfig(lr=0.1, grad_clip=1.0))
    _nan_grads(model)
    out = opt.step()
    assert out["skipped_steps"] == 1.0 and out["grad_norm"] != out["grad_norm"]  # NaN norm reported
    assert opt.step_count == 0 and not opt.has_state()  # no update, no schedule advance, no moments
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    opt.zero_grad()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    assert opt.step()["skipped_steps"] == 1.0 and opt.step_count == 1 and opt.has_state()
    assert update_allowed(2.5, on_nonfinite="error", step=0)
    assert not update_allowed(float("inf"), on_nonfinite="skip", step=0)


def test_a_nan_gradient_stops_with_a_named_error_when_asked() -> None:
    model = torch.nn.Linear(3, 2)
    opt = LocalAdamW(model, OptimConfig(nonfinite_grad="error"))
    _nan_grads(model)
    with pytest.raises(FloatingPointError, match=r"norm is nan \(non-finite\).*optim.nonfinite_grad='error'"):
        opt.step()


def test_grad_norm_is_reported_with_clipping_off() -> None:
    """megatron-core returns grad_norm 0.0 / None when clip_grad=0; both of our optimisers report
    the pre-clip global norm either way (here ‖[3, 4]‖ = 5)."""
    model = torch.nn.Linear(2, 1, bias=False)
    opt = LocalAdamW(model, OptimConfig(grad_clip=0.0))
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert opt.step()["grad_norm"] == pytest.approx(5.0)


def test_optimizer_state_is_claimed_only_once_it_exists() -> None:
    """A checkpoint before the first step must not claim Adam moments: megatron's optimizer
    sharded_state_dict is never empty (so `bool(state["optimizer"])` was always true) and a resume
    then asked for moments that were never written. Both optimisers answer `has_state()` from the
    torch optimizers' per-parameter state, empty until the first update."""
    from nemo_qwenlong.backends.megatron.optim import torch_optimizers_hold_state

    w = torch.nn.Parameter(torch.ones(2))
    adam = torch.optim.Adam([w])
    assert not torch_optimizers_hold_state([adam])
    w.grad = torch.ones(2)
    adam.step()
    assert torch_optimizers_hold_state([torch.optim.Adam([torch.nn.Parameter(torch.ones(1))]), adam])
    model = torch.nn.Linear(2, 1)
    local = LocalAdamW(model, OptimConfig())
    assert not local.has_state()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    local.step()
    assert local.has_state()
