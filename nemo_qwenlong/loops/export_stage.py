"""The `export` stage of `run` (`loops.pipeline.Run`): the run's final policy as an HF folder
(`NN-export/hf`, what vLLM serves); exported again when RL went on after an earlier export."""

from __future__ import annotations

import shutil
from typing import Any

from nemo_qwenlong.loops import dist
from nemo_qwenlong.loops.rl_stages import latest_rl
from nemo_qwenlong.loops.run_dir import mark_done, stage_done


def final_policy(run: Any) -> None:
    """The policy with the run's final weights (already in memory after RL, else loaded)."""
    if run.policy is not None:
        return
    from nemo_qwenlong.loops.backend import build_policy, load_weights

    root, _ = latest_rl(run)
    if root is None and "sft" in run.cfg.pipeline:
        root = run.checkpoints["sft"]
    run.policy = build_policy(run.cfg, run.files, phase="rl", phase_steps=1)
    load_weights(run.policy, root or run.files.megatron_dir, optimizer=False)


def run_export_stage(run: Any) -> None:
    from nemo_qwenlong.loops.backend import export_hf

    folder = run.dirs["export"]
    done = stage_done(folder)
    step = run.rl_done_step or latest_rl(run)[1]
    if done and done.get("rl_step") == step:
        return
    if done and dist.is_rank0():  # RL went on since: export again
        shutil.rmtree(folder / "hf", ignore_errors=True)
    dist.barrier()
    final_policy(run)
    out = export_hf(run.cfg, run.policy, run.files.hf_dir, folder / "hf")
    mark_done(folder, {"rl_step": step, "hf": str(out)})
    run.console.line(f"export: {out} (after RL step {step})")
