"""torchrun --nproc-per-node 2 megatron_attention_worker.py: at TP=1 (DP=2) and TP=2 over gloo,

1. attention: the local spec with SDPA core attention vs megatron's DotProductAttention vs
   transformers' Qwen2, logits and every parameter gradient of one loss, tied and untied;
2. log-probs: the policy's fused output-layer log-probs vs the logits path, values and every
   gradient of the RL loss (with entropy), tied, untied and a padded vocabulary;
3. the old-log-prob pass: one update with the detached current log-probs (the pass skipped) vs
   with a separate compute_logprobs pass (as loops.rl runs it when there are several updates).
4. packed (THD) and shared-prompt layouts vs the padded one: log-probs, entropy, RL (token and
   sequence level) and SFT losses with every gradient;
5. what SDPA attention refuses (dropout, packed formats other than causal thd), with its messages.
Rank 0 prints "ATTENTION <json>" with every difference.
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist

VOCAB, SEQ, TEMP = 256, 24, 0.7


def reinit(tp: int) -> None:
    from megatron.core import parallel_state as ps

    from nemo_qwenlong.backends.megatron.parallel import init_parallel

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    init_parallel(tensor_parallel=tp)


def hf_model(tied: bool, vocab: int = VOCAB):
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.config.training import TinyArch

    torch.manual_seed(11)  # same weights on every rank
    arch = TinyArch(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=tied)
    model = Qwen2ForCausalLM(tiny_qwen2_config(arch, vocab, eos_token_id=0)).float()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.uniform_(0.5, 1.5) if "norm" in name else p.normal_(0, 0.1)
    return model


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def grads(module) -> dict:
    from nemo_qwenlong.backends.megatron.qwen2_mapping import local_spec_name

    return {local_spec_name(n): p.grad.detach().clone() for n, p in module.named_parameters()}


def attention_parity(tp: int, tied: bool) -> dict:
    from megatron.core import parallel_state as ps

    from nemo_qwenlong.backends.megatron import cpu_compat
    from nemo_qwenlong.backends.megatron.model import build_gpt_model
    from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, hf_to_megatron, shard_for_tp

    rank = ps.get_tensor_model_parallel_rank()
    hf = hf_model(tied)
    cfg = hf.config.to_dict()
    shape = Qwen2Shape.from_hf_config(cfg)
    full = hf_to_megatron({k: v.detach() for k, v in hf.state_dict().items()}, shape)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(2))
    pos = torch.arange(SEQ).unsqueeze(0).expand(2, -1)
    weights = torch.randn(2, SEQ, VOCAB, generator=torch.Generator().manual_seed(3))  # loss = Σ w·logits
    hf_logits = hf(input_ids=ids).logits
    (hf_logits * weights).sum().backward()
    hf_grads = hf_to_megatron({k: p.grad for k, p in hf.named_parameters()}, shape)
    out, local_vocab = {}, VOCAB // tp
    for attention in ("sdpa", "dot_product"):
        model = build_gpt_model(cfg, tensor_parallel=tp, local_attention=attention).float()
        model.load_state_dict({k: shard_for_tp(k, v, rank, tp, shape) for k, v in full.items()}, strict=False)
        mask = cpu_compat.causal_mask(SEQ) if attention == "dot_product" else None  # SDPA ignores it anyway
        logits = model(ids, pos, mask)  # [b, s, V/TP]
        (logits * weights[..., rank * local_vocab:(rank + 1) * local_vocab]).sum().backward()
        parts = [torch.empty_like(logits) for _ in range(tp)]
        dist.all_gather(parts, logits.detach().contiguous(), group=ps.get_tensor_model_parallel_group())
        out[attention] = (torch.cat(parts, dim=-1), grads(model))
    ref_shards = {k: shard_for_tp(k, v, rank, tp, shape) for k, v in hf_grads.items() if k in out["sdpa"][1]}
    (sdpa_logits, sdpa_grads), (dot_logits, dot_grads) = out["sdpa"], out["dot_product"]
    return {"logits_vs_hf": float((sdpa_logits - hf_logits).abs().max()),
            "logits_vs_dot_product": float((sdpa_logits - dot_logits).abs().max()),
            "dot_product_logits_vs_hf": float((dot_logits - hf_logits).abs().max()),
            "grad_vs_dot_product": max_diff(sdpa_grads, dot_grads), "grad_vs_hf": max_diff(sdpa_grads, ref_shards),
            "grad_scale": max(float(g.abs().max()) for g in ref_shards.values()), "params": len(sdpa_grads)}


def make_batch(vocab: int, with_old: bool = True, n: int = 8, seed: int = 5):
    """megatron_policy_worker's rows at `vocab`, without old log-probs when `with_old` is False."""
    from tests.backends.megatron_policy_worker import make_batch as policy_rows

    batch = policy_rows(n=n, seed=seed, vocab=vocab)
    return batch if with_old else batch.replace(old_logprobs=None)


def policy(tp: int, hf, logprob_impl: str, padded_vocab_size: int | None = None, layout: str = "padded",
           micro_batch_tokens: int = 120):
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    par = ParallelismConfig(tensor_parallel=tp, transformer_impl="local", distributed_optimizer=False,
                            dist_backend="gloo", sequence_layout=layout)
    p = MegatronPolicy(hf.config.to_dict(), par, OptimConfig(lr=1e-3, weight_decay=0.0), dtype="float32",
                       micro_batch_tokens=micro_batch_tokens, logprob_chunk_tokens=7, temperature=TEMP,
                       padded_vocab_size=padded_vocab_size, logprob_impl=logprob_impl)
    p.load_hf_state_dict({k: v.detach().clone() for k, v in hf.state_dict().items()})
    return p


def rl_config(entropy_coef: float = 0.01):
    from nemo_qwenlong.config.training import RLConfig

    return RLConfig(clip_low=0.2, clip_high=0.28, kl_coef=0.0, entropy_coef=entropy_coef, loss_level="token")


def fused_vs_logits(tp: int, kind: str) -> dict:
    from nemo_qwenlong.algorithms.sequences import to_response_layout

    vocab = VOCAB - 1 if kind == "padded" else VOCAB  # 255 ids padded to 256 rows (at TP=2, rank 1 holds it)
    hf = hf_model(kind == "tied", vocab)
    batch, rl = make_batch(vocab), rl_config()
    out = {}
    for impl in ("logits", "fused"):
        p = policy(tp, hf, impl, padded_vocab_size=VOCAB if kind == "padded" else None)
        with torch.no_grad():
            layout = p._layout(batch)
            lp_s, ent_s = p._sequence_logprobs(layout, with_entropy=True)
        metrics = p.accumulate_gradients(batch, p.rl_loss(rl), p.rl_count(batch, rl))
        out[impl] = (to_response_layout(lp_s, layout), to_response_layout(ent_s, layout),
                     sum(m["loss"] for m in metrics), grads(p.module), len(metrics))
    (lp_a, ent_a, loss_a, g_a, n_micro), (lp_b, ent_b, loss_b, g_b, _) = out["logits"], out["fused"]
    return {"logprob": float((lp_a - lp_b).abs().max()), "entropy": float((ent_a - ent_b).abs().max()),
            "loss": abs(loss_a - loss_b), "grad": max_diff(g_a, g_b),
            "grad_scale": max(float(g.abs().max()) for g in g_a.values()), "micro_batches": n_micro}


def old_logprob_pass(tp: int) -> dict:
    """One update: gradients with old = detached current log-probs vs with a separate old-log-prob pass."""
    hf, rl = hf_model(False), rl_config()
    p = policy(tp, hf, "fused")
    batch = make_batch(VOCAB, with_old=False)
    count = p.rl_count(batch, rl)
    p.prepare_for_training()
    skipped = p.accumulate_gradients(batch, p.rl_loss(rl), count)
    g_skipped = grads(p.module)
    p.optimizer.zero_grad()
    p.prepare_for_generation()  # as loops.rl: rollout mode, then the old-log-prob pass, then training
    old = p.compute_logprobs(batch)
    p.prepare_for_training()
    passed = p.accumulate_gradients(batch.replace(old_logprobs=old), p.rl_loss(rl), count)
    g_passed = grads(p.module)
    return {"grads_bit_identical": all(torch.equal(g_skipped[k], g_passed[k]) for k in g_skipped),
            "grad_max_diff": max_diff(g_skipped, g_passed),
            "losses_equal": [m["loss"] for m in skipped] == [m["loss"] for m in passed],
            "grad_scale": max(float(g.abs().max()) for g in g_skipped.values()), "micro_batches": len(skipped)}


def shared_prompt_batch(vocab: int):
    """make_batch's rows with each group of 4 given its first row's prompt (as GRPO samples them)."""
    batch = make_batch(vocab, n=8, seed=9)
    first = (torch.arange(8) // 4) * 4
    return batch.replace(prompt_ids=batch.prompt_ids[first], prompt_lengths=batch.prompt_lengths[first])


def layouts_vs_padded(tp: int, kind: str) -> dict:
    """The packed (THD) and shared-prompt layouts vs the padded one on the same rows: response
    log-probs and entropy, the RL loss at token and sequence level and the SFT loss, each with every
    parameter's gradient. Rows come in groups of 4 sharing a prompt; `kind` "uniform" has rows of
    one length (SDPA's one-call paths), the others vary; "padded_pack" pads every packed row to a
    multiple of 4 and the pack to 8 (the padding CP/SP/FP8 need, without them: megatron's THD RoPE
    and SDPA then run rows whose valid length is below their padded one); "split" gives a 24-token
    budget, so each prompt group's tree is split over micro-batches."""
    from nemo_qwenlong.algorithms.batch import TokenRows
    from nemo_qwenlong.algorithms.sequences import to_response_layout

    hf = hf_model(kind == "tied")
    batch = shared_prompt_batch(VOCAB)
    if kind == "uniform":
        batch = batch.replace(prompt_lengths=torch.full((8,), 4), response_mask=torch.ones_like(batch.response_mask))
    if kind == "edges":  # group 0's prompt is one token (no trunk); one row of group 1 has an empty response
        lengths = batch.prompt_lengths.clone()
        lengths[:4] = 1
        mask = batch.response_mask.clone()
        mask[5] = False
        batch = batch.replace(prompt_lengths=lengths, response_mask=mask, response_ids=torch.where(mask, batch.response_ids, 0))
    sft = TokenRows(prompt_ids=batch.prompt_ids, prompt_lengths=batch.prompt_lengths,
                    response_ids=batch.response_ids, response_mask=batch.response_mask)
    out = {}
    for layout_name in ("padded", "packed", "shared_prompt"):
        p = policy(tp, hf, "fused", layout=layout_name, micro_batch_tokens=24 if kind == "split" else 64)
        if kind == "padded_pack" and layout_name == "packed":
            p.row_multiple, p.multiple = 4, 8
        with torch.no_grad():
            layout = p._layout(batch)
            lp_s, ent_s = p._sequence_logprobs(layout, with_entropy=True)
        res = {"logprob": to_response_layout(lp_s, layout), "entropy": to_response_layout(ent_s, layout),
               "tokens": sum(lay.tokens.numel() for _, _, lay in p._micro_batches(batch)),
               "pack_padding": int(layout.seq_len - layout.lengths.sum()) if layout_name == "packed" else 0,
               "probe": p.compute_logprobs(batch, temperature=1.0)}
        for level in ("token", "sequence"):
            rl = rl_config().model_copy(update={"loss_level": level})
            metrics = p.accumulate_gradients(batch, p.rl_loss(rl), p.rl_count(batch, rl))
            res[level] = (sum(m["loss"] for m in metrics), grads(p.module), len(metrics))
            p.optimizer.zero_grad()
        metrics = p.accumulate_gradients(sft, p.sft_loss, int(sft.response_mask.sum()))
        res["sft"] = (sum(m["loss"] for m in metrics), grads(p.module), len(metrics))
        out[layout_name] = res
    resp = batch.response_lengths.tolist()  # each group of 4: its prompt once (P − 1) + each branch (R + 1)
    trees = sum(int(batch.prompt_lengths[g * 4]) - 1 + sum(resp[i] + 1 for i in range(g * 4, g * 4 + 4)) for g in (0, 1))
    a, rep = out["padded"], {"tokens_padded": out["padded"]["tokens"], "tokens_trees": trees}
    for name in ("packed", "shared_prompt"):
        b = out[name]
        r = {k: float((a[k] - b[k]).abs().max()) for k in ("logprob", "entropy", "probe")} | {
            "tokens": b["tokens"], "pack_padding": b["pack_padding"]}
        for loss in ("token", "sequence", "sft"):
            r[loss] = {"loss": abs(a[loss][0] - b[loss][0]), "grad": max_diff(a[loss][1], b[loss][1]),
                       "grad_scale": max(float(g.abs().max()) for g in a[loss][1].values()),
                       "micro_batches": [a[loss][2], b[loss][2]]}
        rep[name] = r
    return rep


def refusals() -> dict:
    import torch.nn.functional as F
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from nemo_qwenlong.backends.megatron.sdpa_attention import SDPAttention

    def build(dropout: float) -> SDPAttention:
        cfg = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                                attention_dropout=dropout, activation_func=F.silu, use_cpu_initialization=True)
        return SDPAttention(cfg, 1, AttnMaskType.causal, "self")

    out = {}
    try:
        build(0.1)
    except ValueError as err:
        out["dropout"] = str(err)
    q, kv = torch.randn(5, 1, 4, 16), torch.randn(5, 1, 2, 16)
    try:
        build(0.0)(q, kv, kv, None, packed_seq_params=PackedSeqParams(qkv_format="sbhd"))
    except ValueError as err:
        out["packed"] = str(err)
    return out


def main() -> None:
    report = {}
    for tp in (1, 2):
        reinit(tp)
        if tp == 1:
            report["refusals"] = refusals()
        for tied in (False, True):
            report[f"attention-tp{tp}-{'tied' if tied else 'untied'}"] = attention_parity(tp, tied)
        for kind in ("untied", "tied", "padded"):
            report[f"logprobs-tp{tp}-{kind}"] = fused_vs_logits(tp, kind)
        report[f"old-pass-tp{tp}"] = old_logprob_pass(tp)
        for kind in ("untied", "tied", "uniform", "edges", "padded_pack", "split"):
            report[f"layouts-tp{tp}-{kind}"] = layouts_vs_padded(tp, kind)
    if dist.get_rank() == 0:
        print("ATTENTION " + json.dumps(report), flush=True)
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel

    destroy_parallel()


if __name__ == "__main__":
    main()
