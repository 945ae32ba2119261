"""The toy RL loop: generate → reward → shape → dynamic sampling → advantages → clipped loss → step."""

from __future__ import annotations

import copy
import io
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from nemo_qwenlong.algorithms import (
    RolloutBatch,
    collect_groups,
    compute_advantages,
    count_sequences,
    count_tokens,
    overlong_penalty,
    pad_sequences,
    policy_loss,
)
from nemo_qwenlong.algorithms.losses import merge_micro_metrics
from nemo_qwenlong.algorithms.packing import micro_batches_by_tokens
from nemo_qwenlong.config import ConfigError, RunConfig
from nemo_qwenlong.config.pipeline import StageConfig
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
from nemo_qwenlong.demo.policy import GRUPolicy
from nemo_qwenlong.demo.task import ToyDocQA, ToyItem, is_correct
from nemo_qwenlong.fsio import atomic_write_bytes, atomic_write_text
from nemo_qwenlong.loops.preemption import Preempted

log = logging.getLogger(__name__)


POOL_PER_STAGE = 512  # toy items per curriculum stage band
DEMO_STATE = "demo_state.pt"  # policy, optimiser, generator, sampler, counters, metrics history


@dataclass
class DemoState:
    gen: torch.Generator
    items: dict[str, ToyItem]
    sampler: RetrospectiveSampler
    step: int = 0
    next_group: int = 0
    next_sample: int = 0
    round_correct: list[float] = field(default_factory=list)


@dataclass
class DemoResult:
    steps: int
    first_accuracy: float
    last_accuracy: float
    metrics_path: Path
    plot_path: Path | None


def check_demo_config(cfg: RunConfig) -> None:
    for i, stage in enumerate(cfg.curriculum.stages):
        if stage.steps is None:
            raise ConfigError(f"curriculum.stages.{i}.epochs: the demo counts RL steps; set curriculum.stages.{i}.steps")


def build_pools(task: ToyDocQA, cfg: RunConfig) -> tuple[dict[str, ToyItem], list[list[str]]]:
    """A fixed pool of toy items per curriculum stage, each inside its stage's length band."""
    rng = random.Random(cfg.seed)
    items: dict[str, ToyItem] = {}
    pools: list[list[str]] = []
    for k, stage in enumerate(cfg.curriculum.stages):
        pool = [task.sample(rng, stage.min_input_tokens, stage.max_input_tokens, f"toy-{k}-{i}") for i in range(POOL_PER_STAGE)]
        items.update((it.item_id, it) for it in pool)
        pools.append([it.item_id for it in pool])
    return items, pools


def generate_round(policy: GRUPolicy, cfg: RunConfig, stage: StageConfig, st: DemoState) -> RolloutBatch:
    """The sampler's next gen_batch_size items × G samples, scored and shaped, with behaviour log-probs."""
    g = cfg.rl.group_size
    items = [st.items[i] for i in st.sampler.next_batch().item_ids]
    prompt_ids, prompt_mask = pad_sequences([it.prompt for it in items for _ in range(g)])
    prompt_lengths = prompt_mask.sum(1)
    max_new = min(stage.max_output_tokens, cfg.rollout.max_new_tokens)
    responses, mask, truncated = policy.sample(
        prompt_ids, prompt_lengths, max_new_tokens=max_new, temperature=cfg.rollout.temperature,
        top_k=cfg.rollout.top_k, top_p=cfg.rollout.top_p, generator=st.gen,
    )
    answers = [it.answer for it in items for _ in range(g)]
    correct = torch.tensor([is_correct(r[m].tolist(), a) for r, m, a in zip(responses, mask, answers)])
    rewards = correct.float()
    if cfg.rl.overlong.enable:
        o = cfg.rl.overlong
        rewards = rewards + overlong_penalty(mask.sum(1), max_len=max_new, buffer=min(o.buffer, max_new), factor=o.factor)
    with torch.no_grad():  # the trainer recomputes behaviour log-probs, as the released code does
        old_logprobs, _ = policy.token_logprobs(prompt_ids, prompt_lengths, responses)
    n = len(answers)
    st.round_correct.extend(correct.float().tolist())
    per_item = correct.float().view(len(items), g).tolist()  # the ledger sees every group, kept or not
    st.sampler.observe({it.item_id: rewards for it, rewards in zip(items, per_item)}, step=st.step)
    batch = RolloutBatch(
        group_ids=torch.arange(st.next_group, st.next_group + len(items)).repeat_interleave(g),
        sample_ids=torch.arange(st.next_sample, st.next_sample + n),
        prompt_ids=prompt_ids, prompt_lengths=prompt_lengths, response_ids=responses, response_mask=mask,
        truncated=truncated, rewards=rewards, correct=correct, old_logprobs=old_logprobs * mask,
        item_ids=tuple(it.item_id for it in items for _ in range(g)),
    )
    st.next_sample += n
    st.next_group += len(items)
    return batch


def train_on_batch(policy: GRUPolicy, ref: GRUPolicy | None, opt: torch.optim.Optimizer, batch: RolloutBatch,
                   cfg: RunConfig) -> dict[str, float]:
    """epochs_per_batch passes of mini-batch optimiser steps; each step sums token-budgeted micro-batches."""
    rl = cfg.rl
    adv = compute_advantages(rl.advantage_estimator, batch.rewards, rl.group_size, eps=rl.adv_eps,
                             std_normalize=rl.std_normalize)
    batch = batch.replace(advantages=adv)
    rows_per_step = rl.mini_batch_size * rl.group_size
    micro_metrics: list[dict[str, float]] = []
    grad_norms = []
    for _ in range(rl.epochs_per_batch):
        for start in range(0, batch.num_rows, rows_per_step):
            mini = batch.select(torch.arange(start, min(start + rows_per_step, batch.num_rows)))
            n_tok, n_seq = count_tokens(mini.response_mask), count_sequences(mini.response_mask)
            opt.zero_grad(set_to_none=True)
            lengths = (mini.prompt_lengths + mini.response_lengths).tolist()
            for rows in micro_batches_by_tokens(lengths, rl.micro_batch_tokens):
                mb = mini.select(rows)
                logp, entropy = policy.token_logprobs(mb.prompt_ids, mb.prompt_lengths, mb.response_ids)
                ref_logp = None
                if ref is not None:
                    with torch.no_grad():
                        ref_logp, _ = ref.token_logprobs(mb.prompt_ids, mb.prompt_lengths, mb.response_ids)
                loss, m = policy_loss(
                    logp, mb.old_logprobs, mb.advantages, mb.response_mask, clip_low=rl.clip_low,
                    clip_high=rl.clip_high, num_global_tokens=n_tok, num_global_sequences=n_seq,
                    level=rl.loss_level, dual_clip=rl.dual_clip, ref_logprobs=ref_logp, kl_coef=rl.kl_coef,
                    kl_estimator=rl.kl_estimator, entropy=entropy, entropy_coef=rl.entropy_coef,
                )
                loss.backward()
                micro_metrics.append(m | {"loss": float(loss.detach())})
            clip = rl.optim.grad_clip or float("inf")
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)))
            opt.step()
    out = merge_micro_metrics(micro_metrics)
    out["grad_norm"] = max(grad_norms)
    out["optimizer_steps"] = float(len(grad_norms))
    return out


def run_demo(cfg: RunConfig, run_dir: Path, *, progress: bool = True, stop: Callable[[], bool] | None = None) -> DemoResult:
    """The toy RL run. With `checkpoint.resume: auto` a run dir holding `demo_state.pt` continues after its
    last saved step (metrics.jsonl is cut back to it); `stop()` true at a step boundary (SIGTERM/SIGUSR1,
    loops.preemption) saves the state and raises Preempted."""
    check_demo_config(cfg)
    torch.manual_seed(cfg.seed)
    task = ToyDocQA()
    items, pools = build_pools(task, cfg)
    sampler = RetrospectiveSampler(pools, cfg.curriculum.stages, batch_size=cfg.rl.gen_batch_size, seed=cfg.seed,
                                   drop_last=cfg.curriculum.drop_last)
    st = DemoState(gen=torch.Generator().manual_seed(cfg.seed), items=items, sampler=sampler)
    policy = GRUPolicy(task.vocab_size, cfg.model.tiny.hidden_size)
    ref = copy.deepcopy(policy).eval() if cfg.rl.kl_coef > 0 else None
    o = cfg.rl.optim
    opt = torch.optim.AdamW(policy.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)
    metrics_path = run_dir / "metrics.jsonl"
    state_path = run_dir / DEMO_STATE
    history: list[dict[str, float | str]] = []
    source = resume_source(cfg.checkpoint.resume, run_dir)
    if source is not None:
        history = load_demo_state(source, policy, ref, opt, st)
        log.info("resuming after step %d from %s", len(history), source)
    atomic_write_text(metrics_path, "".join(json.dumps(row) + "\n" for row in history))  # never a stale tail
    total = sum(s.steps or 0 for s in cfg.curriculum.stages)
    bar = tqdm(total=total, initial=len(history), desc="demo RL", unit="step", disable=not progress)
    done_before = 0
    with open(metrics_path, "a", encoding="utf-8") as sink:
        for k, stage in enumerate(cfg.curriculum.stages):
            steps = stage.steps or 0
            if done_before + steps <= len(history):
                done_before += steps
                continue
            sampler.set_stage(k)
            log.info("stage %s: prompts of (%d, %d] tokens, %d steps, retrospective share %.2f", stage.name,
                     stage.min_input_tokens, stage.max_input_tokens, stage.steps, stage.retrospective.share)
            for _ in range(len(history) - done_before, steps):
                row = rl_step(policy, ref, opt, cfg, stage, k, st, len(history) + 1)
                history.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                bar.update(1)
                bar.set_postfix(stage=stage.name, acc=f"{row['accuracy']:.2f}")
                if len(history) % cfg.checkpoint.save_every_steps == 0:
                    save_demo_state(state_path, policy, ref, opt, st, history)
                if stop is not None and stop():
                    save_demo_state(state_path, policy, ref, opt, st, history)
                    raise Preempted(f"step {len(history)}")
            done_before += steps
    bar.close()
    save_demo_state(state_path, policy, ref, opt, st, history)
    sampler.ledger.to_csv(run_dir / "difficulty_ledger.csv")
    plot_path = plot_history(history, run_dir / "demo_curve.png")
    window = max(1, min(5, len(history) // 4))
    acc = [float(h["accuracy"]) for h in history]
    return DemoResult(len(history), sum(acc[:window]) / window, sum(acc[-window:]) / window, metrics_path, plot_path)


def rl_step(policy: GRUPolicy, ref: GRUPolicy | None, opt: torch.optim.Optimizer, cfg: RunConfig, stage: StageConfig,
            k: int, st: DemoState, step: int) -> dict[str, float | str]:
    """One RL step of stage `k`: dynamic-sampling rounds, then the update; returns the metrics row."""
    t0 = time.perf_counter()
    st.round_correct.clear()
    st.step = step
    ds = cfg.rl.dynamic_sampling
    batch, ds_stats = collect_groups(
        lambda _r: generate_round(policy, cfg, stage, st), target_groups=cfg.rl.train_batch_size,
        group_size=cfg.rl.group_size, max_rounds=ds.max_rounds, enable=ds.enable, on_exhausted=ds.on_exhausted,
    )
    m = train_on_batch(policy, ref, opt, batch, cfg)
    return {"step": step, "stage": stage.name,
            "accuracy": sum(st.round_correct) / len(st.round_correct),
            "reward_mean": float(batch.rewards.mean()),
            "response_len_mean": float(batch.response_lengths.float().mean()),
            "truncated_frac": float(batch.truncated.float().mean()),
            "retro_rows": sum(not i.startswith(f"toy-{k}-") for i in batch.item_ids),
            "step_s": time.perf_counter() - t0} | m | ds_stats.as_metrics() | st.sampler.metrics()


# ---- resume: everything a step depends on, in one weights-only file -----------------------------

def resume_source(resume: str, run_dir: Path) -> Path | None:
    """The state file to continue from: `checkpoint.resume` 'auto' (this run dir's, if any), 'never'
    (a run dir that already holds a demo run is refused), or a folder holding demo_state.pt."""
    own = run_dir / DEMO_STATE
    if resume == "auto":
        return own if own.is_file() else None
    if resume == "never":
        if own.is_file() or (run_dir / "metrics.jsonl").is_file():
            raise ConfigError(f"checkpoint.resume='never' but {run_dir} already holds a demo run; "
                              "choose a new --run-dir or set checkpoint.resume=auto")
        return None
    given = Path(resume) / DEMO_STATE if Path(resume).is_dir() else Path(resume)
    if not given.is_file():
        raise ConfigError(f"checkpoint.resume={resume!r}: no {DEMO_STATE} there; accepted: 'auto', 'never', "
                          f"or a demo run dir / {DEMO_STATE} file")
    return given


def save_demo_state(path: Path, policy: GRUPolicy, ref: GRUPolicy | None, opt: torch.optim.Optimizer,
                    st: DemoState, history: list[dict]) -> None:
    buffer = io.BytesIO()
    torch.save({"version": 1, "policy": policy.state_dict(), "ref": ref.state_dict() if ref is not None else None,
                "optimizer": opt.state_dict(), "generator": st.gen.get_state(), "sampler": st.sampler.state_dict(),
                "next_group": st.next_group, "next_sample": st.next_sample, "history": history}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_demo_state(path: Path, policy: GRUPolicy, ref: GRUPolicy | None, opt: torch.optim.Optimizer,
                    st: DemoState) -> list[dict]:
    """Restore a demo state file (read with weights_only=True: it cannot run code); returns the history."""
    from nemo_qwenlong.backends.megatron.safe_load import load_weights_only

    state = load_weights_only(str(path), str(path))
    try:
        policy.load_state_dict(state["policy"])
        if ref is not None and state["ref"] is not None:
            ref.load_state_dict(state["ref"])
        opt.load_state_dict(state["optimizer"])
        st.gen.set_state(state["generator"])
        st.sampler.load_state_dict(state["sampler"])
        st.next_group, st.next_sample = int(state["next_group"]), int(state["next_sample"])
        return list(state["history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path}: not a demo state of this config ({type(exc).__name__}: {exc}); "
                          "use a new --run-dir or the config it was started with") from None


def plot_history(history: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are a convenience; metrics.jsonl has the numbers
        log.warning("matplotlib not installed: no plot written (metrics are in metrics.jsonl)")
        return None
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, [h["accuracy"] for h in history], label="accuracy (all samples)")
    ax.plot(steps, [h["reward_mean"] for h in history], label="reward mean (kept groups)", alpha=0.7)
    ax.plot(steps, [h["dynamic_sampling/kept_fraction"] for h in history], label="kept group fraction", alpha=0.5)
    for prev, cur in zip(history, history[1:]):
        if prev["stage"] != cur["stage"]:
            ax.axvline(cur["step"] - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(cur["step"], 0.97, f" {cur['stage']}", fontsize=8, va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("RL step")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("toy document-QA RL (GRPO advantages, DAPO loss, dynamic sampling)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
