"""Every YAML recipe under conf/ resolves and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_qwenlong.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf"
RECIPES = sorted(CONF.rglob("*.yaml"))


def test_there_are_recipes() -> None:
    names = {p.name for p in RECIPES}
    assert "tiny-cpu.yaml" in names
    assert "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_validates(path: Path) -> None:
    cfg = load_config(path)
    # Recipes must stay buildable: the curriculum is ordered and fits the output cap.
    caps = [s.max_input_tokens for s in cfg.curriculum.stages]
    assert caps == sorted(caps)
    assert all(s.max_output_tokens <= cfg.rollout.max_new_tokens for s in cfg.curriculum.stages)


def test_paper_recipe_values() -> None:
    cfg = load_config(CONF / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml")
    assert cfg.rl.clip_high == 0.28 and cfg.rl.clip_low == 0.2
    assert [s.max_input_tokens for s in cfg.curriculum.stages] == [20000, 60000]
    assert cfg.curriculum.stages[1].retrospective.share > 0
    assert (cfg.parallelism.tensor_parallel, cfg.parallelism.context_parallel) == (8, 4)
    assert cfg.cluster.nodes * cfg.cluster.gpus_per_node == 32


def test_grpo_recipe_switches_off_dapo_parts() -> None:
    cfg = load_config(CONF / "qwenlong-l1" / "grpo-r1distill32b-2stage-4n8g-tp8cp4.yaml")
    assert cfg.rl.loss_level == "sequence"
    assert not cfg.rl.dynamic_sampling.enable and not cfg.rl.overlong.enable


@pytest.mark.parametrize(("size", "layout", "cp", "nodes"), [("32b", "4n8g-tp8cp4", 4, 4), ("14b", "2n8g-tp8cp2", 2, 2)])
def test_stage_recipes_cover_one_curriculum_stage_each(size: str, layout: str, cp: int, nodes: int) -> None:
    one = load_config(CONF / "qwenlong-l1" / f"dapo-r1distill{size}-stage1-20k-{layout}.yaml")
    two = load_config(CONF / "qwenlong-l1" / f"dapo-r1distill{size}-stage2-60k-{layout}.yaml")
    assert [(s.min_input_tokens, s.max_input_tokens) for s in one.curriculum.stages] == [(0, 20000)]
    assert [(s.min_input_tokens, s.max_input_tokens) for s in two.curriculum.stages] == [(20000, 60000)]
    assert one.pipeline == ["data", "rl", "export"] and "eval" in two.pipeline
    assert two.model.path.endswith("02-export/hf")  # stage 2 starts from the stage-1 export
    for cfg in (one, two):
        assert cfg.rl.clip_high == 0.28 and size.upper() in cfg.model.path.upper()
        assert (cfg.parallelism.context_parallel, cfg.cluster.nodes) == (cp, nodes)


def test_the_sample_cluster_file_validates_as_a_slurm_overlay() -> None:
    cfg = load_config(CONF / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml",
                      overlays=[CONF / "cluster" / "example-slurm.yaml"])
    assert cfg.cluster.executor == "slurm" and cfg.cluster.job_dir and cfg.runs_dir.startswith("/")
    assert cfg.cluster.nodes == 4 and cfg.cluster.judge.model_path  # the recipe keeps the job's shape


@pytest.mark.parametrize(("recipe", "world", "rollout_tp", "replicas"), [
    ("dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml", 32, 4, 8),
    ("dapo-r1distill14b-2stage-2n8g-tp8cp2.yaml", 16, 4, 4),
    ("dapo-r1distill7b-2stage-1n8g-tp4cp2.yaml", 8, 2, 4),
    ("dapo-r1distill1.5b-2stage-1n1g.yaml", 1, 1, 1),
])
def test_cluster_recipes_hold_r_vllm_replicas(recipe: str, world: int, rollout_tp: int, replicas: int) -> None:
    """Every cluster recipe generates with vLLM replicas inside the trainer ranks: R = W/T."""
    from nemo_qwenlong.planning.hardware import KNOWN_MODELS
    from nemo_qwenlong.planning.report import layout_for

    cfg = load_config(CONF / "qwenlong-l1" / recipe)
    lay = layout_for(cfg, input_tokens=60000, output_tokens=10000)
    assert cfg.rollout.backend == "vllm" and (lay.world, lay.rollout_tp, lay.rollout_replicas) == (world, rollout_tp,
                                                                                                   replicas)
    g = KNOWN_MODELS[cfg.model.geometry]
    assert g.heads % rollout_tp == 0 and (g.kv_heads % rollout_tp == 0 or rollout_tp % g.kv_heads == 0)


def test_one_node_recipes_share_the_node_with_the_judge() -> None:
    seven = load_config(CONF / "qwenlong-l1" / "dapo-r1distill7b-2stage-1n8g-tp4cp2.yaml")
    small = load_config(CONF / "qwenlong-l1" / "dapo-r1distill1.5b-2stage-1n1g.yaml")
    assert (seven.cluster.nodes, seven.cluster.gpus_per_node, small.cluster.nodes, small.cluster.gpus_per_node) == (
        1, 8, 1, 1)
    assert seven.model.geometry == "deepseek-r1-distill-qwen-7b"
    assert small.model.geometry == "deepseek-r1-distill-qwen-1.5b"
    for cfg in (seven, small):
        assert cfg.cluster.judge.placement == "trainer_node" and cfg.rl.clip_high == 0.28
        assert len(cfg.curriculum.stages) == 2  # the released two-stage curriculum
        assert cfg.rl.train_batch_size // cfg.rl.mini_batch_size == 4  # optimiser steps per batch, as released
    big = load_config(CONF / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml")
    assert big.cluster.judge.placement == "own_node"  # the schema default


@pytest.mark.parametrize(("size", "layout", "cp", "nodes"), [("32b", "4n8g-tp8cp4", 4, 4), ("14b", "2n8g-tp8cp2", 2, 2)])
def test_three_stage_recipes(size: str, layout: str, cp: int, nodes: int) -> None:
    """QwenLong-L1.5's curriculum: 20K/12K → 60K/20K → 120K/50K, YaRN ×6 over 32,768 for the 170K stage."""
    cfg = load_config(CONF / "qwenlong-l15" / f"dapo-r1distill{size}-3stage-{layout}.yaml")
    stages = [(s.min_input_tokens, s.max_input_tokens, s.max_output_tokens) for s in cfg.curriculum.stages]
    assert stages == [(0, 20000, 12000), (20000, 60000, 20000), (60000, 120000, 50000)]
    assert [s.retrospective.share > 0 for s in cfg.curriculum.stages] == [False, True, True]
    assert cfg.rollout.max_new_tokens == 50000
    yarn = cfg.model.yarn
    assert yarn.factor * yarn.original_max_position_embeddings == 196608 >= 170000
    assert (cfg.parallelism.context_parallel, cfg.cluster.nodes) == (cp, nodes)
    assert cfg.model.geometry == f"deepseek-r1-distill-qwen-{size}"
