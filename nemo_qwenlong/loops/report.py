"""The end of a run: `summary.json`, `summary.md`, and PNG plots per RL stage and for the whole run.
An RL row of step 0 (`logging.val_before_train`) holds only `val_accuracy`: it is plotted, not counted as a step."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from nemo_qwenlong.fsio import atomic_write_text

log = logging.getLogger(__name__)

# (metric key, panel title); a panel is drawn when any row has the key
RL_PANELS = (
    (("reward_mean", "accuracy", "val_accuracy"), "reward and accuracy"),
    (("response_len_mean",), "response length (tokens)"),
    (("truncated_frac",), "truncation rate"),
    (("entropy",), "entropy"),
    (("approx_kl", "kl_ref"), "KL (to behaviour policy; to reference)"),
    (("ratio_mean", "ratio_min", "ratio_max"), "importance ratio π/π_old"),
    (("clip_frac_high", "clip_frac_low", "dual_clip_frac"), "clip fractions"),
    (("dynamic_sampling/kept_fraction",), "kept-group fraction"),
    (("dynamic_sampling/rounds",), "dynamic-sampling rounds"),
    (("reward/judge_requested", "reward/judge_failures"), "judge calls / failures"),
    (("logprob_abs_diff_max", "logprob_abs_diff_mean"), "engine-trainer |Δ log-prob|"),
    (("time/generate_s", "time/score_s", "time/old_logprobs_s", "time/update_s", "time/refit_s"), "step time (s)"),
)


def plot_rows(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """A grid of panels over RL steps (stage boundaries dashed); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no plots (metrics.jsonl has the numbers)")
        return None
    panels = [(keys, t) for keys, t in RL_PANELS if any(k in r for r in rows for k in keys)]
    if not rows or not panels:
        return None
    cols = 3
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(13, 3 * ((len(panels) + cols - 1) // cols)),
                             squeeze=False)
    for ax, (keys, name) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key.split("/")[-1])
        for prev, cur in zip(rows, rows[1:]):
            if prev["stage"] != cur["stage"]:
                ax.axvline(cur["step"] - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sft(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss")
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    ax.set_xlabel("SFT step")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("warm-up SFT (response-token NLL)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(run: Any, wall: float) -> dict[str, Any]:
    run_dir: Path = run.run_dir
    rows_rl, rows_sft = run.metrics.rows("rl"), run.metrics.rows("sft")
    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)  # an SFT-only pipeline has no RL plot to create it
    made = [plot_rows(rows_rl, plots / "rl.png", "RL (all stages)"), plot_sft(rows_sft, plots / "sft.png")]
    for stage in run.cfg.curriculum.stages:
        sub = [r for r in rows_rl if r["stage"] == stage.name]
        made.append(plot_rows(sub, plots / f"rl-{stage.name}.png", f"RL stage {stage.name}"))
    sessions = run_dir / "sessions.jsonl"
    with sessions.open("a") as fh:
        fh.write(json.dumps({"wall_seconds": wall}) + "\n")
    total_wall = sum(json.loads(line)["wall_seconds"] for line in sessions.read_text().splitlines() if line.strip())
    result = getattr(run, "eval_result", None) or {}
    summary = {
        "run_dir": str(run_dir), "steps": {"sft": len(rows_sft), "rl": sum(r["step"] > 0 for r in rows_rl)},
        "wall_seconds": round(total_wall, 1), "sessions": len(sessions.read_text().splitlines()),
        "heldout_accuracy": result.get("heldout_accuracy", {}), "heldout_by_band": result.get("by_band", {}),
        "heldout_items": result.get("items"), "judge_in_eval": result.get("judge", False),
        "heldout_qwenlong": result.get("qwenlong", {}), "eval_reports": result.get("reports", {}),
        "heldout_after_stage": _after_stage(run, result), "kept_fraction_median": _kept_median(run, rows_rl),
        "reward_first_last": _first_last(rows_rl, "reward_mean"), "accuracy_first_last": _first_last(rows_rl, "accuracy"),
        "plots": [str(p) for p in made if p], "export": str(run.dirs["export"] / "hf") if "export" in run.dirs else None,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(run_dir / "summary.md", _markdown(summary))
    run.console.line(_markdown(summary))
    return summary


def _after_stage(run: Any, result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Held-out accuracy by band after each stage: SFT from the eval stage, each RL stage from the
    probe in its `stage.json` (greedy, the rollout engine, the stage's final weights). The SFT row only
    when the eval stage scored the held-out split (not `evaluation.benchmarks`)."""
    out: dict[str, dict[str, float]] = {}
    sft = (result.get("by_band") or {}).get("sft")
    if sft and not run.cfg.evaluation.benchmarks:
        out["sft"] = dict(sorted(sft.items())) | {"all": result["heldout_accuracy"]["sft"]}
    for stage in run.cfg.curriculum.stages:
        path = run.dirs.get(f"rl-{stage.name}")
        done = json.loads((path / "stage.json").read_text()) if path and (path / "stage.json").is_file() else {}
        if done.get("heldout_probe"):
            out[stage.name] = done["heldout_probe"]["accuracy"]
    return out


def _kept_median(run: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median `dynamic_sampling/kept_fraction` (mixed groups / groups generated) per RL stage."""
    out = {}
    for stage in run.cfg.curriculum.stages:
        vals = [r["dynamic_sampling/kept_fraction"] for r in rows
                if r["stage"] == stage.name and r.get("dynamic_sampling/kept_fraction") is not None]
        if vals:
            out[stage.name] = round(statistics.median(vals), 4)
    return out


def _first_last(rows: list[dict[str, Any]], key: str, window: int = 5) -> list[float] | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    w = max(1, min(window, len(vals) // 4 or 1))
    return [round(sum(vals[:w]) / w, 4), round(sum(vals[-w:]) / w, 4)]


def _markdown(s: dict[str, Any]) -> str:
    acc = s["heldout_accuracy"]
    lines = [f"# Run summary: {s['run_dir']}", "",
             f"- steps: {s['steps']['sft']} SFT, {s['steps']['rl']} RL; wall {s['wall_seconds']:.0f} s "
             f"over {s['sessions']} session(s)"]
    if s["reward_first_last"]:
        r, a = s["reward_first_last"], s["accuracy_first_last"]
        lines.append(f"- RL reward (first → last steps): {r[0]:.3f} → {r[1]:.3f}; rollout accuracy {a[0]:.3f} → {a[1]:.3f}")
    if acc:
        lines.append(f"- held-out accuracy over {s['heldout_items']} items, `strict` score "
                     f"({'rule ⊕ judge' if s['judge_in_eval'] else 'rule only, no judge'}): "
                     + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
        if s.get("heldout_qwenlong"):
            lines.append("- the released QwenLong-L1 protocol (`qwenlong`): "
                         + ", ".join(f"{k} {v:.3f}" for k, v in s["heldout_qwenlong"].items()))
        for k, path in (s.get("eval_reports") or {}).items():
            lines.append(f"  - {k} report: {path}")
        for k, bands in s["heldout_by_band"].items():
            lines.append(f"  - {k} by band: " + ", ".join(f"{b} {v:.3f}" for b, v in bands.items()))
    lines += _after_stage_table(s)
    if s["export"]:
        lines.append(f"- HF export: {s['export']}")
    lines += [f"- plots: {', '.join(s['plots'])}" if s["plots"] else "- plots: none", ""]
    return "\n".join(lines)


def _after_stage_table(s: dict[str, Any]) -> list[str]:
    after, kept = s.get("heldout_after_stage") or {}, s.get("kept_fraction_median") or {}
    lines = []
    if kept:
        lines.append("- median kept-group fraction (dynamic sampling) per RL stage: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in kept.items()))
    if not after:
        return lines
    bands = sorted({b for v in after.values() for b in v if b != "all"}) + ["all"]
    lines += ["", "Held-out accuracy after each stage, by band (SFT: the eval stage; RL stages: a greedy probe "
              "with the rollout engine at the stage's end, scored by the RL reward):", "",
              "| after | " + " | ".join(bands) + " |", "|---" * (len(bands) + 1) + "|"]
    for name, acc in after.items():
        lines.append(f"| {name} | " + " | ".join(f"{acc[b]:.3f}" if b in acc else "" for b in bands) + " |")
    return lines + [""]
