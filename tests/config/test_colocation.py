"""The config refuses GPU layouts whose trainer and colocated vLLM engine cannot share the GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_qwenlong.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "qwenlong-l1"
RECIPES_32B = sorted(CONF.glob("*r1distill32b*.yaml"))


@pytest.mark.parametrize("path", RECIPES_32B, ids=lambda p: p.name)
def test_the_32b_recipes_coexist_on_h100(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.cluster.gpu == "h100" and cfg.rollout.tensor_parallel == 4


@pytest.mark.parametrize(("overrides", "needles"), [
    # trainer keeps 26.7 GiB (weights + fp32 grads + fp32 masters at TP 8, 4 shards), 5 GiB reserve, 79.6 GiB
    (["rollout.gpu_memory_utilization=0.7"], ["during rollouts the trainer keeps 26.7 GiB",
                                              "lower rollout.gpu_memory_utilization to <= 0.60"]),
    (["parallelism.distributed_optimizer=false"], ["optimiser shards=1", "set parallelism.distributed_optimizer=true"]),
    (["rollout.gpu_memory_utilization=0.2"], ["one 70000-token rollout needs 4.3 GiB"]),  # 16 GiB < 15.3 weights + KV
])
def test_layouts_that_cannot_coexist_are_refused(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml", overrides)
    text = str(err.value)
    assert "trainer and rollout engine cannot share the GPUs" in text
    for needle in needles:
        assert needle in text, text


def test_h200_leaves_room_for_a_larger_engine_share() -> None:
    cfg = load_config(CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml",
                      ["cluster.gpu=h200", "rollout.gpu_memory_utilization=0.7"])
    assert cfg.rollout.gpu_memory_utilization == 0.7


def test_cpu_runs_and_unknown_models_skip_the_memory_check() -> None:
    load_config(Path(__file__).resolve().parents[2] / "conf" / "tiny-cpu.yaml")
    # an unknown model: sizes unknown, the node rule still applies
    load_config(CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml",
                ["model.path=/models/Other-70B", "model.geometry=null", "rollout.gpu_memory_utilization=0.95"])
    with pytest.raises(ConfigError, match="rollout.tensor_parallel=16 does not divide the 8 ranks of a node"):
        load_config(CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml",
                    ["model.path=/models/Other-70B", "model.geometry=null", "rollout.tensor_parallel=16"])


def test_a_later_stage_is_checked_with_the_named_geometry() -> None:
    """A stage-2 job starts from the stage-1 export (a folder not named after the model): model.geometry sizes it."""
    cfg = load_config(CONF / "dapo-r1distill32b-stage2-60k-4n8g-tp8cp4.yaml")
    assert cfg.model.geometry == "deepseek-r1-distill-qwen-32b" and "export" in cfg.model.path
    with pytest.raises(ConfigError, match="lower rollout.gpu_memory_utilization"):
        load_config(CONF / "dapo-r1distill32b-stage2-60k-4n8g-tp8cp4.yaml", ["rollout.gpu_memory_utilization=0.7"])
    with pytest.raises(ConfigError, match="model.geometry='deepseek-r1-distill-qwen-32b' does not match model.path"):
        load_config(CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml", ["model.path=/m/DeepSeek-R1-Distill-Qwen-14B"])


def test_cluster_gpu_names_the_planner_gpus() -> None:
    import typing

    from nemo_qwenlong.config.operations import ClusterConfig
    from nemo_qwenlong.planning.hardware import GPUS

    assert set(typing.get_args(ClusterConfig.model_fields["gpu"].annotation)) == set(GPUS)


def test_model_geometry_names_the_planner_models() -> None:
    import typing

    from nemo_qwenlong.config.training import ModelConfig
    from nemo_qwenlong.planning.hardware import KNOWN_MODELS

    literal = typing.get_args(ModelConfig.model_fields["geometry"].annotation)[0]
    assert set(typing.get_args(literal)) == set(KNOWN_MODELS)


def test_a_judge_on_the_trainer_node_is_checked_and_named() -> None:
    """cluster.judge.placement=trainer_node: its share is counted on GPU 0 with the trainer and the engine;
    bad combinations are refused when the config loads, naming the field."""
    recipe = CONF / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"
    with pytest.raises(ConfigError) as err:  # 26.7 trainer + 39.8 vLLM + 5 reserve leave 8.1 GiB: 0.10 of 79.6
        load_config(recipe, ["cluster.judge.placement=trainer_node", "cluster.judge.gpu_memory_utilization=0.2"])
    assert "cluster.judge.gpu_memory_utilization=0.2 × 79.6 GiB = 15.9 GiB" in str(err.value)
    assert "lower cluster.judge.gpu_memory_utilization to <= 0.10" in str(err.value)
    assert "set cluster.judge.placement=own_node" in str(err.value)
    # own node: the same share is not counted against the trainer's GPUs
    load_config(recipe, ["cluster.judge.gpu_memory_utilization=0.2"])
    one_gpu = CONF / "dapo-r1distill1.5b-2stage-1n1g.yaml"
    with pytest.raises(ConfigError, match=r"cluster.judge.gpus=2 GPU\(s\) of the first trainer node, which has "
                                          r"cluster.gpus_per_node=1"):
        load_config(one_gpu, ["cluster.judge.gpus=2"])
    with pytest.raises(ConfigError, match="cluster.judge.extra_args sets --gpu-memory-utilization"):
        load_config(one_gpu, ['cluster.judge.extra_args=["--gpu-memory-utilization", "0.3"]'])
    with pytest.raises(ConfigError, match="Input should be 'own_node' or 'trainer_node'"):
        load_config(one_gpu, ["cluster.judge.placement=shared"])
    # no launched judge (judge_when never): nothing is taken from the GPU
    load_config(recipe, ["cluster.judge.placement=trainer_node", "cluster.judge.gpu_memory_utilization=0.2",
                         "reward.judge_when=never"])
