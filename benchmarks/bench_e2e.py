"""Wall time per RL step of the tiny default (`make run`), broken down into generation, scoring,
old log-probs, update and refit, per curriculum stage; plus the SFT step time.

Reads a finished run's metrics.jsonl (`--run-dir`), or runs `nemo-qwenlong run conf/tiny-cpu.yaml`
into a temporary folder first. Writes benchmarks/out/bench_e2e.json.

`--ranks 1,2` runs the same recipe once per rank count (`--nproc-per-node`, R = ranks /
rollout.tensor_parallel vLLM replicas) and adds, per run: generated tokens/s overall and per
replica (the slowest replica's seconds), refit seconds and the refit's peak extra memory per rank.

Usage: python benchmarks/bench_e2e.py [--run-dir runs/tiny-cpu-...] [--ranks 1,2] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parents[1]
PARTS = ("time/generate_s", "time/score_s", "time/old_logprobs_s", "time/update_s", "time/refit_s", "time/step_s")


def breakdown(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out: dict = {"sft_step_s": statistics.median(r["step_s"] for r in rows if r["phase"] == "sft")
                 if any(r["phase"] == "sft" for r in rows) else None, "rl": {}}
    for stage in dict.fromkeys(r["stage"] for r in rows if r["phase"] == "rl"):
        sub = [r for r in rows if r["phase"] == "rl" and r["stage"] == stage and not r.get("update_skipped")]
        out["rl"][stage] = {"steps": len(sub), **{p.split("/")[1]: statistics.median(r.get(p, 0.0) for r in sub)
                                                  for p in PARTS}}
    rl = [r for r in rows if r["phase"] == "rl" and not r.get("update_skipped")]
    if rl:
        cfg = _config(run_dir)
        per_round = cfg["rl"]["gen_batch_size"] * cfg["rl"]["group_size"]
        tokens = [r["response_len_mean"] * per_round * r["dynamic_sampling/rounds"] for r in rl]
        replicas = int(rl[0].get("rollout/replicas", 1))
        out["rollout"] = {
            "replicas": replicas,
            "tokens_per_s": statistics.median(t / r["time/generate_s"] for t, r in zip(tokens, rl)),
            "tokens_per_s_per_replica": statistics.median(
                t / replicas / r.get("time/generate_s_max", r["time/generate_s"]) for t, r in zip(tokens, rl)),
            "generate_s_max": statistics.median(r.get("time/generate_s_max", 0.0) for r in rl),
            "generate_s_min": statistics.median(r.get("time/generate_s_min", 0.0) for r in rl),
            "refit_s": statistics.median(r["time/refit_s"] for r in rl),
            "refit_peak_extra_mb": max(r.get("refit/peak_extra_mb", 0.0) for r in rl)}
    summary = run_dir / "summary.json"
    out["wall_seconds"] = json.loads(summary.read_text())["wall_seconds"] if summary.is_file() else None
    return out


def _config(run_dir: Path) -> dict:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


def _run(tmp: str, ranks: int, overrides: list[str]) -> dict:
    run_dir = Path(tmp) / f"run-{ranks}"
    subprocess.run([sys.executable, "-m", "nemo_qwenlong.cli.main", "run", str(REPO / "conf" / "tiny-cpu.yaml"),
                    "--output", str(run_dir), "--no-progress", "--nproc-per-node", str(ranks), *overrides],
                   check=True, cwd=REPO)
    return breakdown(run_dir)


def _rank_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: accepted: rank counts >= 1, comma-separated, e.g. 1,2")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: run the tiny default now)")
    parser.add_argument("--ranks", default=[1], type=_rank_counts, help="comma-separated rank counts to run (default: 1)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    ranks = args.ranks
    with tempfile.TemporaryDirectory() as tmp:
        if args.run_dir is not None:
            results = {"given": breakdown(args.run_dir)}
        else:
            results = {f"ranks={n}": _run(tmp, n, args.overrides) for n in ranks}
    for name, result in results.items():
        print(f"== {name}")
        show(result)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_e2e.json").write_text(json.dumps(results, indent=2))


def show(result: dict) -> None:
    print(f"SFT step (median): {result['sft_step_s']:.3f} s" if result["sft_step_s"] else "no SFT steps")
    for stage, r in result["rl"].items():
        print(f"RL {stage} ({r['steps']} updating steps), median s: step {r['step_s']:.2f} = generate "
              f"{r['generate_s']:.2f} + score {r['score_s']:.3f} + old log-probs {r['old_logprobs_s']:.2f} + "
              f"update {r['update_s']:.2f} + refit/check {r['refit_s']:.2f}")
    r = result.get("rollout")
    if r:
        print(f"rollout: {r['replicas']} replica(s), {r['tokens_per_s']:.0f} generated tokens/s overall, "
              f"{r['tokens_per_s_per_replica']:.0f} per replica (slowest replica's seconds; replicas "
              f"{r['generate_s_min']:.2f}-{r['generate_s_max']:.2f} s per step); refit {r['refit_s']:.3f} s, "
              f"peak extra {r['refit_peak_extra_mb']:.2f} MB per rank")
    if result["wall_seconds"]:
        print(f"run wall time: {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
