"""`nemo-qwenlong run`: the stages a recipe names (`pipeline`), in order, each in its own folder and
its own module; `Run` holds what the stages share (config, run directory, data, policy, engine).

    <run dir>/config.yaml            the resolved config (a resume must match it)     loops.run_dir
    <run dir>/metrics.jsonl          one row per SFT optimiser step and per RL step, each once
    <run dir>/NN-data/               stage.json with counts and fingerprints            loops.data_stage
    <run dir>/NN-sft/                checkpoints/, hf/ (the SFT checkpoint as HF)       loops.sft_stage
    <run dir>/NN-rl-<stage>/         checkpoints/ (global RL step numbers),             loops.rl_stages
                                     (checkpoints/: under checkpoint.dir when set,      loops.run_dir)
                                     difficulty_ledger.csv, stage.json (held-out probe)
    <run dir>/NN-export/hf/          the final policy as an HF folder (vLLM serves it)  loops.export_stage
    <run dir>/NN-eval/               sft/ and rl/ reports                               loops.eval_stage
    <run dir>/plots/, summary.json, summary.md                                          loops.report

A finished stage writes `stage.json`; `--resume auto` skips those and continues the unfinished
one from its newest complete checkpoint (model, optimiser and LR schedule, sampler and ledger,
RNGs; rollout seeds derive from the step). SIGTERM/SIGUSR1 checkpoint at the next step boundary
and exit 0 (`Preempted`).
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.loops import dist, state
from nemo_qwenlong.loops.checks import check_supported
from nemo_qwenlong.loops.console import Console
from nemo_qwenlong.loops.data_stage import run_data_stage
from nemo_qwenlong.loops.eval_stage import run_eval_stage
from nemo_qwenlong.loops.export_stage import run_export_stage
from nemo_qwenlong.loops.metrics import MetricsLog, start_wandb
from nemo_qwenlong.loops.preemption import PreemptionFlag
from nemo_qwenlong.loops.rl_stages import run_rl_stages
from nemo_qwenlong.loops.run_dir import (
    RunError,
    RunOptions,
    checkpoint_dirs,
    config_hash,
    open_run_dir,
    stage_dirs,
)
from nemo_qwenlong.loops.sft_stage import run_sft_stage

__all__ = ["Run", "RunError", "RunOptions"]


class Run:
    def __init__(self, cfg: RunConfig, opts: RunOptions) -> None:
        self.cfg, self.opts = cfg, opts
        self.started = time.perf_counter()
        self.flag = PreemptionFlag()
        self.console = Console(opts.progress and cfg.logging.progress_bars)
        self.policy: Any = None
        self.engine: Any = None
        self.prompts: dict[str, list[int]] | None = None
        self.rl_done_step = 0

    def run(self) -> dict[str, Any]:
        self.start()
        self.flag.install()
        try:
            self.data = run_data_stage(self)
            self.files = self._model_files()
            from nemo_qwenlong.loops.backend import load_tokenizer

            self.tokenizer = load_tokenizer(self.files.hf_dir)
            stages = {"sft": run_sft_stage, "rl": run_rl_stages, "export": run_export_stage, "eval": run_eval_stage}
            for name, stage in stages.items():
                if name in self.cfg.pipeline:
                    stage(self)
            return self.finish()
        finally:
            self.flag.uninstall()
            self.console.close()

    def start(self) -> None:
        check_supported(self.cfg, int(os.environ.get("WORLD_SIZE", "1")))  # before megatron, vLLM, any file
        from nemo_qwenlong.backends.megatron.parallel import init_parallel
        from nemo_qwenlong.logs import quiet_backends
        from nemo_qwenlong.ports import free_port

        quiet_backends()
        if "TORCHELASTIC_RUN_ID" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # one process, not under torchrun: any free local port (an inherited MASTER_PORT may be taken)
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
        p = self.cfg.parallelism
        init_parallel(tensor_parallel=p.tensor_parallel, context_parallel=p.context_parallel,
                      backend=p.dist_backend, seed=self.cfg.seed)
        self.run_dir, self.resuming = open_run_dir(self.cfg, self.opts)
        self.dirs = stage_dirs(self.cfg, self.run_dir)
        self.checkpoints = checkpoint_dirs(self.cfg, self.run_dir, self.dirs)  # per stage, as self.dirs
        self.hash = config_hash(self.cfg)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl",
                                  wandb_run=start_wandb(self.cfg, self.run_dir) if dist.is_rank0() else None)
        self.console.line(f"run dir: {self.run_dir} ({'resuming' if self.resuming else 'new run'}; "
                          f"stages: {', '.join(self.dirs)})")

    def finish(self) -> dict[str, Any]:
        from nemo_qwenlong.loops.report import write_report

        wall = time.perf_counter() - self.started
        summary = write_report(self, wall) if dist.is_rank0() else {}
        return dist.broadcast(summary)

    # -- what the stages share
    def _model_files(self):  # noqa: ANN202
        from nemo_qwenlong.loops.backend import prepare_model_files

        return prepare_model_files(self.cfg, self.run_dir)

    def drop_policy(self) -> None:
        self.policy = None
        gc.collect()

    def dp(self) -> tuple[int, int]:
        """(rank, size) of this process in the policy's data-parallel group."""
        import torch.distributed as tdist

        g = self.policy.dp_group
        return tdist.get_rank(g), tdist.get_world_size(g)

    def save(self, root: Path, step: int, loop: dict[str, Any]) -> None:
        """A checkpoint of the policy with the loop state (`loop` + RNGs, config hash, data fingerprint)
        and the tokenizer's files."""
        from nemo_qwenlong.backends.megatron import checkpoint as ckpt
        from nemo_qwenlong.loops.backend import tokenizer_files

        files = {state.LOOP_STATE: state.dumps(loop | {"rng": state.rng_state(), "config_hash": self.hash,
                                                       "data": self.data.info["fingerprint"]})}
        files |= tokenizer_files(self.files.hf_dir)
        ckpt.save_checkpoint(self.policy, root, step, config_hash=self.hash, keep_last=self.cfg.checkpoint.keep_last,
                             files=files)

    def log_row(self, row: dict[str, Any]) -> None:
        if dist.is_rank0():
            self.metrics.write(row)
