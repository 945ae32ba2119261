"""The planner's formulas on a small model, each expected value computed by hand in the comment beside it."""

from __future__ import annotations

import pytest

from nemo_qwenlong.planning import memory as mem
from nemo_qwenlong.planning.hardware import GPUS, Assumptions, Gpu, geometry_from_hf_config, known_geometry
from nemo_qwenlong.planning.layout import Layout, colocation_problems, memory_plan
from nemo_qwenlong.planning.memory import R1_DISTILL_QWEN_32B, Geometry
from nemo_qwenlong.planning.report import Batch, step_times
from nemo_qwenlong.planning.steptime import decode_estimate, forward_flops, training_flops

# h=8, f=16, 2 query heads and 1 KV head of d=4 (q=8, kv=4), V=32, 2 layers, untied
G = Geometry(layers=2, hidden=8, ffn=16, heads=2, kv_heads=1, head_dim=4, vocab=32)
GPU = Gpu("test", memory_bytes=100_000, bf16_flops=1e6, hbm_bytes_per_s=1000)
NO_SLACK = Assumptions(reserve_gib=0, engine_asleep_gib=0, graph_reserve_gib=0, train_mfu=0.5, prefill_mfu=0.5,
                       decode_bandwidth=1.0)


def layout(**changes) -> Layout:  # noqa: ANN003
    base = dict(world=8, gpus_per_node=4, tensor_parallel=2, pipeline_parallel=1, context_parallel=2, recompute="full",
                distributed_optimizer=True, param_bytes=2, micro_batch_tokens=64, logprob_chunk=8, full_logits=True,
                rollout_tp=2,
                gpu_memory_utilization=0.5, max_num_batched_tokens=10, seq_tokens=14)
    return Layout(**(base | changes))


def test_parameter_counts() -> None:
    # layer matmuls: QKV 8·(8+2·4)=128, proj 8·8=64, gate/up/down 3·8·16=384 -> 576
    assert G.layer_matmul_params == 576
    # per layer + QKV bias 16 + two norms 16 = 608; ×2 layers + embedding and output 2·32·8 + final norm 8
    assert G.params == 2 * 608 + 512 + 8 == 1736
    assert G.matmul_params == 2 * 576 + 256 == 1408  # output layer counts, the embedding lookup does not
    assert R1_DISTILL_QWEN_32B.params == 32_763_876_352  # the published 32.8 B
    assert known_geometry("/models/DeepSeek-R1-Distill-Qwen-32B/") == R1_DISTILL_QWEN_32B
    assert geometry_from_hf_config({"num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16,
                                    "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32}) == G


def test_static_memory() -> None:
    assert mem.weight_bytes(G, model_parallel=2) == 1736  # 1736 params × 2 B / TP 2
    assert mem.gradient_bytes(G, model_parallel=2) == 3472  # × 4 B / 2
    assert mem.master_bytes(G, model_parallel=2, optimizer_shards=4) == 868  # × 4 B / 2 / (DP 2 × CP 2)
    assert mem.optimizer_bytes(G, model_parallel=2, optimizer_shards=4) == 2604  # master + 2 moments
    assert mem.optimizer_bytes(G, model_parallel=2, optimizer_shards=1) == 10416  # not distributed
    assert mem.static_bytes(G, tensor_parallel=2, context_parallel=2, data_parallel=2) == 1736 + 3472 + 2604
    assert mem.static_bytes(G, tensor_parallel=2, context_parallel=2, data_parallel=2,
                            distributed_optimizer=False) == 1736 + 3472 + 10416


def test_activations_and_logprob_temporaries() -> None:
    # saved per token per layer (none): 6·8 + 2·4 + 3·16 = 104 values; 64 tokens / CP 2 = 32 per GPU
    assert mem.activation_bytes(G, "none", tokens=64, tensor_parallel=2, context_parallel=2) == 104 * 2 * 32 * 2 / 2
    # full: each layer's input (8) × 2 layers + one layer's 104, 32 tokens, bf16, / TP 2 = 3840
    assert mem.activation_bytes(G, "full", tokens=64, tensor_parallel=2, context_parallel=2) == 3840
    # training: bf16 logits and gradient 2·32·(32/2)·2 = 2048 + 4 fp32 chunks 4·8·16·4 = 2048
    assert mem.logprob_bytes(G, tokens=64, chunk=8, tensor_parallel=2, context_parallel=2, backward=True) == 4096
    # no grad: logits 1024 + 3 chunks 1536 + one layer's working set 104·32·2/2 = 3328
    assert mem.logprob_bytes(G, tokens=64, chunk=8, tensor_parallel=2, context_parallel=2, backward=False) == 5888
    # fused: one chunk's logits (8 rows) instead of all 32: 2·8·16·2 = 512 + 2048
    assert mem.logprob_bytes(G, tokens=64, chunk=8, tensor_parallel=2, context_parallel=2, backward=True,
                             full_logits=False) == 2560
    assert mem.logprob_bytes(G, tokens=64, chunk=8, tensor_parallel=2, context_parallel=2, backward=False,
                             full_logits=False) == 256 + 1536 + 3328
    with pytest.raises(ValueError, match="recompute='some'"):
        mem.saved_values_per_token(G, "some")


def test_engine_memory() -> None:
    assert mem.kv_bytes_per_token(G, rollout_tp=1) == 2 * 2 * 1 * 4 * 2 == 32  # K+V × L × kv heads × d × bf16
    assert mem.kv_bytes_per_token(G, rollout_tp=2) == 32  # one KV head: replicated, not split
    assert mem.kv_bytes_per_token(R1_DISTILL_QWEN_32B, rollout_tp=4) == 2 * 64 * 2 * 128 * 2  # 64 KiB
    # per token 4·8 + (2·16 + 8 + 2·4)/1 = 80 values, × 10 tokens × 2 B
    assert mem.engine_overhead_bytes(G, rollout_tp=1, batched_tokens=10, graph_reserve=0) == 1600


def test_phase_peaks() -> None:
    m = memory_plan(G, layout(), GPU, NO_SLACK)
    assert m.engine_share == 50_000  # 0.5 × 100 000
    assert m.engine_overhead == 10 * (32 + 48 / 2) * 2 == 1120
    assert m.kv_cache == 50_000 - 1736 - 1120 == 47_144 and m.kv_tokens == 47_144 / 32
    # rollouts: weights 1736 + grads 3472 + masters 868 + old-log-prob pass 5888 + engine 50 000
    assert m.rollout_peak == 61_964
    # training: weights + grads + optimiser 2604 + activations 3840 + log-probs 4096 (engine asleep: 0)
    assert m.training_peak == 15_748 and m.training_peak_engine_awake == 65_748
    # not distributed: masters ×4 (+2604) in rollouts, optimiser 10 416 instead of 2604 in training
    assert m.peaks_without_distributed_optimizer(4) == (61_964 + 2604, 15_748 + 7812)


def test_colocation_problems_name_the_settings() -> None:
    assert colocation_problems(G, layout(), GPU, NO_SLACK) == []
    small = Gpu("small", memory_bytes=60_000, bf16_flops=1e6, hbm_bytes_per_s=1000)
    (too_much,) = colocation_problems(G, layout(gpu_memory_utilization=0.97), small, NO_SLACK)
    # resident 1736 + 3472 + 868 = 6076; (60 000 - 6076) / 60 000 = 0.899
    assert "rollout.gpu_memory_utilization=0.97" in too_much and "to <= 0.90" in too_much
    (no_kv,) = colocation_problems(G, layout(gpu_memory_utilization=0.03), GPU, NO_SLACK)
    assert "one 14-token rollout needs" in no_kv  # KV 3000 - 1736 - 1120 = 144 B < 14 tokens × 32 B
    assert colocation_problems(None, layout(rollout_tp=3), GPU, NO_SLACK) == []  # layout rules: rollout.engine_layout


def test_flops() -> None:
    # 2·1408·10 + 2·2·8·10² = 28 160 + 3200
    assert forward_flops(G, 10) == 31_360
    assert training_flops(G, 10, recompute="none") == 3 * 31_360
    assert training_flops(G, 10, recompute="full") == 4 * 31_360
    assert training_flops(G, 10, recompute="selective") == 3 * 31_360 + 3200  # core attention again


def test_decode_is_bandwidth_bound_in_waves() -> None:
    kw = dict(group_size=2, input_tokens=10, output_tokens=4, rollout_tp=1, max_num_seqs=256, weights_per_gpu=1000,
              hbm_bytes_per_s=1000, bandwidth_share=1.0, peak_flops=1e6, mfu=1.0, prompts_per_engine=5)
    d = decode_estimate(G, kv_tokens=40, prefix_caching=True, **kw)
    # a group holds 10 + 2·4 = 18 tokens: 2 groups (4 sequences) in 40; 5 prompts -> 3 waves
    # step: weights 1000 + 4 seqs × mean context (10 + 4/2) × 32 B = 2536 B at 1000 B/s
    assert (d.groups_resident, d.sequences_resident, d.waves, d.step_seconds) == (2, 4, 3, 2.536)
    assert d.seconds == pytest.approx(3 * 4 * 2.536)
    plain = decode_estimate(G, kv_tokens=40, prefix_caching=False, **kw)  # 2·(10+4) = 28: one group
    assert (plain.groups_resident, plain.waves, plain.step_seconds) == (1, 5, 1.768)
    tight = decode_estimate(G, kv_tokens=15, prefix_caching=True, **kw)  # one 14-token sequence at a time
    assert (tight.groups_resident, tight.sequences_resident, tight.waves) == (0, 1, 10)


def test_step_times() -> None:
    lay = layout()
    b = Batch(gen_prompts=4, train_prompts=2, group_size=2, input_tokens=10, output_tokens=4, epochs=1,
              optimizer_steps=2, reference_pass=False, prefix_caching=True)
    t = step_times(G, lay, b, GPU, memory_plan(G, lay, GPU, NO_SLACK), NO_SLACK)
    # compute: 8 GPUs × 1e6 × MFU 0.5 = 4e6 FLOP/s; forward(14) = 2·1408·14 + 2·2·8·14² = 45 696
    assert t.train == pytest.approx(4 * 4 * 45_696 / 4e6)  # 4 sequences, full recompute = 4 forwards
    assert t.old_logprobs == pytest.approx(4 * 45_696 / 4e6)  # two optimiser steps: the old pass runs
    assert t.prefill == pytest.approx(4 * 31_360 / 4e6)  # 4 prompts prefilled once each (prefix caching)
    assert t.reference == 0


def test_gpus() -> None:
    assert GPUS["h100"].memory_bytes / mem.GIB == pytest.approx(79.65, abs=0.01)
    assert GPUS["h200"].memory_bytes / mem.GIB == pytest.approx(140.40, abs=0.01)


def test_device_fit_problem_names_the_estimate_and_the_device() -> None:
    """The run's hardware check: the 32B stage-2 recipe on a 24 GiB GPU is refused with both numbers;
    on an H200's memory it fits; an unknown model is not judged."""
    from pathlib import Path

    from nemo_qwenlong.config import load_config
    from nemo_qwenlong.planning.report import device_fit_problem

    recipe = Path(__file__).resolve().parents[2] / "conf" / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"
    cfg = load_config(str(recipe), [])
    problem = device_fit_problem(cfg, memory_bytes=24 * 2**30, device="small GPU")
    assert problem is not None and "this small GPU has 24.0 GiB" in problem and "the planner estimates" in problem
    assert device_fit_problem(cfg, memory_bytes=143_771 * 2**20, device="H200") is None
    unknown = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": "/models/other", "geometry": None})})
    assert device_fit_problem(unknown, memory_bytes=1.0, device="x") is None
