"""The Megatron policy over 2 real gloo ranks (one torchrun launch; see megatron_policy_worker.py):
TP=2 log-probs/entropy/loss/gradients vs transformers, refit export, checkpoints resharded TP2→TP1→TP2
bit-exact with Adam moments, an interrupted save, DP=2 and micro-batch invariance, loss going down."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.vllm_server import free_port

WORKER = Path(__file__).with_name("megatron_policy_worker.py")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy")


@pytest.fixture(scope="module")
def report(out_dir: Path, tiny_hf: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint

    conv = tmp_path_factory.mktemp("converted")
    for kind, folder in tiny_hf.items():  # converter output at TP=2, loaded by the workers at TP=1 and TP=2
        (conv / kind).mkdir()
        (conv / kind / "hf").symlink_to(folder)
        hf_to_megatron_checkpoint(folder, conv / kind / "mg", tp=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(WORKER), str(out_dir), str(conv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("POLICY ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(lines[-1].removeprefix("POLICY "))


def test_tp2_logprobs_entropy_loss_and_gradients_match_transformers(report: dict) -> None:
    r = report["tp2"]
    assert r["local_vocab"] == 128  # vocab-parallel: half of 256 per rank, combined by the chunked log-probs
    assert r["valid_tokens"] > 20
    assert r["logprob_diff"] <= 1e-5 and r["entropy_diff"] <= 1e-5, r
    assert abs(r["loss"] - r["ref_loss"]) <= 1e-5, r
    assert r["grad_scale"] > 1e-3 and r["grad_diff"] <= 1e-6, r  # every parameter shard


def test_refit_export_is_the_hf_state_dict(report: dict) -> None:
    assert report["refit"] == {"names_equal": True, "max_diff": 0.0}


def test_checkpoint_reshards_tp2_to_tp1_and_back_bit_exact(report: dict) -> None:
    a, b = report["tp2_to_tp1"], report["tp1_to_tp2"]
    assert a["weights"] == 0.0 and a["moments"] == 0.0 and a["step_count"] == 1
    assert a["manifest_layout"] == {"tensor_parallel": 2, "pipeline_parallel": 1, "context_parallel": 1, "data_parallel": 1}
    assert b["weights"] == 0.0 and b["moments"] == 0.0 and b["step"] == 10 and b["step_count"] == 13
    assert b["manifest_layout"]["tensor_parallel"] == 1 and b["manifest_layout"]["data_parallel"] == 2
    # keep_last=2 kept both; the interrupted save's temp folder was cleared by the next save
    assert b["dirs"] == ["iter_0000003", "iter_0000010", "latest_checkpointed_iteration.txt", "latest_train_state.pt"]


def test_interrupted_save_leaves_the_previous_checkpoint(report: dict) -> None:
    assert report["interrupted"] == {"raised": True, "latest": 3, "iter4_exists": False, "tmp_left": True}


def test_global_token_normalisation_dp2_and_micro_batches(report: dict) -> None:
    r = report["normalisation"]
    assert r["micro_batches"] >= 3
    assert r["grad_scale"] > 1e-3
    assert r["dp2_vs_dp1"] <= 1e-6 and r["micro_vs_one"] <= 1e-6, r


def test_train_steps_lower_the_loss_and_generation_mode_blocks_training(report: dict) -> None:
    for per_rank in report["steps"]:
        assert per_rank["sft"][-1] < per_rank["sft"][0] - 0.1, per_rank
        assert per_rank["rl"][-1] < per_rank["rl"][0], per_rank
        assert "prepare_for_training" in per_rank["guard"]
    # the step loss is summed over data-parallel ranks, so both ranks report the same value
    assert report["steps"][0]["sft"] == report["steps"][1]["sft"]


def test_converted_checkpoints_load_into_the_policy_at_tp1_and_tp2(report: dict) -> None:
    for tp in ("tp1", "tp2"):
        for kind in ("untied", "tied", "padded"):  # padded: vocabulary 511 stored as 512 rows
            assert report["converted"][tp][kind] <= 1e-5, report["converted"]  # fp32 vs transformers
        assert report["converted"][tp]["padded_refit_rows"] == 511


def test_a_training_checkpoint_exports_to_hf_bit_exact(report: dict, out_dir: Path, tmp_path: Path) -> None:
    """iter_0000010 was written by megatron-core's own save (TP=1, DP=2, with optimiser state)."""
    import torch
    from safetensors.torch import load_file

    from nemo_qwenlong.backends.megatron.convert import megatron_to_hf_checkpoint

    assert report["tp1_to_tp2"]["step"] == 10
    megatron_to_hf_checkpoint(out_dir / "ckpt", tmp_path / "hf", dtype=None)
    exported = {}
    for f in (tmp_path / "hf").glob("*.safetensors"):
        exported |= load_file(f)
    expected = torch.load(out_dir / "weights_step10.pt", weights_only=True)
    assert sorted(exported) == sorted(expected)
    assert all(torch.equal(exported[k], expected[k]) for k in expected)
