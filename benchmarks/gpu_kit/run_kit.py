"""Run every GPU kit step (steps.py) in its own process under a timeout, go on past a failed one (its
error lands in the JSON), write one JSON of figures and print a short table.

    python benchmarks/gpu_kit/run_kit.py [--device cuda] [--size gpu] [--out DIR] [--only STEP ...] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIT = Path(__file__).resolve().parent
RESULT_NAME = "gpu_kit.json"
# step: (seconds it may take on the lent GPU, what it measures); the sum stays under 8 minutes with the install
PLAN = {
    "parity": (40, "local-spec policy (SDPA, bf16) vs transformers: response log-prob |diff| mean/max"),
    "layouts": (50, "SDPA attention in padded / packed / shared_prompt: log-prob and loss diff vs padded, time"),
    "train_step": (110, "7B-width train step, 4 layers, 16K and 32K tokens: tokens/s per GPU, MFU, peak GB"),
    "logprobs": (40, "fused vs chunked log-probs at 60K tokens, vocab 152,064/8, hidden 5120: peak MB"),
    "refit": (60, "TP=1 refit buckets into transformers (1.5B width, 8 layers): s, MB, |diff| after"),
    "e2e": (140, "nemo-qwenlong run conf/tiny-gpu.yaml, short: steps, wall s, agreement, checkpoints, export"),
}
FIGURES = {  # what each step writes under steps.STEP in gpu_kit.json
    "parity": "logprob_abs_diff_mean, logprob_abs_diff_max, prob_ratio_mean, trainer_logprob_s, ok",
    "layouts": "layouts.{padded,packed,shared_prompt}.{logprob_max_diff_vs_padded, loss_diff_vs_padded, logprob_s}, ok",
    "train_step": "runs[seq 16384, 32768].{step_s, tokens_per_s_per_gpu, mfu, peak_gpu_gb, optimizer}, "
                  "distributed_optimizer_errors, mfu_formula",
    "logprobs": "runs.{fused,chunked}.{peak_over_inputs_mb, seconds}, fused_peak_mb, ok (<= 2048 MB)",
    "refit": "refit_seconds, refit_buckets, refit_mb, refit_peak_extra_mb, logprob_abs_diff_mean (_before), ok",
    "e2e": "steps, wall_seconds, heldout_accuracy, logprob_abs_diff_mean_last, checkpoints, export, stages, "
           "overrides, failed_attempts",
}
TABLE_KEYS = {  # the figures the printed table shows per step
    "parity": ("logprob_abs_diff_mean", "logprob_abs_diff_max", "ok"),
    "layouts": ("ok",),
    "train_step": (),
    "logprobs": ("fused_peak_mb", "ok"),
    "refit": ("refit_seconds", "refit_buckets", "refit_mb", "logprob_abs_diff_mean", "ok"),
    "e2e": ("steps", "wall_seconds", "logprob_abs_diff_mean_last", "export", "overrides"),
}


def dry_run(steps: list[str], device: str, size: str, out: Path) -> None:
    print(f"gpu kit plan (--device {device} --size {size}); writes {out / RESULT_NAME}:")
    for name in steps:
        limit, what = PLAN[name]
        print(f"  {name:<11} timeout {limit:>3} s  {what}")
        print(f"  {'':<11} figures: {FIGURES[name]}")
    print(f"  total timeouts {sum(PLAN[s][0] for s in steps)} s")
    print(f"{RESULT_NAME} = {{machine: {{gpu, torch, cuda, python}}, steps: {{STEP: figures + seconds, or error + "
          "seconds}}")


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}


def run_step(name: str, device: str, size: str, timeout: int, scratch: Path) -> dict:
    """One step in a fresh process: its figures, or {error} with the tail of its stderr."""
    path = scratch / f"{name}.json"
    cmd = [sys.executable, str(KIT / "steps.py"), name, "--device", device, "--size", size, "--json", str(path)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "seconds": timeout}
    seconds = round(time.perf_counter() - t0, 1)
    if done.returncode or not path.is_file():
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-1200:]}", "seconds": seconds}
    return json.loads(path.read_text()) | {"seconds": seconds}


def table_lines(results: dict) -> list[str]:
    lines = []
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<11} FAILED ({r['seconds']} s): {r['error'].splitlines()[-1][:150]}")
            continue
        shown = ", ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r.get(k)}"
                          for k in TABLE_KEYS[name])
        if name == "train_step":
            shown = "; ".join(f"seq {x['seq']}: {x['tokens_per_s_per_gpu']:.0f} tok/s, MFU {x['mfu']}, "
                              f"peak {x['peak_gpu_gb']} GB, {x['optimizer']}" for x in r["runs"])
        if name == "layouts":
            shown += "; " + "; ".join(f"{k}: lp diff {v['logprob_max_diff_vs_padded']:.3g}, {v['logprob_s']} s"
                                      for k, v in r["layouts"].items())
        lines.append(f"{name:<11} {r['seconds']:>6} s  {shown}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["gpu", "ci"], default="gpu")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for gpu_kit.json ($OUT on the device)")
    parser.add_argument("--only", nargs="+", choices=list(PLAN), help="run these steps only")
    parser.add_argument("--dry-run", action="store_true", help="print the steps and the figures, run nothing")
    args = parser.parse_args(argv)
    steps = args.only or list(PLAN)
    if args.dry_run:
        dry_run(steps, args.device, args.size, args.out)
        return 0
    report = {"machine": machine(), "steps": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in steps:
            report["steps"][name] = run_step(name, args.device, args.size, PLAN[name][0], Path(scratch))
            (args.out / RESULT_NAME).write_text(json.dumps(report, indent=2, default=str))  # what is done so far
            print(table_lines({name: report["steps"][name]})[0], flush=True)
    print(f"machine: {report['machine']}")
    print(f"wrote {args.out / RESULT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
