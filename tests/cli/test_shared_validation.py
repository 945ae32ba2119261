"""One validation for every command that takes a recipe: a recipe `run` refuses fails `run`, `launch --dry-run`,
`plan` and `config validate` alike, before anything starts: exit 2, no traceback, nothing written, and the same
message after the `<command> error: ` prefix (config.loader.check_runnable, and the schema's layout rules when the
config loads). Real CLI subprocesses: each refusal comes before megatron, vLLM or any file (a few seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nemo_qwenlong.config import apply_override, load_config

REPO = Path(__file__).resolve().parents[2]
# A GPU recipe (`plan` sizes GPU layouts only); the local executor, so `launch` needs no cluster file.
BASE = REPO / "conf" / "qwenlong-l1" / "dapo-r1distill1.5b-2stage-1n1g.yaml"


def refused_recipe(tmp_path: Path, override: str) -> Path:
    """The resolved base recipe with `override` applied, as a file (`config validate` takes files, not
    overrides); written without validating, so a layout the config refuses is in it as text."""
    tree = load_config(BASE, ["cluster.executor=local"]).model_dump(mode="json")
    apply_override(tree, override)
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nemo_qwenlong.cli.main", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=os.environ | {"OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("override, needle", [
    ("rl.kl_coef=0.001", "rl.kl_coef=0.001: `run` holds no reference policy yet"),
    ("curriculum.stages.1.reset_optimizer=true", "curriculum.stages.1.reset_optimizer=true: per-stage"),
    ("rollout.tensor_parallel=2", "rollout.tensor_parallel=2 does not divide the 1 ranks"),
], ids=["kl_coef", "reset_optimizer", "rollout-layout"])
def test_every_command_refuses_what_run_refuses(tmp_path: Path, override: str, needle: str) -> None:
    recipe = str(refused_recipe(tmp_path, override))
    out, plans = tmp_path / "run", tmp_path / "plans"
    commands = {
        "run": ["run", recipe, "--output", str(out), "--no-progress"],
        "launch": ["launch", "run", "--recipe", recipe, "--dry-run", "--plan-dir", str(plans)],
        "plan": ["plan", "--recipe", recipe],
        "config validate": ["config", "validate", recipe],
    }
    messages = {}
    for name, argv in commands.items():
        res = cli(*argv)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (name, res.stderr[-3000:])
        prefix = f"{name} error: "
        assert res.stderr.startswith(prefix) and needle in res.stderr, (name, res.stderr[-3000:])
        messages[name] = res.stderr[len(prefix):].strip()
    assert len(set(messages.values())) == 1, messages
    assert next(iter(messages.values())).startswith(recipe)  # names the recipe
    assert not out.exists() and not plans.exists()  # nothing started, nothing written


def test_a_recipe_run_accepts_passes_each_of_them(tmp_path: Path) -> None:
    """The same recipe without the refused setting: `config validate` and `plan` pass (no over-refusal)."""
    recipe = str(refused_recipe(tmp_path, "rl.kl_coef=0"))
    res = cli("config", "validate", recipe)
    assert res.returncode == 0 and f"ok    {recipe}" in res.stdout, res.stderr
    assert cli("plan", "--recipe", recipe).returncode == 0
