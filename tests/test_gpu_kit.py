"""The GPU kit's CPU half (benchmarks/gpu_kit): the recorded wheel list resolves offline and fits one
device command, the fetch tool refuses a folder over 64 MiB, the GPU script parses and dry-runs, the GPU
recipe validates, and every step but `run` runs on CPU at tiny size in one process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu_kit"


def load(name: str) -> ModuleType:
    """A kit script as a module under a name of its own (no sys.path entry)."""
    spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", KIT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_kit, wheels = load("run_kit"), load("wheels")

WHEEL_TAGS = ("-py3-none-any.whl", "-cp312-cp312-manylinux", "-abi3-manylinux")


def test_recorded_wheels_resolve_offline_for_cp312_and_fit_one_command(capsys: pytest.CaptureFixture) -> None:
    lock = wheels.read_lock()
    assert [f"{w['name']}=={w['version']}" for w in lock] == list(wheels.PINS)  # the lock is the pins, recorded
    for w in lock:
        norm = w["name"].replace("-", "_")
        assert w["filename"].lower().startswith(f"{norm}-{w['version']}-"), w
        assert any(tag in w["filename"] for tag in WHEEL_TAGS) and "x86_64" in w["filename"] or \
            w["filename"].endswith("-py3-none-any.whl"), w
        assert len(w["sha256"]) == 64 and w["size"] > 0, w
    assert {"megatron-core", "pydantic", "pydantic-core", "psutil", "openai"} <= {w["name"] for w in lock}
    assert sum(w["size"] for w in lock) < wheels.LIMIT_BYTES
    assert wheels.main(["list"]) == 0
    assert "MiB of the 64 MiB" in capsys.readouterr().out
    cmd = wheels.download_command("pydantic==2.14.4", Path("d"))  # gpu-machines.md's flags, no dependencies
    for flag in ("--no-deps", "--only-binary=:all:", "--python-version", "3.12", "manylinux_2_28_x86_64"):
        assert flag in cmd


def test_wheel_folder_over_64_mib_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "wheels"
    folder.mkdir()
    with (folder / "big.whl").open("wb") as f:  # sparse: 65 MiB apparent, nothing written
        f.truncate(65 * 2**20)
    kit = [sys.executable, str(KIT / "wheels.py")]
    done = subprocess.run([*kit, "check", str(folder)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("gpu_kit wheels error: "), done.stderr
    assert "65.0 MiB" in done.stderr and "64 MiB" in done.stderr
    empty = tmp_path / "empty.lock.json"  # fetch with nothing to download: only its size check runs
    empty.write_text(json.dumps({"wheels": []}))
    done = subprocess.run([*kit, "--lock", str(empty), "fetch", "--dir", str(folder)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("gpu_kit wheels error: "), done.stderr
    (folder / "big.whl").unlink()
    (folder / "small.whl").write_bytes(b"x" * 1000)
    assert wheels.main(["check", str(folder)]) == 0
    assert wheels.main(["check", str(tmp_path / "missing")]) == 2  # no folder is not "0 MiB, under 64"


def test_gpu_script_parses_and_dry_run_prints_steps_and_figures(tmp_path: Path) -> None:
    script = KIT / "run_kit.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    done = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True, text=True,
                          env=os.environ | {"PY": sys.executable, "OUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert f"writes {tmp_path / 'gpu_kit.json'}" in done.stdout and "pip install --no-index" in done.stdout
    for step, (limit, _) in run_kit.PLAN.items():
        assert f"  {step:<11} timeout {limit:>3} s" in done.stdout
        assert run_kit.FIGURES[step] in done.stdout
    assert sum(limit for limit, _ in run_kit.PLAN.values()) <= 460  # run_kit.sh's overall timeout: under 8 min
    assert not (tmp_path / "gpu_kit.json").exists()


def test_gpu_recipe_validates_without_vllm_or_te() -> None:
    from nemo_qwenlong.config import check_runnable, load_config

    recipe = ROOT / "conf" / "tiny-gpu.yaml"
    cfg = check_runnable(load_config(recipe), recipe)
    p = cfg.parallelism
    assert (cfg.model.dtype, p.dist_backend, p.transformer_impl, p.local_attention, cfg.rollout.backend) == (
        "bfloat16", "nccl", "local", "sdpa", "hf")
    assert p.fp8 is None and p.context_parallel == 1


def test_every_kit_step_but_run_works_on_cpu_at_tiny_size() -> None:
    # one process for all five (megatron import and process groups once); `run` itself: tests/loops/test_run.py
    done = subprocess.run([sys.executable, str(KIT / "steps.py"), "all-but-e2e", "--device", "cpu", "--size", "ci"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert set(figures) == {"parity", "layouts", "train_step", "logprobs", "refit"}
    assert figures["parity"]["ok"] and figures["parity"]["logprob_abs_diff_max"] < 1e-4, figures["parity"]
    assert figures["layouts"]["ok"] and set(figures["layouts"]["layouts"]) == {"padded", "packed", "shared_prompt"}
    assert figures["train_step"]["runs"][0]["tokens_per_s_per_gpu"] > 0
    assert figures["logprobs"]["runs"]["fused"]["method"] == "fused"
    refit = figures["refit"]
    assert refit["ok"] and refit["refit_buckets"] >= 1 and refit["refit_mb"] > 0, refit
    assert refit["logprob_abs_diff_mean_before"] > 100 * refit["logprob_abs_diff_mean"], refit  # the refit moved them


def test_e2e_step_runs_the_gpu_recipe_briefly() -> None:
    steps = load("steps")
    assert steps.SIZES["gpu"]["e2e"]["recipe"] == "conf/tiny-gpu.yaml"
    cmd = steps.e2e_command("conf/tiny-gpu.yaml", Path("o"))
    assert cmd[1:4] == ["-m", "nemo_qwenlong.cli.main", "run"] and "rollout.backend=hf" in cmd
    assert "sft.max_steps=2" in cmd and "curriculum.stages.1.steps=2" in cmd
