"""Qwen2 HF <-> megatron-core mapping: fused QKV layout (hand-laid), gate/up, TE norm names, and
logits parity of a megatron-core GPTModel with transformers (a real gloo process, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
from nemo_qwenlong.backends.megatron.qwen2_mapping import (
    Qwen2Shape,
    fuse_qkv,
    hf_to_megatron,
    megatron_to_hf,
    shard_for_tp,
    split_qkv,
    unshard_tp,
)
from nemo_qwenlong.config.training import TinyArch
from tests.fixtures.vllm_server import free_port

WORKER = Path(__file__).with_name("megatron_parity_worker.py")


def test_fused_qkv_is_grouped_per_kv_head() -> None:
    # 4 query heads, 2 KV heads, head_dim 1: rows q0 q1 | q2 q3, k0 | k1, v0 | v1
    shape = Qwen2Shape(num_layers=1, num_heads=4, num_kv_heads=2, head_dim=1, tie_word_embeddings=False)
    q = torch.tensor([[10.0], [11.0], [12.0], [13.0]])
    k = torch.tensor([[20.0], [21.0]])
    v = torch.tensor([[30.0], [31.0]])
    fused = fuse_qkv(q, k, v, shape)
    # group 0: q0 q1 k0 v0; group 1: q2 q3 k1 v1
    assert fused.flatten().tolist() == [10, 11, 20, 30, 12, 13, 21, 31]
    q2, k2, v2 = split_qkv(fused, shape)
    assert torch.equal(q2, q) and torch.equal(k2, k) and torch.equal(v2, v)
    bias = fuse_qkv(q.flatten(), k.flatten(), v.flatten(), shape)  # biases: same layout, 1-D
    assert bias.tolist() == [10, 11, 20, 30, 12, 13, 21, 31]


def test_transformer_engine_norm_names_are_read() -> None:
    shape = Qwen2Shape(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=2, tie_word_embeddings=True)
    te = {
        "embedding.word_embeddings.weight": torch.ones(8, 4),
        "decoder.final_layernorm.weight": torch.ones(4),
        "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": torch.full((4,), 2.0),
        "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": torch.full((4,), 3.0),
        "decoder.layers.0.self_attention.linear_qkv.weight": torch.zeros(8, 4),
        "decoder.layers.0.self_attention.linear_qkv.bias": torch.zeros(8),
        "decoder.layers.0.self_attention.linear_proj.weight": torch.zeros(4, 4),
        "decoder.layers.0.self_attention.linear_proj._extra_state": None,
        "decoder.layers.0.mlp.linear_fc1.weight": torch.cat([torch.zeros(6, 4), torch.ones(6, 4)]),
        "decoder.layers.0.mlp.linear_fc2.weight": torch.zeros(4, 6),
    }
    hf = megatron_to_hf(te, shape)
    assert hf["model.layers.0.input_layernorm.weight"].tolist() == [2.0] * 4
    assert hf["model.layers.0.post_attention_layernorm.weight"].tolist() == [3.0] * 4
    assert hf["model.layers.0.mlp.up_proj.weight"].sum() == 24 and hf["model.layers.0.mlp.gate_proj.weight"].sum() == 0
    assert hf["lm_head.weight"] is te["embedding.word_embeddings.weight"]  # tied


def test_megatron_logits_match_transformers_tied_and_untied() -> None:
    out = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PARITY ")]
    assert out.returncode == 0 and lines, out.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("PARITY "))
    for case in ("tied", "untied"):
        r = report[case]
        assert r["shape"] == [2, 24, 256]
        assert r["max_abs_diff"] <= 1e-5, r  # fp32 parity with transformers' Qwen2ForCausalLM
        assert r["ref_scale"] > 0.1  # logits are not trivially zero
        assert r["roundtrip_exact"] and r["missing"] == [] and r["unexpected"] == []
    yarn = report["yarn"]  # model.yarn in training: megatron's YaRN equals transformers' (rope_scaling yarn)
    assert yarn["rope_type"] == "YarnRotaryEmbedding"
    assert yarn["max_abs_diff"] <= 1e-5, yarn
    assert yarn["plain_rope_diff"] > 1e-3, yarn  # plain RoPE would differ: the case exercises the scaling
    assert yarn["positions_table_equal"], yarn  # rope_at_positions (packed layouts) keeps YaRN's (table, factor)


def test_tp_shards_reassemble_bit_exact_and_split_by_group() -> None:
    torch.manual_seed(3)
    arch = TinyArch(vocab_size=64, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
    hf = Qwen2ForCausalLM(tiny_qwen2_config(arch, 64, eos_token_id=0)).state_dict()
    shape = Qwen2Shape.from_hf_config({"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                       "hidden_size": 64, "tie_word_embeddings": False})
    full = hf_to_megatron(hf, shape)
    for name, tensor in full.items():
        shards = [shard_for_tp(name, tensor, r, 2, shape) for r in range(2)]
        assert torch.equal(unshard_tp(name, shards, shape), tensor), name
    qkv = full["decoder.layers.0.self_attention.linear_qkv.weight"]  # 2 groups of (2 q + k + v) · 16 rows
    assert torch.equal(shard_for_tp("decoder.layers.0.self_attention.linear_qkv.weight", qkv, 1, 2, shape), qkv[64:])  # rank 1 = group 1
    fc1 = full["decoder.layers.0.mlp.linear_fc1.weight"]  # [gate(96); up(96)] -> rank 0 = [gate[:48]; up[:48]]
    assert torch.equal(shard_for_tp("decoder.layers.0.mlp.linear_fc1.weight", fc1, 0, 2, shape), torch.cat([fc1[:48], fc1[96:144]]))
    with pytest.raises(ValueError, match="2 KV heads cannot be split over tensor_parallel=4"):
        shard_for_tp("decoder.layers.0.self_attention.linear_qkv.weight", qkv, 0, 4, shape)


def test_tp2_over_two_gloo_processes_matches_transformers() -> None:
    worker = Path(__file__).with_name("megatron_tp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()), str(worker)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("TP2 ")]
    assert out.returncode == 0 and lines, (out.stdout[-2000:], out.stderr[-3000:])
    report = json.loads(lines[-1].removeprefix("TP2 "))
    for case in ("tied", "untied"):
        assert report[case]["local_vocab"] == 128  # vocab-parallel: each rank holds half of 256
        assert report[case]["max_abs_diff"] <= 1e-5, report
