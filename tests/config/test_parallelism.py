"""Parallel-layout settings that only GPU runs exercise: accepted values named, defaults justified."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nemo_qwenlong.planning import memory
from nemo_qwenlong.config.training import CP_COMM_TYPES, ParallelismConfig


@pytest.mark.parametrize("value", CP_COMM_TYPES)
def test_cp_comm_types_transformer_engine_accepts(value: str) -> None:
    assert ParallelismConfig(context_parallel=2, cp_comm_type=value).cp_comm_type == value


@pytest.mark.parametrize(("value", "hint"), [
    ("allgather", "its name is 'all_gather'"),  # TE: "Unsupported communication type"
    ("a2a+p2p", "hierarchical context-parallel groups"),  # needs hierarchical_context_parallel_sizes
    ("ring", ""),
])
def test_cp_comm_types_that_would_fail_on_the_cluster_are_refused(value: str, hint: str) -> None:
    with pytest.raises(ValidationError) as err:
        ParallelismConfig(context_parallel=2, cp_comm_type=value)
    text = str(err.value)
    assert f"parallelism.cp_comm_type={value!r}" in text and "('p2p', 'all_gather', 'a2a')" in text
    assert hint in text


@pytest.mark.parametrize("comm", CP_COMM_TYPES)
def test_packed_sequences_take_every_cp_comm_type(comm: str) -> None:
    # TE 2.20's all-gather and a2a context-parallel attention take THD (issue 25.5; the old refusal
    # dated from TE's `qkv_format != "thd"` asserts). GPU parity: test_megatron_gpu.py, packed cp2_*.
    for cp in (1, 2):
        cfg = ParallelismConfig(context_parallel=cp, cp_comm_type=comm, sequence_layout="packed")
        assert (cfg.sequence_layout, cfg.cp_comm_type) == ("packed", comm)


@pytest.mark.parametrize(("layout", "kw", "needs"), [
    ("shared_prompt", {}, "transformer_impl='local' with local_attention='sdpa'"),  # TE default spec
    ("shared_prompt", {"transformer_impl": "local", "local_attention": "dot_product"}, "local_attention='sdpa'"),
    ("packed", {"transformer_impl": "local", "local_attention": "dot_product"}, "no packed path"),
])
def test_layouts_refuse_the_attention_that_cannot_run_them(layout: str, kw: dict, needs: str) -> None:
    with pytest.raises(ValidationError, match=needs):
        ParallelismConfig(sequence_layout=layout, **kw)
    with pytest.raises(ValidationError, match="'padded', 'packed' or 'shared_prompt'"):
        ParallelismConfig(sequence_layout="tree")


def test_recompute_default_follows_the_memory_estimate() -> None:
    """With TE flash attention nothing [S×S] is stored, so selective recompute (core attention)
    frees under 5 % of the activations while re-running attention, the costliest kernel at 60K:
    the default is none, and the 32B recipe on 80 GB GPUs needs full (docs/megatron.md)."""
    g, layout = memory.R1_DISTILL_QWEN_32B, dict(tokens=80_000, tensor_parallel=8, context_parallel=4)
    none, selective, full = (memory.activation_bytes(g, r, **layout) for r in ("none", "selective", "full"))
    assert (none - selective) / none < 0.05
    assert full < none / 10
    total = {r: memory.training_bytes(g, r, data_parallel=1, **layout) / memory.GIB for r in ("none", "full")}
    assert total["none"] > 0.85 * 80 * 1e9 / memory.GIB  # does not fit an 80 GB H100 with headroom
    assert total["full"] < 0.6 * 80 * 1e9 / memory.GIB  # fits with room for logits chunks and buffers
    assert total["none"] < 0.6 * 141 * 1e9 / memory.GIB  # an H200 could skip recompute
    assert ParallelismConfig().recompute == "none"


def test_the_32b_recipe_uses_full_recompute(repo_root) -> None:  # noqa: ANN001
    import yaml

    base = yaml.safe_load((repo_root / "conf/qwenlong-l1/base-r1distill32b-4n8g.yaml").read_text())
    assert base["parallelism"]["recompute"] == "full"
    assert base["parallelism"]["cp_comm_type"] in CP_COMM_TYPES
