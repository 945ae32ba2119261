"""`nemo-qwenlong smoke`: the LLM stack end to end on CPU (a real subprocess, as `make run` runs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from nemo_qwenlong.demo.llm_stack import even_share


def test_even_share_reward() -> None:
    ids = torch.tensor([[2, 3, 4, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert even_share(ids, mask).tolist() == pytest.approx([2 / 3, 0.0, 0.0])


def test_smoke_runs_every_component_and_the_reward_rises(cli_exe: str, repo_root: Path, tmp_path: Path) -> None:
    out = subprocess.run([cli_exe, "smoke", "--steps", "3", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    rows = [json.loads(line) for line in (tmp_path / "run" / "smoke_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["logprob_abs_diff_max"] < 1e-5 and r["refit_buckets"] >= 1 for r in rows)  # refit every step
    assert rows[-1]["reward_mean"] > rows[0]["reward_mean"]  # seeded: the same numbers on every run
    run = tmp_path / "run"
    assert (run / "checkpoints" / "iter_0000003" / "nql_manifest.json").is_file()
    assert (run / "hf_final" / "model.safetensors.index.json").is_file() and (run / "config.yaml").is_file()
    assert "step 3/3: reward" in out.stdout and "UserWarning" not in out.stderr


def test_sigterm_mid_smoke_leaves_no_run_dir(cli_exe: str, repo_root: Path, tmp_path: Path) -> None:
    """SIGTERM (what Slurm sends) while the smoke run works: exit 143 and its fresh run dir removed."""
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([cli_exe, "smoke", "--steps", "3", "--run-dir", str(run)], cwd=repo_root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (run / "hf_init" / "config.json").is_file():
        time.sleep(0.05)
    assert (run / "hf_init").is_dir(), "the smoke run never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert not run.exists() and "removed the partial run dir" in err and "Traceback" not in err
