"""One fixed RL-step workload, to put our step time beside other trainers' (TRL's GRPOTrainer was
measured on the same machine: ../shared/docs/megatron-on-cpu.md §7).

Random Qwen2 (hidden 128, intermediate 256, 2 layers, 4 heads / 2 KV heads, vocab 512, untied,
fp32); 8 prompts × 8 samples per step; prompts of 512 and of 2,048 random tokens; 64 new tokens
(EOS ignored), temperature 0.7; AdamW lr 1e-4 constant; DAPO loss, no KL, one update per step (so
no old-log-prob pass), micro-batches of 8 rows; 10 steps. The reward is a stand-in (share of even token ids) so advantages
are non-zero; the pieces are `run`'s own: the in-process vLLM engine, the Megatron policy's
`train_step`, refit with the agreement check. Prints the median step seconds over steps 2-10 with
generation / train / refit parts; writes benchmarks/out/bench_rl_step.json.

`--layout` picks the trainer's micro-batch layout(s) (`parallelism.sequence_layout`; default
shared_prompt: each group's prompt runs once in training, algorithms/shared_prompt.py).
`--profile` runs the last step under cProfile and prints where its seconds go (top functions by
cumulative and by own time; benchmarks/out/bench_rl_step_<tokens>.prof). `--compare-trl` then runs
TRL's GRPOTrainer on the identical workload (benchmarks/trl_grpo_step.py) in its own environment,
`.venv-trl` (or --trl-python), which this script never builds; it is layered on the project's
environment and adds only trl and accelerate (~1 MB):

    python3.11 -m venv .venv-trl && .venv/bin/python -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" > .venv-trl/lib/python3.11/site-packages/nemo-qwenlong-env.pth && .venv-trl/bin/pip install --no-deps trl==1.16.0 accelerate==1.15.0

Usage: python benchmarks/bench_rl_step.py [--prompt-tokens 512 2048] [--threads 1|2] [--steps 10] [--profile]
                                          [--layout padded packed shared_prompt]
                                          [--compare-trl [--trl-python .venv-trl/bin/python]]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parents[1]
TRL_BUILD = ("python3.11 -m venv .venv-trl && .venv/bin/python -c \"import os, torch; "
             "print(os.path.dirname(os.path.dirname(torch.__file__)))\" > "
             ".venv-trl/lib/python3.11/site-packages/nemo-qwenlong-env.pth && "
             ".venv-trl/bin/pip install --no-deps trl==1.16.0 accelerate==1.15.0")
OVERRIDES = ["model.tiny.hidden_size=128", "model.tiny.intermediate_size=256", "model.tiny.num_hidden_layers=2",
             "model.tiny.num_attention_heads=4", "model.tiny.num_key_value_heads=2", "model.tiny.vocab_size=512",
             "model.tiny.tie_word_embeddings=false", "model.tiny.max_position_embeddings=4096",
             "rl.optim.lr=0.0001", "rl.optim.schedule=constant", "rl.optim.weight_decay=0.0", "rl.kl_coef=0",
             "rl.clip_high=0.28", "rl.loss_level=token", "rl.group_size=8",
             "rollout.temperature=0.7", "rollout.max_new_tokens=64", "rollout.logprob_max_abs_diff=null",
             "rl.overlong.buffer=16", "curriculum.stages.0.max_output_tokens=64",
             "curriculum.stages.1.max_output_tokens=64"]
PROMPTS = 8


def even_share(response_ids, mask):  # noqa: ANN001, ANN201 - torch tensors; torch is imported late
    """Stand-in reward per row: the share of valid response tokens with an even id (0 for empty rows)."""
    even = ((response_ids % 2 == 0) & mask).sum(1).float()
    return even / mask.sum(1).clamp(min=1).float()


def one_length(prompt_tokens: int, steps: int, work: Path, profile: bool = False, layout: str = "padded") -> dict:
    import torch

    from nemo_qwenlong.algorithms import compute_advantages
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
    from nemo_qwenlong.config import load_config
    from nemo_qwenlong.loops.rl import probe
    from nemo_qwenlong.rollout.generator import SamplingSettings, to_rollout_batch
    from nemo_qwenlong.rollout.refit import refit_and_check

    rows_per_micro = 8 * (prompt_tokens + 64)  # micro-batches of 8 rows, as in the TRL comparison
    cfg = load_config(str(Path(__file__).resolve().parents[1] / "conf" / "tiny-cpu.yaml"),
                      [*OVERRIDES, f"rl.micro_batch_tokens={rows_per_micro}", f"parallelism.sequence_layout={layout}"])
    hf, meg = work / f"hf-{prompt_tokens}", work / f"meg-{prompt_tokens}"
    build_tiny_qwen2(hf, cfg.model.tiny, seed=0)
    hf_to_megatron_checkpoint(hf, meg)
    manifest = ckpt.read_manifest(meg, ckpt.latest_step(meg))
    engine = VLLMGenerator.from_rollout_config(hf, cfg.rollout, dtype="float32", max_model_len=4096, seed=0)
    policy = MegatronPolicy.from_run_config(cfg, manifest["hf_config"], total_steps=steps,
                                            padded_vocab_size=manifest["padded_vocab_size"])
    ckpt.load_checkpoint(policy, meg, load_optimizer=False)
    g = torch.Generator().manual_seed(prompt_tokens)
    prompts = [torch.randint(3, 512, (prompt_tokens,), generator=g).tolist() for _ in range(PROMPTS)]
    records = []
    for step in range(steps):
        profiler = cProfile.Profile() if profile and step == steps - 1 else None
        if profiler:
            profiler.enable()
        t0 = time.perf_counter()
        policy.prepare_for_generation()
        settings = SamplingSettings(n=8, temperature=0.7, top_p=1.0, max_tokens=64, seed=step, ignore_eos=True)
        samples = engine.generate(prompts, settings)
        t1 = time.perf_counter()
        batch = to_rollout_batch(prompts, samples, [str(i) for i in range(PROMPTS)])
        rewards = even_share(batch.response_ids, batch.response_mask)
        batch = batch.replace(rewards=rewards, advantages=compute_advantages("grpo", rewards, 8))
        policy.prepare_for_training()
        train = policy.train_step(batch, cfg.rl)  # old_logprobs None: one update, ratio 1
        t2 = time.perf_counter()
        policy.prepare_for_generation()
        refit_and_check(policy, engine, probe(batch, 4, 8), bucket_bytes=64 * 2**20, threshold=None)
        t3 = time.perf_counter()
        if profiler:
            profiler.disable()
            print_profile(profiler, OUT / f"bench_rl_step_{prompt_tokens}.prof")
        records.append({"step_s": t3 - t0, "generate_s": t1 - t0, "train_s": t2 - t1, "refit_s": t3 - t2,
                        "loss": train["loss"]})
        print(f"  prompt {prompt_tokens}: step {step + 1}/{steps} {t3 - t0:.2f} s "
              f"(generate {t1 - t0:.2f}, train {t2 - t1:.2f}, refit+check {t3 - t2:.2f})", flush=True)
    timed = records[1:]
    return {"prompt_tokens": prompt_tokens, "layout": layout, **{k: statistics.median(r[k] for r in timed)
                                               for k in ("step_s", "generate_s", "train_s", "refit_s")}}


def print_profile(profiler: cProfile.Profile, path: Path) -> None:
    OUT.mkdir(exist_ok=True)
    profiler.dump_stats(str(path))
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(25)
        print(f"--- profile of the last step, by {key} ({path.name}) ---")
        print("\n".join(ln for ln in buf.getvalue().splitlines() if ln.strip())[-4000:])


def compare_trl(trl_python: Path, prompt_tokens: list[int], steps: int, threads: int,
                work: Path) -> list[dict] | None:
    """TRL's GRPOTrainer on the same workload (the HF folders one_length built in `work`: same weights) in its
    own environment; None (and says why) without one."""
    if not trl_python.exists():
        print(f"\n--compare-trl: the TRL environment is missing ({trl_python} not found); nothing was run.\n"
              f"Build it (adds ~1 MB: trl and accelerate over this project's environment), from the repo root:\n"
              f"  {TRL_BUILD}")
        return None
    out = []
    for n in prompt_tokens:
        cmd = [str(trl_python), str(Path(__file__).with_name("trl_grpo_step.py")), "--prompt-tokens", str(n),
               "--steps", str(steps), "--threads", str(threads), "--model-dir", str(work / f"hf-{n}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("TRL ")]
        if proc.returncode or not lines:
            print(f"TRL run at {n} tokens failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            continue
        out.append(json.loads(lines[-1].removeprefix("TRL ")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--threads", type=int, choices=(1, 2), default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile the last step of each length")
    parser.add_argument("--layout", nargs="+", default=["shared_prompt"],
                        choices=["padded", "packed", "shared_prompt"],
                        help="parallelism.sequence_layout(s) to time (the first is the one TRL is compared with)")
    parser.add_argument("--compare-trl", action="store_true", help="also run TRL's GRPOTrainer (own environment)")
    parser.add_argument("--trl-python", type=Path, default=REPO / ".venv-trl" / "bin" / "python")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.logs import quiet_backends

    quiet_backends()
    init_parallel(tensor_parallel=1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in args.layout:
            for n in args.prompt_tokens:
                work = Path(tmp) / layout  # the first layout's HF folders serve TRL
                work.mkdir(exist_ok=True)
                results.append(one_length(n, args.steps, work, profile=args.profile, layout=layout))
        print(f"\nmedian over steps 2-{args.steps}, {args.threads} thread(s), "
              f"{platform.processor() or platform.machine()}:")
        for r in results:
            print(f"  {r['layout']:>13}, prompt {r['prompt_tokens']:>5}: step {r['step_s']:.2f} s = generate {r['generate_s']:.2f} + "
                  f"train {r['train_s']:.2f} + refit/check {r['refit_s']:.2f}")
        trl = (compare_trl(args.trl_python, args.prompt_tokens, args.steps, args.threads, Path(tmp) / args.layout[0])
               if args.compare_trl else None)
    for r in trl or []:
        ours = next(x for x in results if x["prompt_tokens"] == r["prompt_tokens"] and x["layout"] == args.layout[0])
        print(f"  TRL {r['trl_version']} GRPOTrainer, prompt {r['prompt_tokens']:>5}: step {r['step_s']:.2f} s "
              f"= generate {r['generate_s']:.2f} + rest {r['train_s']:.2f} ({r['tokens_per_sample']:.0f} tokens "
              f"per sample; ours {ours['step_s']:.2f} s: TRL/ours {r['step_s'] / ours['step_s']:.2f})")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_rl_step.json").write_text(json.dumps({"threads": args.threads, "results": results, "trl": trl},
                                                       indent=2))


if __name__ == "__main__":
    main()
