"""torchrun --nproc-per-node 2 megatron_policy_worker.py OUT_DIR: the policy backend over 2 gloo ranks.

Phase A (TP=2): log-probs, entropy, RL loss and gradients against transformers' Qwen2 on the same
weights (an independent implementation); refit export; one step; checkpoint B; an interrupted save.
Phase B (TP=1, DP=2): checkpoint B resharded into TP=1; DP=2 vs DP=1 gradients; 1 vs several
micro-batches; SFT and RL steps lower their losses; lifecycle guard; checkpoint A.
Phase C (TP=2): checkpoint A resharded back into TP=2.
Rank 0 prints one line "POLICY <json>" with every measured difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

VOCAB, TEMP = 256, 0.7


def make_batch(n: int = 8, seed: int = 5, vocab: int = VOCAB):
    """n random rows (prompts of 4-11 tokens, responses of 1-8) in groups of 4, with old and ref
    log-probs and advantages; every rank draws the same rows from `seed`."""
    from nemo_qwenlong.algorithms.batch import RolloutBatch, pad_sequences

    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, vocab, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    responses = [torch.randint(1, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                 for _ in range(n)]
    prompt_ids, _ = pad_sequences(prompts)
    response_ids, response_mask = pad_sequences(responses)
    old = torch.where(response_mask, -5.0 + 0.3 * torch.randn(response_mask.shape, generator=g), 0.0)
    ref = torch.where(response_mask, -5.0 + 0.3 * torch.randn(response_mask.shape, generator=g), 0.0)
    return RolloutBatch(
        group_ids=torch.arange(n) // 4, sample_ids=torch.arange(n), prompt_ids=prompt_ids,
        prompt_lengths=torch.tensor([len(p) for p in prompts]), response_ids=response_ids,
        response_mask=response_mask, truncated=torch.zeros(n, dtype=torch.bool), rewards=torch.zeros(n),
        correct=torch.zeros(n, dtype=torch.bool), item_ids=tuple(str(i) for i in range(n)),
        old_logprobs=old, ref_logprobs=ref, advantages=torch.randn(n, generator=g),
    )


def rl_config():
    from nemo_qwenlong.config.training import RLConfig

    return RLConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.05, entropy_coef=0.01, loss_level="token")


def build_policy(tp: int, lr: float = 1e-3, seed: int = 0):
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    init_parallel(tensor_parallel=tp, seed=1234 + seed)
    par = ParallelismConfig(tensor_parallel=tp, transformer_impl="local", distributed_optimizer=False,
                            recompute="none", dist_backend="gloo")
    optim = OptimConfig(lr=lr, weight_decay=0.0, grad_clip=1.0)
    if seed == 2:  # phase C builds it the way the training loops do, from a RunConfig
        from nemo_qwenlong.config.schema import RunConfig

        cfg = RunConfig.model_validate({
            "model": {"dtype": "float32"}, "parallelism": par.model_dump(), "rollout": {"temperature": TEMP},
            "rl": {"optim": optim.model_dump(), "micro_batch_tokens": 10_000, "logprob_chunk_tokens": 7}})
        return MegatronPolicy.from_run_config(cfg, hf_model().config.to_dict())
    return MegatronPolicy(hf_model().config.to_dict(), par, optim, dtype="float32", micro_batch_tokens=10_000,
                          logprob_chunk_tokens=7, temperature=TEMP)


def hf_model():
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.config.training import TinyArch

    torch.manual_seed(11)
    arch = TinyArch(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=False)
    return Qwen2ForCausalLM(tiny_qwen2_config(arch, VOCAB, eos_token_id=0)).float()


def hf_reference(model, batch, rl):
    """transformers: sequence-layout log-probs/entropy at temperature TEMP, the same RL loss, gradients."""
    from nemo_qwenlong.algorithms.losses import count_tokens, policy_loss
    from nemo_qwenlong.algorithms.sequences import join_rows, to_response_layout, to_sequence_layout

    layout = join_rows(batch.prompt_ids, batch.prompt_lengths, batch.response_ids, batch.response_mask)
    logsm = torch.log_softmax(model(input_ids=layout.tokens).logits.float() / TEMP, dim=-1)
    lp = logsm.gather(-1, layout.targets.unsqueeze(-1)).squeeze(-1)
    ent = -(logsm.exp() * logsm).sum(-1)
    seq = lambda t, fill=0.0: to_sequence_layout(t, layout, fill)  # noqa: E731
    loss, _ = policy_loss(lp, seq(batch.old_logprobs), batch.advantages, seq(batch.response_mask, False),
                          clip_low=rl.clip_low, clip_high=rl.clip_high, num_global_tokens=count_tokens(batch.response_mask),
                          ref_logprobs=seq(batch.ref_logprobs), kl_coef=rl.kl_coef, entropy=ent,
                          entropy_coef=rl.entropy_coef)
    model.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    return to_response_layout(lp.detach(), layout), to_response_layout(ent.detach(), layout), float(loss), grads


def grads_by_name(policy):
    from nemo_qwenlong.backends.megatron.qwen2_mapping import local_spec_name

    return {local_spec_name(n): p.grad.detach().clone() for n, p in policy.module.named_parameters()}


def full_moments(policy):
    """Adam moments gathered to full Megatron tensors, by local-spec name."""
    from nemo_qwenlong.backends.megatron.qwen2_mapping import local_spec_name

    names = [local_spec_name(n) for n, _ in policy.module.named_parameters()]
    out = {}
    for i, moments in policy.optimizer.state_tensors().items():
        for key, tensor in moments.items():
            out[f"{key}:{names[i]}"] = policy.full_megatron_tensor(names[i], {names[i]: tensor})
    return out


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def phase_a(out: Path, report: dict) -> tuple[dict, dict]:
    from nemo_qwenlong.algorithms.losses import count_tokens
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.qwen2_mapping import hf_to_megatron, shard_for_tp

    hf = hf_model()
    hf_sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    policy = build_policy(tp=2)
    rank = dist.get_rank()
    policy.load_hf_state_dict(hf_sd)
    batch, rl = make_batch(), rl_config()
    ref_lp, ref_ent, ref_loss, ref_grads = hf_reference(hf, batch, rl)
    lp = policy.compute_logprobs(batch)
    with torch.no_grad():
        layout = policy._layout(batch)
        _, ent_s = policy._sequence_logprobs(layout, with_entropy=True)
    from nemo_qwenlong.algorithms.sequences import to_response_layout

    ent = to_response_layout(ent_s, layout)
    metrics = policy.accumulate_gradients(batch, policy.rl_loss(rl), count_tokens(batch.response_mask))
    ref_mg = hf_to_megatron(ref_grads, policy.shape)
    ref_shards = {k: shard_for_tp(k, v, rank, 2, policy.shape) for k, v in ref_mg.items()}
    grads = grads_by_name(policy)
    report["tp2"] = {
        "local_vocab": policy.module.output_layer.weight.shape[0],
        "logprob_diff": float((lp - ref_lp).abs().max()), "entropy_diff": float((ent - ref_ent).abs().max()),
        "loss": metrics[0]["loss"], "ref_loss": ref_loss, "grad_diff": max_diff(grads, ref_shards),
        "grad_scale": max(float(g.abs().max()) for g in ref_shards.values()),
        "valid_tokens": int(batch.response_mask.sum()),
    }
    refit = dict(policy.state_dict_for_refit())
    report["refit"] = {"names_equal": sorted(refit) == sorted(hf_sd), "max_diff": max_diff(refit, hf_sd)}
    policy.optimizer.zero_grad()
    policy.train_step(batch, rl)  # one real step: moments exist and weights moved
    saved_weights, saved_moments = dict(policy.state_dict_for_refit()), full_moments(policy)
    ckpt.save_checkpoint(policy, out / "ckpt", 3, config_hash="abc")
    report["interrupted"] = interrupted_save(policy, out / "ckpt")
    return saved_weights, saved_moments


def interrupted_save(policy, root: Path) -> dict:
    """A save that dies after writing part of its shards must leave step 3 as the latest."""
    from megatron.core import dist_checkpointing

    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    real = dist_checkpointing.save

    def dying_save(state, directory, **kw):
        (Path(directory) / f"__partial_{dist.get_rank()}.distcp").write_bytes(b"half a shard")
        raise OSError("disk full (injected)")

    dist_checkpointing.save = dying_save
    try:
        ckpt.save_checkpoint(policy, root, 4, config_hash="abc")
        raised = False
    except OSError:
        raised = True
    finally:
        dist_checkpointing.save = real
    dist.barrier()
    return {"raised": raised, "latest": ckpt.latest_step(root), "iter4_exists": (root / "iter_0000004").exists(),
            "tmp_left": (root / ".tmp-iter_0000004").exists()}


def phase_b(out: Path, saved_weights: dict, saved_moments: dict, report: dict) -> tuple[dict, dict]:
    from nemo_qwenlong.algorithms.losses import count_tokens
    from nemo_qwenlong.algorithms.batch import RolloutBatch
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.algorithms.batch import TokenRows

    policy = build_policy(tp=1, seed=1)
    rank = dist.get_rank()
    manifest = ckpt.load_checkpoint(policy, out / "ckpt")
    report["tp2_to_tp1"] = {"weights": max_diff(dict(policy.state_dict_for_refit()), saved_weights),
                            "moments": max_diff(full_moments(policy), saved_moments),
                            "step_count": policy.optimizer.step_count, "manifest_layout": manifest["layout"]}
    batch, rl = make_batch(n=8, seed=9), rl_config()
    loss_fn = policy.rl_loss(rl)
    # DP=1 reference: this rank alone, the whole batch, no reduction
    policy.accumulate_gradients(batch, loss_fn, count_tokens(batch.response_mask))
    full = grads_by_name(policy)
    policy.optimizer.zero_grad()
    # DP=2: half the rows per rank, the count all-reduced, gradients summed over DP
    half = batch.select(list(range(rank * 4, rank * 4 + 4)))
    policy.accumulate_gradients(half, loss_fn, policy.rl_count(half, rl))
    policy.optimizer.reduce_grads()
    dp2 = grads_by_name(policy)
    policy.optimizer.zero_grad()
    # several micro-batches (budget of ~2 rows) vs one
    policy.micro_batch_tokens = 24
    micro = policy.accumulate_gradients(batch, loss_fn, count_tokens(batch.response_mask))
    split = grads_by_name(policy)
    policy.optimizer.zero_grad()
    policy.micro_batch_tokens = 10_000
    report["normalisation"] = {"dp2_vs_dp1": max_diff(dp2, full), "micro_vs_one": max_diff(split, full),
                               "micro_batches": len(micro), "grad_scale": max(float(g.abs().max()) for g in full.values())}
    # a few steps on this rank's rows lower the SFT and the RL loss
    sft = TokenRows(half.prompt_ids, half.prompt_lengths, half.response_ids, half.response_mask)
    sft_losses = [policy.sft_step(sft)["loss"] for _ in range(6)]
    fixed = half.replace(old_logprobs=policy.compute_logprobs(half), advantages=torch.tensor([1.0, -1.0, 1.0, -1.0]))
    rl_losses = [policy.train_step(fixed, rl)["loss"] for _ in range(6)]
    policy.prepare_for_generation()
    try:
        policy.train_step(fixed, rl)
        guard = "no error"
    except RuntimeError as exc:
        guard = str(exc)
    policy.prepare_for_training()
    report["steps"] = {"sft": sft_losses, "rl": rl_losses, "guard": guard, "rank": rank}
    weights, moments = dict(policy.state_dict_for_refit()), full_moments(policy)
    ckpt.save_checkpoint(policy, out / "ckpt", 10, config_hash="abc", keep_last=2)
    assert isinstance(fixed, RolloutBatch)
    return weights, moments


def phase_c(out: Path, weights: dict, moments: dict, report: dict) -> None:
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    policy = build_policy(tp=2, seed=2)
    manifest = ckpt.load_checkpoint(policy, out / "ckpt")
    assert (policy.temperature, policy.chunk, policy.micro_batch_tokens) == (TEMP, 7, 10_000)
    report["tp1_to_tp2"] = {"weights": max_diff(dict(policy.state_dict_for_refit()), weights),
                            "moments": max_diff(full_moments(policy), moments), "step": manifest["step"],
                            "step_count": policy.optimizer.step_count, "manifest_layout": manifest["layout"],
                            "dirs": sorted(p.name for p in (out / "ckpt").iterdir())}


def converted_parity(conv: Path, tp: int) -> dict:
    """Converter output (made at TP=2 before this launch) loaded into a policy at `tp`: log-probs vs
    transformers on the original HF folder."""
    from megatron.core import parallel_state as ps
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    out = {}
    for kind in ("untied", "tied", "padded"):
        manifest = json.loads((conv / kind / "mg" / "iter_0000000" / ckpt.MANIFEST).read_text())
        if ps.model_parallel_is_initialized():
            ps.destroy_model_parallel()
        init_parallel(tensor_parallel=tp)
        par = ParallelismConfig(tensor_parallel=tp, transformer_impl="local", distributed_optimizer=False,
                                recompute="none", dist_backend="gloo")
        policy = MegatronPolicy(manifest["hf_config"], par, OptimConfig(), dtype="float32", temperature=1.0,
                                padded_vocab_size=manifest["padded_vocab_size"])
        ckpt.load_checkpoint(policy, conv / kind / "mg")
        batch = make_batch(n=4, seed=21)
        lp = policy.compute_logprobs(batch)
        hf = Qwen2ForCausalLM.from_pretrained(conv / kind / "hf").float().eval()
        from nemo_qwenlong.algorithms.sequences import join_rows, to_response_layout

        layout = join_rows(batch.prompt_ids, batch.prompt_lengths, batch.response_ids, batch.response_mask)
        with torch.no_grad():
            logsm = torch.log_softmax(hf(input_ids=layout.tokens).logits.float(), dim=-1)
        ref = to_response_layout(logsm.gather(-1, layout.targets.unsqueeze(-1)).squeeze(-1), layout)
        out[kind] = float((lp - ref).abs().max())
        if kind == "padded":  # the refit stream strips the padding rows again
            out["padded_refit_rows"] = dict(policy.state_dict_for_refit())["model.embed_tokens.weight"].shape[0]
    return out


def main() -> None:
    out = Path(sys.argv[1])
    conv = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    report: dict = {}
    weights_b, moments_b = phase_a(out, report)
    weights_a, moments_a = phase_b(out, weights_b, moments_b, report)
    if dist.get_rank() == 0:
        torch.save(weights_a, out / "weights_step10.pt")  # for the converter's export of iter_0000010
    phase_c(out, weights_a, moments_a, report)
    if conv is not None:
        report["converted"] = {"tp1": converted_parity(conv, 1), "tp2": converted_parity(conv, 2)}
    per_rank = [None, None]
    dist.all_gather_object(per_rank, report["steps"])
    report["steps"] = per_rank
    if dist.get_rank() == 0:
        print("POLICY " + json.dumps(report), flush=True)
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel

    destroy_parallel()


if __name__ == "__main__":
    main()
