"""`nemo-qwenlong plan`: the 32B stage-2 recipe shows a layout that fits, with its numbers; bad input exits 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.helpers_cli import assert_named_error, cli

RECIPE = "conf/qwenlong-l1/dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"


def row(out: str, label: str) -> list[str]:
    """The value columns of the row that starts with `label`."""
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(label))
    return re.split(r"\s{2,}", line.strip())[1:]


def test_32b_stage2_fits_h100_and_h200(repo_root: Path) -> None:
    code, out, err = cli("plan", "--recipe", str(repo_root / RECIPE))
    assert code == 0, err
    assert "stage 1 (stage2-60k): 60000 input + 10000 output tokens" in out and "32.76 B parameters" in out
    assert "TP×PP×CP×DP = 8×1×4×1" in out and "rollout replicas R = W/T = 32/4 = 8 (vLLM TP=4 each)" in out
    # 32.76e9 params / TP 8: × 2 B = 7.6 GiB, × 4 B = 15.3 GiB, × 12 B / (DP×CP 4) = 11.4, unsharded 45.8
    assert row(out, "weights (bf16)") == ["7.6", "7.6"]
    assert row(out, "gradients (fp32 buffer)") == ["15.3", "15.3"]
    assert row(out, "optimiser, distributed") == ["11.4", "11.4"]
    assert row(out, "optimiser, not distributed") == ["45.8", "45.8"]
    assert row(out, "activations") == ["2.1", "2.1"]  # the recompute table in docs/megatron.md
    assert row(out, "share") == ["39.8", "70.2"]  # 0.5 × 79.6 / 140.4 GiB
    assert row(out, "fits?") == ["fits", "fits"]
    assert row(out, "KV cache, tokens per replica") == ["375K", "873K"]
    assert row(out, "KV cache, tokens over all 8 replicas") == ["3001K", "6982K"]
    # 384 prompts over 8 replicas: 48 each; at 2 resident groups per H100 replica, 24 waves
    assert "the fullest gets 48 prompts × 8 samples = 384 sequences" in out
    assert row(out, "groups resident per replica / waves") == ["2 / 24", "6 / 8"]
    assert "decode per replica" in out and "training: forward + backward + recompute" in out
    assert "judge on the first node" not in out  # the 32B recipes give the judge its own node
    assert "not calibrated against GPU measurements" in out


def test_an_override_that_breaks_the_layout_is_named(repo_root: Path) -> None:
    assert_named_error(cli("plan", "--recipe", str(repo_root / RECIPE), "rollout.gpu_memory_utilization=0.7"),
                       "plan error:", "lower rollout.gpu_memory_utilization to <= 0.60")
    code, out, _ = cli("plan", "--recipe", str(repo_root / RECIPE), "rollout.gpu_memory_utilization=0.7",
                       "cluster.gpu=h200", "--gpu", "h200")
    assert code == 0 and row(out, "fits?") == ["fits"]


def test_bad_input_exits_2(repo_root: Path, tmp_path: Path) -> None:
    assert_named_error(cli("plan", "--recipe", str(repo_root / RECIPE), "--stage", "stage9"),
                       "plan error: --stage 'stage9'", "0 (stage1-20k), 1 (stage2-60k)")
    assert_named_error(cli("plan", "--recipe", str(repo_root / "conf/tiny-cpu.yaml")),
                       "plan error:", "cluster.gpus_per_node=0 is a CPU recipe")
    assert_named_error(cli("plan", "--recipe", str(repo_root / RECIPE), "model.path=/nowhere/MyModel",
                           "model.geometry=null"), "plan error: model.path='/nowhere/MyModel'", "--hf-config")
    assert_named_error(cli("plan", "--recipe", str(repo_root / RECIPE), "--train-mfu", "0"),
                       "must be a finite number > 0")
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    assert_named_error(cli("plan", "--recipe", str(repo_root / RECIPE), "--hf-config", str(bad)),
                       f"plan error: --hf-config {bad}")


def test_the_stage2_job_plans_with_its_named_geometry(repo_root: Path) -> None:
    recipe = repo_root / "conf/qwenlong-l1/dapo-r1distill32b-stage2-60k-4n8g-tp8cp4.yaml"
    code, out, err = cli("plan", "--recipe", str(recipe))
    assert code == 0, err
    assert "model.geometry=deepseek-r1-distill-qwen-32b" in out and row(out, "fits?") == ["fits", "fits"]


def test_hf_config_gives_the_geometry(repo_root: Path, tmp_path: Path) -> None:
    cfg = {"num_hidden_layers": 48, "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
           "num_key_value_heads": 8, "vocab_size": 152064}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    recipe = repo_root / "conf/qwenlong-l1/dapo-r1distill14b-2stage-2n8g-tp8cp2.yaml"
    code, out, err = cli("plan", "--recipe", str(recipe), "--hf-config", str(tmp_path / "config.json"),
                         "--output-tokens", "3000")
    assert code == 0, err
    assert "14.77 B parameters" in out and "60000 input + 3000 output tokens" in out


def test_the_one_node_recipes_fit_an_h100_with_the_judge_on_gpu_0(repo_root: Path) -> None:
    """7B on 8 GPUs (R = 8/2 = 4) and 1.5B on one GPU (R = 1): the judge's 0.1 share (8.0 GiB of an H100)
    is added on GPU 0, and both still fit."""
    seven = repo_root / "conf/qwenlong-l1/dapo-r1distill7b-2stage-1n8g-tp4cp2.yaml"
    code, out, err = cli("plan", "--recipe", str(seven), "--gpu", "h100")
    assert code == 0, err
    assert "7.62 B parameters" in out and "rollout replicas R = W/T = 8/2 = 4 (vLLM TP=2 each)" in out
    assert "TP×PP×CP×DP = 4×1×2×1" in out and "the fullest gets 24 prompts × 8 samples" in out
    assert row(out, "judge vLLM share") == ["8.0"] and row(out, "fits?") == ["fits"]
    assert float(row(out, "rollouts + judge")[0]) <= 79.6
    small = repo_root / "conf/qwenlong-l1/dapo-r1distill1.5b-2stage-1n1g.yaml"
    code, out, err = cli("plan", "--recipe", str(small), "--gpu", "h100")
    assert code == 0, err
    assert "1.78 B parameters" in out and "rollout replicas R = W/T = 1/1 = 1" in out
    assert row(out, "judge vLLM share") == ["8.0"] and row(out, "fits?") == ["fits"]
    assert float(row(out, "rollouts + judge")[0]) <= 79.6
