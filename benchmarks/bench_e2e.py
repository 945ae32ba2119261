"""Wall time per RL step of the tiny default (`make run`), broken down into generation, scoring,
old log-probs, update and refit, per curriculum stage; plus the SFT step time.

Reads a finished run's metrics.jsonl (`--run-dir`), or runs `nemo-qwenlong run conf/tiny-cpu.yaml`
into a temporary folder first. Writes benchmarks/out/bench_e2e.json.

Usage: python benchmarks/bench_e2e.py [--run-dir runs/tiny-cpu-...] [KEY=VALUE ...]
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
    summary = run_dir / "summary.json"
    out["wall_seconds"] = json.loads(summary.read_text())["wall_seconds"] if summary.is_file() else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: run the tiny default now)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = Path(tmp) / "run"
            subprocess.run([sys.executable, "-m", "nemo_qwenlong.cli.main", "run", str(REPO / "conf" / "tiny-cpu.yaml"),
                            "--output", str(run_dir), "--no-progress", *args.overrides], check=True, cwd=REPO)
        result = breakdown(run_dir)
    print(f"SFT step (median): {result['sft_step_s']:.3f} s" if result["sft_step_s"] else "no SFT steps")
    for stage, r in result["rl"].items():
        print(f"RL {stage} ({r['steps']} updating steps), median s: step {r['step_s']:.2f} = generate "
              f"{r['generate_s']:.2f} + score {r['score_s']:.3f} + old log-probs {r['old_logprobs_s']:.2f} + "
              f"update {r['update_s']:.2f} + refit/check {r['refit_s']:.2f}")
    if result["wall_seconds"]:
        print(f"run wall time: {result['wall_seconds']:.0f} s")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_e2e.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
