"""`nemo-qwenlong run`: the stages a recipe names (`pipeline`), in order, each in its own folder.

    <run dir>/config.yaml            the resolved config (a resume must match it)
    <run dir>/metrics.jsonl          one row per SFT optimiser step and per RL step, each once
    <run dir>/NN-data/               stage.json with counts and fingerprints (+ the tiny task's files)
    <run dir>/NN-sft/                checkpoints/, hf/ (the SFT checkpoint as HF, for the eval)
    <run dir>/NN-rl-<stage>/         checkpoints/ (global RL step numbers), difficulty_ledger.csv
    <run dir>/NN-export/hf/          the final policy as an HF folder (vLLM serves it)
    <run dir>/NN-eval/               results-<model>.jsonl, eval.json
    <run dir>/plots/, summary.json, summary.md

A finished stage writes `stage.json`; `--resume auto` skips those and continues the unfinished
one from its newest complete checkpoint (model, optimiser and LR schedule, sampler and ledger,
RNGs; rollout seeds derive from the step). SIGTERM/SIGUSR1 checkpoint at the next step boundary
and exit 0 (`Preempted`).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.config.loader import to_yaml
from nemo_qwenlong.fsio import atomic_write_text
from nemo_qwenlong.loops import dist, state
from nemo_qwenlong.loops.metrics import MetricsLog, start_wandb
from nemo_qwenlong.loops.preemption import Preempted, PreemptionFlag

log = logging.getLogger(__name__)
STAGE_JSON = "stage.json"


class RunError(RuntimeError):
    """An anticipated problem (bad output folder, resume mismatch): the CLI prints it and exits 2."""


@dataclass
class RunOptions:
    output: Path | None = None
    resume: str = "auto"  # auto | never
    max_steps: int | None = None
    progress: bool = True


def check_hardware(cfg: RunConfig, world: int) -> None:
    """Refuse, before any process group, model or tensor exists, a recipe this machine or launch cannot
    run (GPU recipe without CUDA, more local ranks than GPUs, a layout the ranks cannot hold, more memory
    per GPU than the device has by the planner's estimate).
    The one hardware check: `run`, `demo` and `smoke` all call it."""
    import torch

    p = cfg.parallelism
    gpu_recipe = p.dist_backend == "nccl" or p.transformer_impl == "transformer_engine"
    if gpu_recipe and not torch.cuda.is_available():
        raise RunError(f"{cfg.name} is a GPU recipe (parallelism.dist_backend={p.dist_backend!r}, "
                       f"parallelism.transformer_impl={p.transformer_impl!r}; cluster {cfg.cluster.nodes}×"
                       f"{cfg.cluster.gpus_per_node} GPUs) and this machine has no CUDA device; "
                       "launch it on a GPU cluster, or run conf/tiny-cpu.yaml here")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if gpu_recipe and local > torch.cuda.device_count():
        raise RunError(f"this launch starts {local} local rank(s) but the machine has {torch.cuda.device_count()} "
                       "CUDA device(s); lower --nproc-per-node")
    if world % (p.tensor_parallel * p.context_parallel):
        raise RunError(f"parallelism TP×CP = {p.tensor_parallel}×{p.context_parallel} does not divide the "
                       f"{world} rank(s) of this launch (use --nproc-per-node)")
    if gpu_recipe:
        from nemo_qwenlong.planning.report import device_fit_problem

        props = torch.cuda.get_device_properties(0)
        problem = device_fit_problem(cfg, memory_bytes=float(props.total_memory), device=props.name)
        if problem:
            raise RunError(f"{cfg.name} does not fit this machine's GPUs: {problem}")


# ---- run directory and resume checks ------------------------------------------------------------

def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha1(to_yaml(cfg).encode()).hexdigest()[:16]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): tree}


# Where a run executes, not what it computes: a requeued or resubmitted Slurm job gets other nodes (the
# launched judge's address changes) and may carry another time limit or account (nemo_qwenlong.launch).
RESUME_MAY_DIFFER = ("cluster.", "reward.judge.base_url")


def config_differences(saved: dict, current: dict) -> list[str]:
    a, b = _flatten(saved), _flatten(current)
    keys = [k for k in sorted(set(a) | set(b)) if not k.startswith(RESUME_MAY_DIFFER)]
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def open_run_dir(cfg: RunConfig, opts: RunOptions) -> tuple[Path, bool]:
    """(run dir, resuming?) after the checks; writes config.yaml for a new run."""
    run_dir = opts.output or Path(cfg.runs_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    saved = run_dir / "config.yaml"
    resuming = dist.broadcast(saved.is_file())  # rank 0's view: it writes the file below
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--output {run_dir} is a file, not a folder")
    if resuming and opts.resume == "never":
        raise RunError(f"{run_dir} already holds a run (config.yaml); use --resume auto to continue it, "
                       "or choose a new --output")
    if not resuming and run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists, is not empty and holds no run (no config.yaml); choose a new --output")
    if resuming:
        diffs = config_differences(yaml.safe_load(saved.read_text()), yaml.safe_load(to_yaml(cfg)))
        if diffs:
            raise RunError(f"{run_dir} was started with another config; resuming it would not reproduce the run. "
                           "Differences:\n  " + "\n  ".join(diffs))
    elif dist.is_rank0():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, to_yaml(cfg))
    dist.barrier()
    return run_dir, resuming


def stage_dirs(cfg: RunConfig, run_dir: Path) -> dict[str, Path]:
    names: list[str] = []
    for stage in cfg.pipeline:
        names += [f"rl-{s.name}" for s in cfg.curriculum.stages] if stage == "rl" else [stage]
    return {n: run_dir / f"{i:02d}-{n}" for i, n in enumerate(names)}


def stage_done(folder: Path) -> dict[str, Any] | None:
    """The stage's `stage.json`, as rank 0 reads it (every rank must take the same branch: a rank
    that looked after rank 0 wrote the file would skip the collective `mark_done`)."""
    path = folder / STAGE_JSON
    return dist.broadcast(json.loads(path.read_text()) if dist.is_rank0() and path.is_file() else None)


def mark_done(folder: Path, info: dict[str, Any]) -> None:
    if dist.is_rank0():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / STAGE_JSON, json.dumps({"done": True, **info}, indent=2, default=str))
    dist.barrier()


# ---- console progress ----------------------------------------------------------------------------

class Console:
    """tqdm bars on a TTY (generation, scoring, updates); one line per step either way (rank 0)."""

    def __init__(self, enabled: bool) -> None:
        self.bars = enabled and sys.stderr.isatty() and dist.is_rank0()
        self._bar: Any = None
        self._what = ""

    def progress(self, what: str, done: int, total: int) -> None:
        if not self.bars:
            return
        from tqdm import tqdm

        if self._bar is None or self._what != what or done == 1:
            self.close()
            self._bar, self._what = tqdm(total=total, desc=what, unit="item", leave=False), what
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self, text: str) -> None:
        self.close()
        if dist.is_rank0():
            print(text, flush=True)


# ---- the run -------------------------------------------------------------------------------------

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

    # -- setup
    def start(self) -> None:
        from nemo_qwenlong.backends.megatron.parallel import init_parallel
        from nemo_qwenlong.ports import free_port
        from nemo_qwenlong.logs import quiet_backends

        quiet_backends()
        self._check_supported()
        if "TORCHELASTIC_RUN_ID" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            # one process, not under torchrun: any free local port (an inherited MASTER_PORT may be taken)
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
        p = self.cfg.parallelism
        init_parallel(tensor_parallel=p.tensor_parallel, context_parallel=p.context_parallel,
                      backend=p.dist_backend, seed=self.cfg.seed)
        self.run_dir, self.resuming = open_run_dir(self.cfg, self.opts)
        self.dirs = stage_dirs(self.cfg, self.run_dir)
        self.hash = config_hash(self.cfg)
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl",
                                  wandb_run=start_wandb(self.cfg, self.run_dir) if dist.is_rank0() else None)
        self.console.line(f"run dir: {self.run_dir} ({'resuming' if self.resuming else 'new run'}; "
                          f"stages: {', '.join(self.dirs)})")

    def _check_supported(self) -> None:
        """Refuse, before any process group or model exists, what this machine or `run` cannot do."""
        cfg = self.cfg
        check_hardware(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        if cfg.rl.kl_coef > 0:
            raise RunError(f"rl.kl_coef={cfg.rl.kl_coef}: `run` holds no reference policy yet (the released DAPO "
                           "settings use 0); set rl.kl_coef=0")
        for i, s in enumerate(cfg.curriculum.stages):
            if s.reset_optimizer or s.reset_lr_schedule:
                raise RunError(f"curriculum.stages.{i}: reset_optimizer/reset_lr_schedule are not supported by "
                               "`run` yet; set both to false (the optimiser and schedule continue across stages)")

    # -- stages
    def run(self) -> dict[str, Any]:
        self.start()
        self.flag.install()
        try:
            self.data = self.data_stage()
            self.files = self._model_files()
            from nemo_qwenlong.loops.backend import load_tokenizer

            self.tokenizer = load_tokenizer(self.files.hf_dir)
            if "sft" in self.cfg.pipeline:
                self.sft_stage()
            if "rl" in self.cfg.pipeline:
                self.rl_stages()
            if "export" in self.cfg.pipeline:
                self.export_stage()
            if "eval" in self.cfg.pipeline:
                self.eval_stage()
            return self.finish()
        finally:
            self.flag.uninstall()
            self.console.close()

    def data_stage(self):  # noqa: ANN201
        from nemo_qwenlong.loops import data_stage

        folder = self.dirs.get("data", self.run_dir / "data")
        data = data_stage.prepare(self.cfg, folder) if dist.is_rank0() else None
        data = dist.broadcast(data)
        done = stage_done(folder)
        if done and done["fingerprint"] != data.info["fingerprint"]:
            raise RunError(f"the data differs from the data this run started with ({folder / STAGE_JSON}: "
                           f"{done['fingerprint']}, now {data.info['fingerprint']}); start a new run")
        if not done:
            mark_done(folder, data.info)
            self.console.line(f"data: {data.info['counts']}")
        return data

    def _model_files(self):  # noqa: ANN201
        from nemo_qwenlong.loops.backend import prepare_model_files

        return prepare_model_files(self.cfg, self.run_dir)

    def _drop_policy(self) -> None:
        self.policy = None
        gc.collect()

    def _dp(self) -> tuple[int, int]:
        import torch.distributed as tdist

        g = self.policy.dp_group
        return tdist.get_rank(g), tdist.get_world_size(g)

    def _save(self, root: Path, step: int, loop: dict[str, Any]) -> None:
        from nemo_qwenlong.backends.megatron import checkpoint as ckpt
        from nemo_qwenlong.loops.backend import tokenizer_files

        files = {state.LOOP_STATE: state.dumps(loop | {"rng": state.rng_state(), "config_hash": self.hash,
                                                       "data": self.data.info["fingerprint"]})}
        files |= tokenizer_files(self.files.hf_dir)
        ckpt.save_checkpoint(self.policy, root, step, config_hash=self.hash, keep_last=self.cfg.checkpoint.keep_last,
                             files=files)

    # -- SFT
    def sft_stage(self) -> None:
        from nemo_qwenlong.backends.megatron import checkpoint as ckpt
        from nemo_qwenlong.data.sft import load_sft
        from nemo_qwenlong.loops import sft
        from nemo_qwenlong.loops.backend import build_policy, export_hf, load_weights
        from nemo_qwenlong.loops.encode import prompt_ids, response_ids

        folder = self.dirs["sft"]
        if stage_done(folder):
            return
        cfg = self.cfg
        enc = lambda exs: [(prompt_ids(self.tokenizer, e.messages), response_ids(self.tokenizer, e.response))  # noqa: E731
                           for e in exs]
        val = enc(load_sft(cfg.sft.val_path)) if cfg.sft.val_path else None
        data = sft.split_examples(enc(load_sft(self.data.sft_path)), max_seq_len=cfg.sft.max_seq_len,
                                  val_fraction=cfg.sft.val_fraction, seed=cfg.seed, val=val)
        steps = sft.total_steps(len(data.train), cfg.sft)
        self.policy = build_policy(cfg, self.files, phase="sft", phase_steps=steps)
        root = folder / "checkpoints"
        start = ckpt.latest_step(root) or 0
        if start:
            load_weights(self.policy, root, optimizer=True, config_hash=self.hash)
            state.set_rng_state(state.load(root / ckpt.iter_dirname(start))["rng"])
        else:
            load_weights(self.policy, self.files.megatron_dir, optimizer=False)
        if dist.is_rank0():
            self.metrics.truncate_after("sft", start)
        self.console.line(f"sft: {len(data.train)} examples ({len(data.val)} for validation, "
                          f"{data.dropped_too_long} over sft.max_seq_len dropped), {steps} steps"
                          + (f", resuming after step {start}" if start else ""))
        dp_rank, dp_size = self._dp()

        def show(step: int, total: int, row: dict) -> None:
            if step % self.cfg.logging.log_every_steps == 0 or step == total or "val_loss" in row:
                val = f"  val loss {row['val_loss']:.4f}" if "val_loss" in row else ""
                self.console.line(f"sft step {step}/{total}: loss {row['loss']:.4f}  lr {row['lr']:.2e}{val}")

        sft.run_sft(self.policy, data, cfg.sft, seed=cfg.seed, start_step=start, dp_rank=dp_rank, dp_size=dp_size,
                    log_row=self._log_row, save=lambda s: self._save(root, s, {"phase": "sft", "step": s}),
                    should_stop=self.flag.requested, save_every=cfg.checkpoint.save_every_steps, progress=show)
        export_hf(cfg, self.policy, self.files.hf_dir, folder / "hf")
        mark_done(folder, {"steps": steps, "checkpoint": str(root / ckpt.iter_dirname(steps)), "hf": str(folder / "hf")})
        self._drop_policy()

    def _log_row(self, row: dict[str, Any]) -> None:
        if dist.is_rank0():
            self.metrics.write(row)

    # -- RL
    def _stage_lengths(self) -> tuple[list[list[str]], list[int]]:
        """Each curriculum stage's item pool (by templated prompt length) and its RL step count."""
        from nemo_qwenlong.curriculum.stages import split_by_stage, stage_steps

        lengths = {x: len(p) for x, p in self.prompts.items()}
        splits = split_by_stage([it.item_id for it in self.data.train], lengths, self.cfg.curriculum.stages)
        pools = [s.item_ids for s in splits]
        steps = [stage_steps(s, len(pool), self.cfg.rl.gen_batch_size, drop_last=self.cfg.curriculum.drop_last)
                 for s, pool in zip(self.cfg.curriculum.stages, pools)]
        for s, pool, n in zip(self.cfg.curriculum.stages, pools, steps):
            if not pool:
                raise RunError(f"curriculum stage '{s.name}' has no training items with {s.min_input_tokens} < "
                               f"prompt tokens <= {s.max_input_tokens} (check the data or the stage bands)")
            if n == 0:
                raise RunError(f"curriculum stage '{s.name}': {len(pool)} items make 0 steps of "
                               f"rl.gen_batch_size={self.cfg.rl.gen_batch_size} with drop_last")
        return pools, steps

    def _encode_items(self) -> None:
        """Prompt token ids of every train/val/held-out item, once per process."""
        if getattr(self, "prompts", None) is not None:
            return
        from nemo_qwenlong.loops.encode import prompt_ids

        items = self.data.train + self.data.val + self.data.heldout
        self.items = {it.item_id: it for it in items}
        self.prompts = {it.item_id: prompt_ids(self.tokenizer, it.messages) for it in items}

    def _latest_rl(self) -> tuple[Path | None, int]:
        from nemo_qwenlong.backends.megatron import checkpoint as ckpt

        best: tuple[Path | None, int] = (None, 0)
        for s in self.cfg.curriculum.stages:
            if f"rl-{s.name}" not in self.dirs:  # a pipeline without rl (e.g. [data, export, eval])
                continue
            root = self.dirs[f"rl-{s.name}"] / "checkpoints"
            step = ckpt.latest_step(root) if root.is_dir() else None
            if step and step > best[1]:
                best = (root, step)
        return best

    def _rl_env(self, pools: list[list[str]], total_steps: int):  # noqa: ANN202
        from nemo_qwenlong.backends.megatron import checkpoint as ckpt
        from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
        from nemo_qwenlong.loops.backend import build_engine, build_policy, load_weights
        from nemo_qwenlong.loops.rl import RLEnv, refit
        from nemo_qwenlong.rewards.hybrid import build_reward

        cfg = self.cfg
        self.policy = build_policy(cfg, self.files, phase="rl", phase_steps=total_steps)
        sampler = RetrospectiveSampler(pools, cfg.curriculum.stages, batch_size=cfg.rl.gen_batch_size, seed=cfg.seed,
                                       drop_last=cfg.curriculum.drop_last)
        root, step = self._latest_rl()
        loop: dict[str, Any] = {"step": 0, "stage_index": 0, "stage_step": 0}
        if root is not None:
            load_weights(self.policy, root, optimizer=True, config_hash=self.hash)
            loop = state.load(root / ckpt.iter_dirname(step))
            if loop.get("data") != self.data.info["fingerprint"]:
                raise RunError(f"{root}: checkpoint was trained on other data ({loop.get('data')}, now "
                               f"{self.data.info['fingerprint']}); start a new run")
            sampler.load_state_dict(loop["sampler"])
            state.set_rng_state(loop["rng"])
        elif "sft" in cfg.pipeline:
            load_weights(self.policy, self.dirs["sft"] / "checkpoints", optimizer=False)
        else:
            load_weights(self.policy, self.files.megatron_dir, optimizer=False)
        self.engine = self.engine or build_engine(cfg, self.files.hf_dir)
        reward = build_reward(cfg.reward, run_dir=str(self.run_dir)) if dist.is_rank0() else None
        dp_rank, dp_size = self._dp()
        env = RLEnv(cfg, self.policy, self.engine, reward, self.tokenizer, self.items, self.prompts, sampler,
                    dp_rank, dp_size, self.console.progress)
        self.policy.prepare_for_generation()
        refit(env, None)  # the engine starts from the policy's weights, whatever hf_init held
        return env, loop

    def rl_stages(self) -> None:
        from nemo_qwenlong.loops.rl import rl_step

        stages = self.cfg.curriculum.stages
        if all(stage_done(self.dirs[f"rl-{s.name}"]) for s in stages):
            self.rl_done_step = stage_done(self.dirs[f"rl-{stages[-1].name}"])["last_step"]
            return
        self._encode_items()
        pools, steps = self._stage_lengths()
        env, loop = self._rl_env(pools, sum(steps))
        step = int(loop["step"])
        if dist.is_rank0():  # a fresh RL start (step 0) also drops a step-0 row: its validation runs again
            self.metrics.truncate_after("rl", step if step else -1)
        if step == 0 and self.cfg.logging.val_before_train and self.data.val:
            acc = self._accuracy(env, self.data.val, 0)
            self._log_row({"phase": "rl", "stage": stages[0].name, "step": 0, "val_accuracy": acc})
            self.console.line(f"rl step 0 (before training): val acc {acc:.3f}")
        budget = self.opts.max_steps
        for k, stage in enumerate(stages):
            folder = self.dirs[f"rl-{stage.name}"]
            if stage_done(folder) or k < int(loop["stage_index"]):
                continue
            # a stage in epochs may end early (its data ran out), so it starts where the last one ended
            # (a checkpoint of this stage: its saved start; before stage_start was saved: the planned sums)
            first = int(loop.get("stage_start", sum(steps[:k]))) if k == int(loop["stage_index"]) else step
            last = first + steps[k]
            env.sampler.set_stage(k)
            self.console.line(f"rl stage {stage.name}: steps {first + 1}-{last}{' at most' if stage.epochs else ''}, prompts in "
                              f"({stage.min_input_tokens}, {stage.max_input_tokens}] tokens, {len(env.sampler.pools[k])} "
                              f"items, retrospective share {stage.retrospective.share}")
            while step < last and not env.sampler.exhausted():
                if budget is not None and step >= budget:
                    self.rl_done_step = step
                    self.console.line(f"--max-steps {budget} reached after RL step {step}")
                    return
                step += 1
                row = rl_step(env, k, step)
                if step % self.cfg.logging.val_every_steps == 0 and self.data.val:
                    row["val_accuracy"] = self._accuracy(env, self.data.val, step)
                self._log_row(row)
                self._show_rl(row, last)
                stop = self.flag.requested()
                end = step == last or env.sampler.exhausted() or (budget is not None and step >= budget)
                if stop or end or step % self.cfg.checkpoint.save_every_steps == 0:
                    self._save(folder / "checkpoints", step, {"phase": "rl", "step": step, "stage_index": k,
                                                               "stage_start": first, "sampler": env.sampler.state_dict()})
                if stop:
                    raise Preempted(f"RL step {step}")
            if dist.is_rank0():
                env.sampler.ledger.to_csv(folder / "difficulty_ledger.csv", retrospective=stage.retrospective)
            mark_done(folder, {"last_step": step, "checkpoint": str(folder / "checkpoints"),
                               "heldout_probe": self._heldout_probe(env, stage.name)})
        self.rl_done_step = step

    def _accuracy(self, env: Any, items: list, step: int) -> float:
        """Mean over `rollout.val_samples` samples of every item (`rl.validation_sampling`)."""
        from nemo_qwenlong.loops.rl import evaluate_items, validation_sampling

        cfg = self.cfg
        settings = validation_sampling(cfg.rollout, seed=cfg.seed + step, max_tokens=cfg.rollout.max_new_tokens)
        results = evaluate_items(env, items, settings)
        return sum(r["correct"] for r in results) / len(results)

    def _heldout_probe(self, env: Any, stage: str) -> dict[str, Any]:
        """Held-out accuracy by band after an RL stage: greedy (`evaluation.temperature`) with the rollout
        engine, which holds the stage's final weights; items whose prompt fits the longest stage."""
        from nemo_qwenlong.loops.evaluation import accuracy_by_band
        from nemo_qwenlong.loops.rl import evaluate_items, probe_sampling

        cfg = self.cfg
        cap = max(s.max_input_tokens for s in cfg.curriculum.stages)
        items = [it for it in self.data.heldout if len(self.prompts[it.item_id]) <= cap][: cfg.evaluation.max_items]
        if not items:
            return {}
        results = evaluate_items(env, items, probe_sampling(cfg.evaluation, cfg.rollout, seed=cfg.seed),
                                 what="held-out probe")
        acc = accuracy_by_band(items, [r["correct"] for r in results])
        self.console.line(f"held-out after {stage} ({len(items)} items): "
                          + ", ".join(f"{b} {v:.3f}" for b, v in acc.items()))
        return {"items": len(items), "accuracy": acc}

    def _show_rl(self, row: dict[str, Any], last: int) -> None:
        if row["step"] % self.cfg.logging.log_every_steps and row["step"] != last:
            return
        val = f"  val acc {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""
        reward = ("no mixed group (update skipped)" if row.get("update_skipped") else
                  f"reward {row['reward_mean']:+.3f}  loss {row['loss']:+.4f}")
        agree = f"|Δlogp| {row['logprob_abs_diff_max']:.1e}  " if "logprob_abs_diff_max" in row else ""
        self.console.line(
            f"rl step {row['step']}/{last} [{row['stage']}]: {reward}  acc {row['accuracy']:.3f}  "
            f"kept {row['dynamic_sampling/kept_fraction']:.2f} in "
            f"{int(row['dynamic_sampling/rounds'])} round(s)  {agree}{row['time/step_s']:.1f} s{val}")

    # -- export and eval
    def _final_policy(self) -> None:
        """The policy with the run's final weights (already in memory after RL, else loaded)."""
        if self.policy is not None:
            return
        from nemo_qwenlong.loops.backend import build_policy, load_weights

        root, _ = self._latest_rl()
        if root is None and "sft" in self.cfg.pipeline:
            root = self.dirs["sft"] / "checkpoints"
        self.policy = build_policy(self.cfg, self.files, phase="rl", phase_steps=1)
        load_weights(self.policy, root or self.files.megatron_dir, optimizer=False)

    def export_stage(self) -> None:
        from nemo_qwenlong.loops.backend import export_hf

        folder = self.dirs["export"]
        done = stage_done(folder)
        step = self.rl_done_step or self._latest_rl()[1]
        if done and done.get("rl_step") == step:
            return
        if done and dist.is_rank0():  # RL went on since: export again
            shutil.rmtree(folder / "hf", ignore_errors=True)
        dist.barrier()
        self._final_policy()
        out = export_hf(self.cfg, self.policy, self.files.hf_dir, folder / "hf")
        mark_done(folder, {"rl_step": step, "hf": str(out)})
        self.console.line(f"export: {out} (after RL step {step})")

    def eval_stage(self) -> None:
        from nemo_qwenlong.loops.backend import build_engine, hf_tensors
        from nemo_qwenlong.loops.evaluation import eval_items, evaluate_model, overall

        folder = self.dirs["eval"]
        step = self.rl_done_step or self._latest_rl()[1]
        done = stage_done(folder)
        if done and done.get("rl_step") == step:
            self.eval_result = done
            return
        cfg = self.cfg
        models = {}
        if cfg.evaluation.compare_sft and "sft" in cfg.pipeline:
            models["sft"] = self.dirs["sft"] / "hf"
        models["rl" if "rl" in cfg.pipeline else "final"] = self.dirs["export"] / "hf"
        self.engine = self.engine or build_engine(cfg, self.files.hf_dir)
        summaries: dict[str, list[dict[str, Any]]] = {}
        if dist.is_rank0():
            items = eval_items(cfg, self.data.heldout)
            for name, hf_dir in models.items():
                self.engine.load_weights(hf_tensors(hf_dir), bucket_bytes=cfg.rollout.refit_bucket_mb * 2**20)
                sub = folder / name
                if done:  # RL went on since the last eval: score the new weights from scratch
                    shutil.rmtree(sub, ignore_errors=True)
                summaries[name] = evaluate_model(self.engine, self.tokenizer, items, sub, cfg,
                                                 model_name=f"{cfg.name}-{name}")
                self.console.line(f"eval {name}: strict {overall(summaries[name], 'strict'):.3f}, released protocol "
                                  f"(qwenlong) {overall(summaries[name], 'qwenlong'):.3f} over {len(items)} items "
                                  f"-> {sub / 'report.md'}")
        summaries = dist.broadcast(summaries)
        self.eval_result = {
            "rl_step": step, "items": summaries and sum(s["items"] for s in next(iter(summaries.values()))),
            "heldout_accuracy": {k: overall(v, "strict") for k, v in summaries.items()},
            "qwenlong": {k: overall(v, "qwenlong") for k, v in summaries.items()},
            "by_band": {k: {s["benchmark"]: (s.get("strict") or 0.0) / 100 for s in v} for k, v in summaries.items()},
            "judge": cfg.reward.judge_when != "never", "reports": {k: str(folder / k / "report.md") for k in summaries},
        }
        mark_done(folder, self.eval_result)

    # -- summary
    def finish(self) -> dict[str, Any]:
        from nemo_qwenlong.loops.report import write_report

        wall = time.perf_counter() - self.started
        summary = write_report(self, wall) if dist.is_rank0() else {}
        return dist.broadcast(summary)

