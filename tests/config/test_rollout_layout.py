"""rollout.tensor_parallel against the layout (rollout.engine_layout): the pure rules, and the config
refusing at load a T that the cluster's ranks, a node, or the model's heads cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_qwenlong.config import ConfigError, load_config
from nemo_qwenlong.rollout.engine_layout import EngineShape, accepted, broken_rules, heads_allow, tp_problem

CONF = Path(__file__).resolve().parents[2] / "conf"
RECIPE_32B = CONF / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"


@pytest.mark.parametrize(("tp", "heads", "kv", "ok"), [
    (1, 4, 2, True), (2, 4, 2, True), (4, 4, 2, True),  # 4 > 2 KV heads: replicated
    (3, 4, 2, False), (8, 4, 2, False),  # 8 does not divide 4 query heads
    (8, 40, 8, True), (4, 40, 8, True), (40, 40, 8, True), (16, 40, 8, False), (5, 40, 8, False),  # 5: 8 % 5, 5 % 8
])
def test_heads_rule_is_vllms(tp: int, heads: int, kv: int, ok: bool) -> None:
    assert heads_allow(tp, heads, kv) is ok


def test_every_rule_and_the_accepted_values() -> None:
    shape = EngineShape(heads=40, kv_heads=8, ranks=32, ranks_per_node=8)
    assert accepted(shape) == [1, 2, 4, 8]
    assert broken_rules(4, shape) == [] and tp_problem(4, shape) is None
    assert accepted(EngineShape()) == list(range(1, 65))  # nothing known: any T the field allows
    assert accepted(EngineShape(heads=4, kv_heads=2)) == [1, 2, 4]
    three = tp_problem(3, EngineShape(heads=4, kv_heads=2, ranks=6, ranks_per_node=6))
    assert three is not None and three.startswith("rollout.tensor_parallel=3 does not split the model's 4 attention")
    assert three.endswith("accepted: 1, 2")
    sixteen = tp_problem(16, shape)
    assert sixteen is not None
    assert "does not divide the 8 ranks of a node (cluster.gpus_per_node)" in sixteen
    assert "does not split the model's 40 attention heads and 8 KV heads" in sixteen
    assert "ranks (cluster.nodes×cluster.gpus_per_node)" not in sixteen  # 16 divides 32


def test_the_launch_names_its_own_sources() -> None:
    shape = EngineShape(ranks=2, ranks_per_node=2, ranks_name="WORLD_SIZE", node_name="LOCAL_WORLD_SIZE")
    assert tp_problem(4, shape) == ("rollout.tensor_parallel=4 does not divide the 2 ranks (WORLD_SIZE) into replicas "
                                    "of T ranks; does not divide the 2 ranks of a node (LOCAL_WORLD_SIZE): a replica's "
                                    "T consecutive ranks must stay on one node; accepted: 1, 2")


@pytest.mark.parametrize(("overrides", "needle"), [
    (["rollout.tensor_parallel=16"], "rollout.tensor_parallel=16 does not divide the 8 ranks of a node "
                                     "(cluster.gpus_per_node)"),
    (["rollout.tensor_parallel=3", "cluster.gpus_per_node=6", "cluster.nodes=8", "parallelism.tensor_parallel=6",
      "parallelism.context_parallel=2"], "does not split the model's 40 attention heads and 8 KV heads"),
    (["cluster.nodes=1", "cluster.gpus_per_node=12", "parallelism.tensor_parallel=4", "parallelism.context_parallel=1",
      "rollout.tensor_parallel=8"], "does not divide the 12 ranks (cluster.nodes×cluster.gpus_per_node)"),
])
def test_the_config_refuses_a_layout_it_cannot_run(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE_32B, overrides)
    assert needle in str(err.value) and "accepted: " in str(err.value), str(err.value)


def test_the_tiny_model_heads_are_checked_on_cpu() -> None:
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel=3 does not split the model's 4 attention heads "
                                          r"and 2 KV heads .*accepted: 1, 2, 4"):
        load_config(CONF / "tiny-cpu.yaml", ["rollout.tensor_parallel=3"])
    load_config(CONF / "tiny-cpu.yaml", ["rollout.tensor_parallel=4"])  # the ranks are the launch's: checked by run
    load_config(CONF / "tiny-cpu.yaml", ["rollout.tensor_parallel=3", "rollout.backend=hf"])  # no vLLM engine


def test_an_unknown_model_gets_the_rank_rules_only() -> None:
    load_config(RECIPE_32B, ["model.path=/models/Other-70B", "model.geometry=null", "rollout.tensor_parallel=2"])
