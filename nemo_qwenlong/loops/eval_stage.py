"""The `eval` stage of `run` (`loops.pipeline.Run`): the held-out DocQA evaluation of the SFT checkpoint
and of the final policy (`loops.evaluation`), scored again when RL went on after an earlier eval."""

from __future__ import annotations

import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from nemo_qwenlong.loops import dist
from nemo_qwenlong.loops.rl_stages import latest_rl
from nemo_qwenlong.loops.run_dir import mark_done, stage_done
from nemo_qwenlong.rollout.replicas import replicated


def run_eval_stage(run: Any) -> None:
    from nemo_qwenlong.loops.backend import build_engine, hf_tensors
    from nemo_qwenlong.loops.evaluation import overall

    folder = run.dirs["eval"]
    step = run.rl_done_step or latest_rl(run)[1]
    done = stage_done(folder)
    if done and done.get("rl_step") == step:
        run.eval_result = done
        return
    cfg = run.cfg
    models = {}
    if cfg.evaluation.compare_sft and "sft" in cfg.pipeline:
        models["sft"] = run.dirs["sft"] / "hf"
    models["rl" if "rl" in cfg.pipeline else "final"] = run.dirs["export"] / "hf"
    run.engine = run.engine or build_engine(cfg, run.files.hf_dir)
    spread = replicated(run.engine)
    summaries: dict[str, list[dict[str, Any]]] = {}
    for name, hf_dir in models.items():
        if spread or dist.is_rank0():  # every replica serves the model being evaluated
            run.engine.load_weights(hf_tensors(hf_dir), bucket_bytes=cfg.rollout.refit_bucket_mb * 2**20)
        if dist.is_rank0():
            with _leading(run.engine) as engine:
                summaries[name] = _evaluate(run, engine, name, folder / name, done)
        elif spread:  # rank 0 runs `eval generate`; its generation calls run on every replica
            run.engine.follow()
    summaries = dist.broadcast(summaries)
    run.eval_result = {
        "rl_step": step, "items": summaries and sum(s["items"] for s in next(iter(summaries.values()))),
        "heldout_accuracy": {k: overall(v, "strict") for k, v in summaries.items()},
        "qwenlong": {k: overall(v, "qwenlong") for k, v in summaries.items()},
        "by_band": {k: {s["benchmark"]: (s.get("strict") or 0.0) / 100 for s in v} for k, v in summaries.items()},
        "judge": cfg.reward.judge_when != "never", "reports": {k: str(folder / k / "report.md") for k in summaries},
    }
    mark_done(folder, run.eval_result)


def _leading(engine: Any):  # noqa: ANN202
    """Engine replicas: rank 0 leads (its calls run on every replica); one engine: itself."""
    return engine.lead() if replicated(engine) else nullcontext(engine)


def _evaluate(run: Any, engine: Any, name: str, sub: Path, done: dict | None) -> list[dict[str, Any]]:
    """Rank 0: `eval generate` + `eval score` of the engine's current weights into `sub`."""
    from nemo_qwenlong.loops.evaluation import eval_items, evaluate_model, overall

    cfg = run.cfg
    items = eval_items(cfg, run.data.heldout)
    if done:  # RL went on since the last eval: score the new weights from scratch
        shutil.rmtree(sub, ignore_errors=True)
    summary = evaluate_model(engine, run.tokenizer, items, sub, cfg, model_name=f"{cfg.name}-{name}")
    run.console.line(f"eval {name}: strict {overall(summary, 'strict'):.3f}, released protocol "
                     f"(qwenlong) {overall(summary, 'qwenlong'):.3f} over {len(items)} items "
                     f"-> {sub / 'report.md'}")
    return summary
