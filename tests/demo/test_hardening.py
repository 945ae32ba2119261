"""The demo as a training loop: SIGTERM checkpoints and a re-run continues exactly; secrets never
reach the run directory; a recipe the machine cannot run is refused before anything is allocated."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.demo.loop import DEMO_STATE, run_demo
from nemo_qwenlong.loops.preemption import Preempted
from tests.cli.helpers_cli import assert_named_error, cli

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "conf" / "toy-demo.yaml"
SMALL = ["curriculum.stages.0.steps=2", "curriculum.stages.1.steps=1", "rl.train_batch_size=4", "rl.gen_batch_size=8",
         "rl.mini_batch_size=4"]


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # timings differ


def test_a_preempted_demo_resumes_where_it_stopped_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = load_config(TOY, SMALL)
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    run_demo(cfg, whole, progress=False)
    (split / "metrics.jsonl").write_text('{"step": 99, "stale": true}\n')  # a killed run's leftovers are cut back
    with pytest.raises(Preempted):
        run_demo(cfg, split, progress=False, stop=lambda: True)  # SIGTERM seen after step 1
    assert (split / DEMO_STATE).is_file() and len(_rows(split)) == 1
    result = run_demo(cfg, split, progress=False)  # checkpoint.resume: auto
    assert result.steps == 3 and _rows(split) == _rows(whole)


def test_the_demo_cli_checkpoints_on_sigterm_and_exits_0(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import os

    from nemo_qwenlong.demo import loop

    real_step = loop.rl_step

    def step_then_sigterm(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        row = real_step(*a, **kw)
        os.kill(os.getpid(), signal.SIGTERM)
        return row

    monkeypatch.setattr(loop, "rl_step", step_then_sigterm)
    code, out, err = cli("demo", "--no-progress", "--run-dir", str(tmp_path / "r"), *SMALL)
    assert code == 0, err[-2000:]
    assert "preempted; state saved after step 1" in out and (tmp_path / "r" / DEMO_STATE).is_file()


def test_secrets_in_a_url_and_an_env_var_never_reach_the_run_directory(tmp_path: Path) -> None:
    url_key, env_key = "sk-urlsecret12345678", "sk-envsecret12345678"
    code, _, err = cli("demo", "--no-progress", "--run-dir", str(tmp_path / "r"), *SMALL,
                       "curriculum.stages.0.steps=1", f"reward.judge.base_url=https://user:{url_key}@judge.example/v1",
                       f"cluster.env_vars.EXTRA_HEADER=Bearer {env_key}")
    assert code == 0, err[-2000:]
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "r").rglob("*") if p.is_file())
    assert url_key not in written and env_key not in written and "user:" not in written
    assert "https://<redacted>@judge.example/v1" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only refusal")
def test_a_cluster_recipe_is_refused_on_a_cpu_machine_before_any_allocation(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from nemo_qwenlong.demo import policy

    def no_allocation(*_a, **_kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model was built")

    monkeypatch.setattr(policy.GRUPolicy, "__init__", no_allocation)
    recipe = REPO / "conf" / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"
    for command in ("demo", "smoke"):
        assert_named_error(cli(command, "-c", str(recipe), "--run-dir", str(tmp_path / command)),
                           f"{command} error:", "GPU recipe", "no CUDA device")
        assert not (tmp_path / command).exists()
