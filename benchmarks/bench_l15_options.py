"""Held-out accuracy of the tiny default with each QwenLong-L1.5 option on and off, over seeds.

Per seed and data set, the SFT stage runs once (`pipeline=[data,sft,export]`); every variant then runs RL
from that export (`pipeline=[data,rl,export,eval] model.source=hf`), which gives the same run as the full
pipeline (seed 1, option off: the same probes as `make run`). Variants:
- `off`: QwenLong-L1 (the default);
- `task_std`: `rl.advantage_std=task` (one task in the tiny data: the std over the whole batch);
- `aepo`: `rl.aepo` in the paper's hysteresis mode, band 0.40-0.45 (the tiny policy's token entropy is
  0.35-0.52 over a run);
- on the two-task tiny data (`data.synthetic.choice_every=4`: every 4th item multiple choice), `mc_off`
  and `mc_balance` (`curriculum.task_balance.enabled=true`). Held-out items stay QA.

Runs are kept under --work (default benchmarks/out/l15): a finished run is read, not rerun, so the
script resumes after a kill. Writes benchmarks/out/bench_l15_options.json and prints a table.

Usage: python benchmarks/bench_l15_options.py [--seeds 1,2,3] [--variants off,task_std,...] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MC = ["data.synthetic.choice_every=4"]
VARIANTS: dict[str, tuple[list[str], list[str]]] = {  # name -> (data overrides, RL overrides)
    "off": ([], []),
    "task_std": ([], ["rl.advantage_std=task"]),
    "aepo": ([], ["rl.aepo.enable=true", "rl.aepo.mode=hysteresis", "rl.aepo.entropy_low=0.40",
                  "rl.aepo.entropy_high=0.45"]),
    "mc_off": (MC, []),
    "mc_balance": (MC, ["curriculum.task_balance.enabled=true"]),
}


def run(out: Path, *overrides: str) -> dict:
    if not (out / "summary.json").exists():
        cmd = [sys.executable, "-m", "nemo_qwenlong.cli.main", "run", "conf/tiny-cpu.yaml", "--output", str(out),
               "--no-progress", *overrides]
        print("$", " ".join(cmd[2:]), flush=True)
        res = subprocess.run(cmd, cwd=REPO, env=os.environ | {"OMP_NUM_THREADS": "2"}, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"bench_l15_options error: {out} failed (rc {res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text())


def one(work: Path, seed: int, name: str) -> dict:
    data, rl = VARIANTS[name]
    sft = work / f"sft-seed{seed}{'-mc' if data else ''}"
    run(sft, f"seed={seed}", "pipeline=[data,sft,export]", *data)
    s = run(work / f"{name}-seed{seed}", f"seed={seed}", "pipeline=[data,rl,export,eval]", "model.source=hf",
            f"model.path={sft / '02-export' / 'hf'}", *data, *rl)
    after = s["heldout_after_stage"]
    steps = [json.loads(line) for line in (work / f"{name}-seed{seed}" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["phase"] == "rl" and r["step"] > 0]
    return {"seed": seed, "variant": name, "heldout_all": after[list(after)[-1]]["all"],
            "after_stage1_all": after[list(after)[0]]["all"], "kept_median": s["kept_fraction_median"],
            "aepo_masking_frac": mean_of(steps, "aepo/masking"), "aepo_kept_frac": mean_of(steps, "aepo/kept_frac"),
            "wall_s": s["wall_seconds"]}


def mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return round(statistics.mean(values), 3) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "l15")
    a = p.parse_args()
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"--variants: {unknown} not among {', '.join(VARIANTS)}")
    if not all(s.strip().isdigit() for s in a.seeds.split(",")):
        p.error(f"--seeds: {a.seeds!r} is not a comma-separated list of integers (e.g. 1,2,3)")
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = [one(a.work, seed, name) for seed in seeds for name in names]
    out = REPO / "benchmarks" / "out" / "bench_l15_options.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"\n| variant | {' | '.join(f'seed {s}' for s in seeds)} | mean |\n|---|{'---|' * (len(seeds) + 1)}")
    for name in names:
        acc = [r["heldout_all"] for r in rows if r["variant"] == name]
        print(f"| {name} | {' | '.join(f'{x:.3f}' for x in acc)} | {statistics.mean(acc):.3f} |")
    for r in rows:
        if r["aepo_masking_frac"] is not None:
            print(f"aepo seed {r['seed']}: masking in {r['aepo_masking_frac']:.0%} of the steps, "
                  f"kept {r['aepo_kept_frac']:.0%} of the samples on average")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
