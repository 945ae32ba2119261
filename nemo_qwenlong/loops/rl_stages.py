"""The RL stages of `run` (`loops.pipeline.Run`): one folder per curriculum stage, each a loop of
`loops.rl.rl_step` with validation, checkpoints, preemption, the difficulty ledger and, at its end, a
held-out probe by band.

A stage starts where the previous one ended (a stage in `epochs` may end early, when its data runs
out); a resumed run continues from the newest RL checkpoint of any stage (model, optimiser and LR
schedule, sampler and ledger, RNGs, the step the stage started at). `run` is the `Run` holding the
config, the run directory, the data, the policy and the engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nemo_qwenlong.loops import dist, state
from nemo_qwenlong.loops.preemption import Preempted
from nemo_qwenlong.loops.run_dir import RunError, mark_done, stage_done


def stage_lengths(run: Any) -> tuple[list[list[str]], list[int]]:
    """Each curriculum stage's item pool (by templated prompt length) and its RL step count."""
    from nemo_qwenlong.curriculum.stages import split_by_stage, stage_steps

    lengths = {x: len(p) for x, p in run.prompts.items()}
    splits = split_by_stage([it.item_id for it in run.data.train], lengths, run.cfg.curriculum.stages)
    pools = [s.item_ids for s in splits]
    steps = [stage_steps(s, len(pool), run.cfg.rl.gen_batch_size, drop_last=run.cfg.curriculum.drop_last)
             for s, pool in zip(run.cfg.curriculum.stages, pools)]
    for s, pool, n in zip(run.cfg.curriculum.stages, pools, steps):
        if not pool:
            raise RunError(f"curriculum stage '{s.name}' has no training items with {s.min_input_tokens} < "
                           f"prompt tokens <= {s.max_input_tokens} (check the data or the stage bands)")
        if run.cfg.curriculum.drop_last and len(pool) < run.cfg.rl.gen_batch_size:
            # a batch takes up to rl.gen_batch_size items from the stage's own band (fewer only when the
            # ledger has retrospective items), and drop_last never repeats an item within a batch
            raise RunError(f"curriculum stage '{s.name}' has {len(pool)} training items, fewer than "
                           f"rl.gen_batch_size={run.cfg.rl.gen_batch_size} with curriculum.drop_last=true; "
                           "add items to the stage's band, lower rl.gen_batch_size, or set curriculum.drop_last=false")
        if n == 0:
            raise RunError(f"curriculum stage '{s.name}': {len(pool)} items make 0 steps of "
                           f"rl.gen_batch_size={run.cfg.rl.gen_batch_size} with drop_last")
    check_task_balance(run, pools)
    return pools, steps


def item_tasks(run: Any) -> dict[str, str] | None:
    """item id -> task for task-balanced sampling (`curriculum.task_balance`); None when it is off."""
    from nemo_qwenlong.data.task import task_of

    tb = run.cfg.curriculum.task_balance
    if not tb.enabled:
        return None
    return {it.item_id: task_of(it.data_source, tb.key) for it in run.data.train}


def check_task_balance(run: Any, pools: list[list[str]]) -> None:
    """Before any model is built: every task of every stage can fill its share of a batch, weights name real
    tasks (RunError naming each task, its items and its need; never padded from other tasks)."""
    from nemo_qwenlong.curriculum.balance import balance_problems

    tasks = item_tasks(run)
    if tasks is None:
        return
    problems = balance_problems(pools, [s.name for s in run.cfg.curriculum.stages], tasks,
                                run.cfg.curriculum.task_balance.weights, run.cfg.rl.gen_batch_size)
    if problems:
        raise RunError("curriculum.task_balance: " + "; ".join(problems) +
                       " (add items, lower rl.gen_batch_size or the task's weight, or turn task_balance off)")


def encode_items(run: Any) -> None:
    """Prompt token ids of every train/val/held-out item, once per process."""
    if run.prompts is not None:
        return
    from nemo_qwenlong.loops.encode import prompt_ids

    items = run.data.train + run.data.val + run.data.heldout
    run.items = {it.item_id: it for it in items}
    run.prompts = {it.item_id: prompt_ids(run.tokenizer, it.messages) for it in items}


def latest_rl(run: Any) -> tuple[Path | None, int]:
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    best: tuple[Path | None, int] = (None, 0)
    for s in run.cfg.curriculum.stages:
        if f"rl-{s.name}" not in run.dirs:  # a pipeline without rl (e.g. [data, export, eval])
            continue
        root = run.checkpoints[f"rl-{s.name}"]
        step = ckpt.latest_step(root) if root.is_dir() else None
        if step and step > best[1]:
            best = (root, step)
    return best


def rl_env(run: Any, pools: list[list[str]], total_steps: int):  # noqa: ANN202
    from nemo_qwenlong.algorithms.aepo import AepoState
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
    from nemo_qwenlong.loops.backend import build_engine, build_policy, load_weights
    from nemo_qwenlong.loops.rl import RLEnv, refit
    from nemo_qwenlong.rewards.hybrid import build_reward

    cfg = run.cfg
    run.policy = build_policy(cfg, run.files, phase="rl", phase_steps=total_steps)
    sampler = RetrospectiveSampler(pools, cfg.curriculum.stages, batch_size=cfg.rl.gen_batch_size, seed=cfg.seed,
                                   drop_last=cfg.curriculum.drop_last, tasks=item_tasks(run),
                                   task_weights=cfg.curriculum.task_balance.weights)
    # before any RNG restore: building a vLLM engine reseeds the process's global generators (its
    # workers call set_random_seed), which would overwrite a resumed run's saved RNG state
    run.engine = run.engine or build_engine(cfg, run.files.hf_dir)
    root, step = latest_rl(run)
    loop: dict[str, Any] = {"step": 0, "stage_index": 0, "stage_step": 0}
    if root is not None:
        load_weights(run.policy, root, optimizer=True, config_hash=run.hash)
        loop = state.load(root / ckpt.iter_dirname(step))
        if loop.get("data") != run.data.info["fingerprint"]:
            raise RunError(f"{root}: checkpoint was trained on other data ({loop.get('data')}, now "
                           f"{run.data.info['fingerprint']}); start a new run")
        sampler.load_state_dict(loop["sampler"])
        state.set_rng_state(loop["rng"])
    elif "sft" in cfg.pipeline:
        load_weights(run.policy, run.checkpoints["sft"], optimizer=False)
    else:
        load_weights(run.policy, run.files.megatron_dir, optimizer=False)
    reward = build_reward(cfg.reward, run_dir=str(run.run_dir)) if dist.is_rank0() else None
    dp_rank, dp_size = run.dp()
    env = RLEnv(cfg, run.policy, run.engine, reward, run.tokenizer, run.items, run.prompts, sampler,
                dp_rank, dp_size, run.console.progress, aepo=AepoState() if cfg.rl.aepo.enable else None)
    if env.aepo is not None and "aepo" in loop:  # a resumed run continues AEPO's state exactly
        env.aepo.load_state_dict(loop["aepo"])
    run.policy.prepare_for_generation()
    refit(env, None)  # the engine starts from the policy's weights, whatever hf_init held
    return env, loop


def run_rl_stages(run: Any) -> None:
    from nemo_qwenlong.loops.rl import rl_step

    stages = run.cfg.curriculum.stages
    if all(stage_done(run.dirs[f"rl-{s.name}"]) for s in stages):
        run.rl_done_step = stage_done(run.dirs[f"rl-{stages[-1].name}"])["last_step"]
        return
    encode_items(run)
    pools, steps = stage_lengths(run)
    env, loop = rl_env(run, pools, sum(steps))
    step = int(loop["step"])
    if dist.is_rank0():  # a fresh RL start (step 0) also drops a step-0 row: its validation runs again
        run.metrics.truncate_after("rl", step if step else -1)
    if step == 0 and run.cfg.logging.val_before_train and run.data.val:
        acc = validation_accuracy(run, env, run.data.val, 0)
        run.log_row({"phase": "rl", "stage": stages[0].name, "step": 0, "val_accuracy": acc})
        run.console.line(f"rl step 0 (before training): val acc {acc:.3f}")
    budget = run.opts.max_steps
    for k, stage in enumerate(stages):
        name = f"rl-{stage.name}"
        folder = run.dirs[name]
        if stage_done(folder) or k < int(loop["stage_index"]):
            continue
        # a stage in epochs may end early (its data ran out), so it starts where the last one ended
        # (a checkpoint of this stage: its saved start; before stage_start was saved: the planned sums)
        first = int(loop.get("stage_start", sum(steps[:k]))) if k == int(loop["stage_index"]) else step
        last = first + steps[k]
        env.sampler.set_stage(k)
        tasks = env.sampler.task_summary()  # '' unless curriculum.task_balance
        run.console.line(f"rl stage {stage.name}: steps {first + 1}-{last}{' at most' if stage.epochs else ''}, prompts in "
                          f"({stage.min_input_tokens}, {stage.max_input_tokens}] tokens, {len(env.sampler.pools[k])} "
                          f"items, retrospective share {stage.retrospective.share}{'; ' + tasks if tasks else ''}")
        while step < last and not env.sampler.exhausted():
            if budget is not None and step >= budget:
                run.rl_done_step = step
                run.console.line(f"--max-steps {budget} reached after RL step {step}")
                return
            step += 1
            row = rl_step(env, k, step)
            if step % run.cfg.logging.val_every_steps == 0 and run.data.val:
                row["val_accuracy"] = validation_accuracy(run, env, run.data.val, step)
            run.log_row(row)
            show_rl(run, row, last)
            stop = run.flag.requested()
            end = step == last or env.sampler.exhausted() or (budget is not None and step >= budget)
            if stop or end or step % run.cfg.checkpoint.save_every_steps == 0:
                run.save(run.checkpoints[name], step, {"phase": "rl", "step": step, "stage_index": k,
                                                           "stage_start": first, "sampler": env.sampler.state_dict()}
                         | ({} if env.aepo is None else {"aepo": env.aepo.state_dict()}))
            if stop:
                raise Preempted(f"RL step {step}")
        if dist.is_rank0():
            env.sampler.ledger.to_csv(folder / "difficulty_ledger.csv", retrospective=stage.retrospective)
        mark_done(folder, {"last_step": step, "checkpoint": str(run.checkpoints[name]),
                           "heldout_probe": heldout_probe(run, env, stage.name)})
    run.rl_done_step = step


def validation_accuracy(run: Any, env: Any, items: list, step: int) -> float:
    """Mean over `rollout.val_samples` samples of every item (`rl.validation_sampling`)."""
    from nemo_qwenlong.loops.rl import evaluate_items, validation_sampling

    cfg = run.cfg
    settings = validation_sampling(cfg.rollout, seed=cfg.seed + step, max_tokens=cfg.rollout.max_new_tokens)
    results = evaluate_items(env, items, settings)
    return sum(r["correct"] for r in results) / len(results)


def heldout_probe(run: Any, env: Any, stage: str) -> dict[str, Any]:
    """Held-out accuracy by band after an RL stage: greedy (`evaluation.temperature`) with the rollout
    engine, which holds the stage's final weights; items whose prompt fits the longest stage."""
    from nemo_qwenlong.loops.evaluation import accuracy_by_band
    from nemo_qwenlong.loops.rl import evaluate_items, probe_sampling

    cfg = run.cfg
    cap = max(s.max_input_tokens for s in cfg.curriculum.stages)
    items = [it for it in run.data.heldout if len(run.prompts[it.item_id]) <= cap][: cfg.evaluation.max_items]
    if not items:
        return {}
    results = evaluate_items(env, items, probe_sampling(cfg.evaluation, cfg.rollout, seed=cfg.seed),
                             what="held-out probe")
    acc = accuracy_by_band(items, [r["correct"] for r in results])
    run.console.line(f"held-out after {stage} ({len(items)} items): "
                      + ", ".join(f"{b} {v:.3f}" for b, v in acc.items()))
    return {"items": len(items), "accuracy": acc}


def show_rl(run: Any, row: dict[str, Any], last: int) -> None:
    if row["step"] % run.cfg.logging.log_every_steps and row["step"] != last:
        return
    val = f"  val acc {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""
    # a batch was collected (a real reward mean) but AEPO kept none of its samples
    mean = row["reward_mean"]
    aepo_empty = row.get("aepo/masking") and isinstance(mean, float) and not math.isnan(mean)
    reward = (("AEPO kept no sample" if aepo_empty else "no mixed group") + " (update skipped)"
              if row.get("update_skipped") else f"reward {row['reward_mean']:+.3f}  loss {row['loss']:+.4f}")
    agree = f"|Δlogp| {row['logprob_abs_diff_max']:.1e}  " if "logprob_abs_diff_max" in row else ""
    run.console.line(
        f"rl step {row['step']}/{last} [{row['stage']}]: {reward}  acc {row['accuracy']:.3f}  "
        f"kept {row['dynamic_sampling/kept_fraction']:.2f} in "
        f"{int(row['dynamic_sampling/rounds'])} round(s)  {agree}{row['time/step_s']:.1f} s{val}")
