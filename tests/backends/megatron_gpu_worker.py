"""GPU only (NCCL, Transformer Engine). `torchrun --nproc-per-node N megatron_gpu_worker.py CHECK OUT`.

One check per launch, so one failing path cannot take the others down. Rank 0 writes OUT (JSON).
The model is the tiny Qwen2 of the CPU tests with its output layer scaled ×8 (`spread_hf_weights`),
so token log-probs spread over several nats instead of sitting near -log(V) (a near-uniform model
hides FP8/CP/RoPE bugs inside any tolerance). Every check reports the bf16-vs-fp32 difference on the
same inputs (`baseline`) and the difference a real bug makes (`bug`: two query heads of layer 0
swapped, a QKV-mapping mistake); test_megatron_gpu.py states each tolerance against those two.

Checks: te_vs_local, fp8 (each recipe the config offers), recompute (selective / full vs none),
cp (CP=2 vs CP=1, bf16: TE has no fp32 attention under CP), sp (TP=2 with and without sequence
parallel), dist_ckpt (distributed-optimizer checkpoint before and after a step, resharded DP2 → TP2),
packed (THD packing through TE attention vs the padded layout; CP=2 with each cp_comm_type and TP=2+SP
with two GPUs).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tests.backends.megatron_policy_worker import hf_model, make_batch, rl_config

FP8_RECIPES = ("tensorwise", "delayed", "blockwise")


def spread_hf_weights(dtype: torch.dtype, *, head_swap_bug: bool = False) -> dict[str, torch.Tensor]:
    sd = {k: v.detach().clone() for k, v in hf_model().state_dict().items()}
    sd["lm_head.weight"] *= 8.0
    if head_swap_bug:  # query heads 0 and 1 of layer 0 exchanged (head_dim 16)
        q = sd["model.layers.0.self_attn.q_proj.weight"]
        q[:16], q[16:32] = q[16:32].clone(), q[:16].clone()
    return {k: v.to(dtype) for k, v in sd.items()}


def policy(*, dtype: str = "bfloat16", bug: bool = False, **parallel):
    from megatron.core import parallel_state as ps

    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    init_parallel(tensor_parallel=parallel.get("tensor_parallel", 1), context_parallel=parallel.get("context_parallel", 1))
    cfg = ParallelismConfig(**{"recompute": "none", "distributed_optimizer": False, **parallel})
    p = MegatronPolicy(hf_model().config.to_dict(), cfg, OptimConfig(lr=1e-4), dtype=dtype, logprob_chunk_tokens=64)
    p.load_hf_state_dict(spread_hf_weights(torch.float32 if dtype == "float32" else torch.bfloat16, head_swap_bug=bug))
    return p


def diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    d = (a - b).abs()[mask]
    return {"max": float(d.max()), "mean": float(d.mean())}


def references(batch) -> tuple[torch.Tensor, dict]:  # noqa: ANN001
    """bf16 TE log-probs, plus the spread, bf16-vs-fp32 and bug differences on `batch`."""
    mask = batch.response_mask
    bf16 = policy(transformer_impl="transformer_engine").compute_logprobs(batch)
    fp32 = policy(transformer_impl="transformer_engine", dtype="float32").compute_logprobs(batch)
    bug = policy(transformer_impl="transformer_engine", bug=True).compute_logprobs(batch)
    return bf16, {"spread_std": float(fp32[mask].std()), "baseline": diff(bf16, fp32, mask),
                  "bug": diff(bug, bf16, mask)}


def check_te_vs_local(batch) -> dict:  # noqa: ANN001
    local = policy(transformer_impl="local", dtype="float32").compute_logprobs(batch)
    te = policy(transformer_impl="transformer_engine", dtype="float32").compute_logprobs(batch)
    return {"te_vs_local": diff(te, local, batch.response_mask)}


def check_fp8(batch) -> dict:  # noqa: ANN001
    out = {}
    bf16, _ = references(batch)
    for recipe in FP8_RECIPES:
        try:
            p = policy(transformer_impl="transformer_engine", fp8=recipe, distributed_optimizer=True)
            lp = p.compute_logprobs(batch)
            step = p.train_step(batch.replace(old_logprobs=lp), rl_config())
            out[recipe] = {"vs_bf16": diff(lp, bf16, batch.response_mask), "grad_norm": step["grad_norm"],
                           "skipped_steps": step["skipped_steps"]}
        except Exception as err:  # noqa: BLE001 - one recipe's failure is reported, the others still run
            out[recipe] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    return {"fp8": out}


def check_recompute(batch) -> dict:  # noqa: ANN001
    out = {}
    for mode in ("none", "selective", "full"):
        p = policy(transformer_impl="transformer_engine", recompute=mode)
        lp = p.compute_logprobs(batch)
        step = p.train_step(batch.replace(old_logprobs=lp), rl_config())
        out[mode] = {"logprobs": lp, "loss": step["loss"], "grad_norm": step["grad_norm"]}
    mask = batch.response_mask
    return {"recompute": {m: {"vs_none": diff(out[m]["logprobs"], out["none"]["logprobs"], mask),
                              "grad_norm_rel": abs(out[m]["grad_norm"] / out["none"]["grad_norm"] - 1)}
                          for m in ("selective", "full")}}


def check_cp(batch) -> dict:  # noqa: ANN001
    cp2 = policy(transformer_impl="transformer_engine", context_parallel=2).compute_logprobs(batch)
    bf16, _ = references(batch)
    return {"cp2_vs_cp1": diff(cp2, bf16, batch.response_mask)}


def check_sp(batch) -> dict:  # noqa: ANN001
    on = policy(transformer_impl="transformer_engine", tensor_parallel=2, sequence_parallel=True)
    lp_on = on.compute_logprobs(batch)
    off = policy(transformer_impl="transformer_engine", tensor_parallel=2, sequence_parallel=False).compute_logprobs(batch)
    fp8 = policy(transformer_impl="transformer_engine", tensor_parallel=2, sequence_parallel=True, fp8="tensorwise")
    fp8_rows = fp8.compute_logprobs(batch.select([0]))  # one-row micro-batch: the padding rule's case
    return {"sp_vs_no_sp": diff(lp_on, off, batch.response_mask), "sp_fp8_one_row_finite": bool(fp8_rows.isfinite().all())}


def check_dist_ckpt(batch, root: Path) -> dict:  # noqa: ANN001
    """Distributed optimizer: a checkpoint before the first step claims no state and loads with
    load_optimizer=True; one after a step at DP=2 reloads at TP=2 (resharding) with the same weights."""
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    p = policy(transformer_impl="transformer_engine", distributed_optimizer=True)
    ckpt.save_checkpoint(p, root / "before", 0, config_hash="gpu")
    before = ckpt.read_manifest(root / "before", 0)["optimizer"]["has_state"]
    ckpt.load_checkpoint(p, root / "before", load_optimizer=True)
    p.train_step(batch.replace(old_logprobs=p.compute_logprobs(batch)), rl_config())
    lp_saved = p.compute_logprobs(batch)
    ckpt.save_checkpoint(p, root / "after", 1, config_hash="gpu")
    after = ckpt.read_manifest(root / "after", 1)["optimizer"]["has_state"]
    q = policy(transformer_impl="transformer_engine", distributed_optimizer=True, tensor_parallel=dist.get_world_size())
    ckpt.load_checkpoint(q, root / "after", load_optimizer=True)
    lp_loaded = q.compute_logprobs(batch)
    step = q.train_step(batch.replace(old_logprobs=lp_loaded), rl_config())
    return {"dist_ckpt": {"has_state_before_step": before, "has_state_after_step": after,
                          "resharded_vs_saved": diff(lp_loaded, lp_saved, batch.response_mask),
                          "step_after_load_finite": bool(torch.isfinite(torch.tensor(step["grad_norm"])))}}


def _logprobs_and_grads(p, batch) -> tuple[torch.Tensor, dict]:  # noqa: ANN001
    from tests.backends.megatron_attention_worker import grads

    lp = p.compute_logprobs(batch)
    p.accumulate_gradients(batch.replace(old_logprobs=lp), p.rl_loss(rl_config()), p.rl_count(batch, rl_config()))
    return lp, grads(p.module)


def _grad_rel(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).norm() / b[k].float().norm().clamp(min=1e-12)) for k in b)


def check_packed(batch) -> dict:  # noqa: ANN001
    """THD packing through TE attention vs the padded layout (bf16; TE's thd kernels need 16-bit), on
    this launch's GPUs: TP=1 always; with 2 GPUs also CP=2 (every row split in 2·CP chunks) with each
    cp_comm_type (p2p, all_gather, a2a: TE 2.20 takes THD in all three; the padded reference is p2p)
    and TP=2 with sequence parallel. Plus our per-row CP split against TE's `thd_get_partitioned_indices`."""
    import transformer_engine_torch as tex

    from nemo_qwenlong.algorithms.packed import cp_indices, pack_rows

    # "tp1_padded": one GPU, every row padded to 8 and the pack to 16 (what CP=4 or FP8 would ask), so
    # TE runs padded THD rows (pad_between_seqs) and megatron's RoPE splits by padded lengths
    layouts = {"tp1": ({}, None), "tp1_padded": ({}, (8, 16))}
    if dist.get_world_size() >= 2:
        layouts |= {"cp2": ({"context_parallel": 2}, None),
                    "cp2_all_gather": ({"context_parallel": 2, "cp_comm_type": "all_gather"}, None),
                    "cp2_a2a": ({"context_parallel": 2, "cp_comm_type": "a2a"}, None),
                    "tp2_sp": ({"tensor_parallel": 2, "sequence_parallel": True}, None)}
    out = {}
    for name, (par, force) in layouts.items():
        reference = {k: v for k, v in par.items() if k != "cp_comm_type"}  # padded, p2p
        padded_lp, padded_g = _logprobs_and_grads(policy(transformer_impl="transformer_engine", **reference), batch)
        packed_p = policy(transformer_impl="transformer_engine", sequence_layout="packed", **par)
        if force:
            packed_p.row_multiple, packed_p.multiple = force
        packed_lp, packed_g = _logprobs_and_grads(packed_p, batch)
        layout = packed_p._layout(batch)
        out[name] = {"vs_padded": diff(packed_lp, padded_lp, batch.response_mask),
                     "grad_rel": _grad_rel(packed_g, padded_g), "pack_tokens": layout.seq_len,
                     "pack_padding": int(layout.seq_len - layout.lengths.sum()),
                     "padded_tokens": int(batch.response_mask.shape[0] * int(layout.lengths.max()))}
    packed = pack_rows(batch.prompt_ids, batch.prompt_lengths, batch.response_ids, batch.response_mask,
                       row_mult=4, total_mult=4)
    cu = packed.cu_seqlens_padded.cuda()
    out["cp_indices_match_te"] = all(
        torch.equal(cp_indices(packed.cu_seqlens_padded, r, 2).cuda(),
                    tex.thd_get_partitioned_indices(cu, packed.seq_len, 2, r).long()) for r in range(2))
    return out


CHECKS = {"te_vs_local": check_te_vs_local, "fp8": check_fp8, "recompute": check_recompute, "cp": check_cp,
          "sp": check_sp, "packed": check_packed}


def main() -> None:
    check, out = sys.argv[1], Path(sys.argv[2])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    batch = make_batch(n=8)
    if check == "dist_ckpt":
        report = check_dist_ckpt(batch, out.parent / "ckpt")
    elif check == "references":
        report = references(batch)[1]
    else:
        report = CHECKS[check](batch)
    if dist.get_rank() == 0:
        out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
