"""The GPU kit's steps: everything that needs neither Transformer Engine nor vLLM, on the project's own
code (MegatronPolicy with the local spec and SDPA attention, the fused log-probs, the transformers
engine, `nemo-qwenlong run`). Each step is one function `(device, size) -> dict of figures`; `run_kit.py`
runs each in its own process with a timeout. Sizes: SIZES["gpu"] for the lent H100/H200 (bf16),
SIZES["ci"] for the CPU test (float32, seconds).

    python benchmarks/gpu_kit/steps.py STEP [--device cuda|cpu] [--size gpu|ci] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
for _p in (str(BENCH), str(REPO)):  # bench_train_step / bench_logprobs / process_memory; nemo_qwenlong from the tree
    if _p not in sys.path:
        sys.path.insert(0, _p)

# Qwen2-0.5B width (14 heads / 2 KV, head dim 64) with few layers for parity and layouts; Qwen2-1.5B width
# for the refit; Qwen2-7B width for the train step (bench_train_step's preset); 32B width for log-probs.
SMALL_GPU = dict(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=4,
                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32_768)
REFIT_GPU = dict(vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=8,
                 num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32_768)
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096)
SIZES = {
    "gpu": {
        "parity": dict(arch=SMALL_GPU, rows=4, prompt=1024, response=256, tolerance_mean=0.02),
        "layouts": dict(arch=SMALL_GPU, rows=8, seq=4096, tolerance_max=0.1),
        "train_step": dict(preset="7b-width", layers=4, seq=[16384, 32768], rows=1, steps=3),
        "logprobs": dict(tokens=61_440, vocab=152_064 // 8, hidden=5120, chunk=4096, goal_mb=2048),
        "refit": dict(arch=REFIT_GPU, bucket_mb=512, rows=2, prompt=512, response=128, tolerance_mean=0.02),
        "e2e": dict(recipe="conf/tiny-gpu.yaml", timeout=130),
    },
    "ci": {
        "parity": dict(arch=TINY, rows=2, prompt=12, response=6, tolerance_mean=1e-4),
        "layouts": dict(arch=TINY, rows=4, seq=32, tolerance_max=1e-4),
        "train_step": dict(preset="cpu-small", layers=1, seq=[64], rows=1, steps=1),
        "logprobs": dict(tokens=256, vocab=512, hidden=32, chunk=64, goal_mb=2048),
        "refit": dict(arch=TINY, bucket_mb=1, rows=2, prompt=12, response=6, tolerance_mean=1e-4),
        "e2e": dict(recipe="conf/tiny-cpu.yaml", timeout=300),
    },
}
# `run`, short: the data stage, 2 SFT steps, 2+2 RL steps over both curriculum stages, export, eval.
E2E_OVERRIDES = ("curriculum.stages.0.steps=2", "curriculum.stages.1.steps=2", "checkpoint.save_every_steps=2",
                 "data.synthetic.train_per_stage=64", "data.synthetic.heldout_per_stage=8",
                 "data.synthetic.sft_items=64", "logging.val_every_steps=2", "sft.max_steps=2",
                 "sft.val_every_steps=2", "rl.dynamic_sampling.enable=false", "rl.gen_batch_size=4",
                 "rl.train_batch_size=2", "rl.mini_batch_size=2", "rl.group_size=4", "rollout.max_new_tokens=12",
                 "curriculum.stages.0.max_output_tokens=12", "curriculum.stages.1.max_output_tokens=12",
                 "rl.overlong.buffer=8", "rollout.backend=hf")


def dtype_for(device: str) -> str:
    """bf16 on the GPU (what the recipes train in); float32 on CPU, where the CI check runs."""
    return "bfloat16" if device == "cuda" else "float32"


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def ensure_parallel() -> None:
    """TP=1 process groups (NCCL on CUDA, gloo on CPU), once per process."""
    import torch.distributed as dist

    from nemo_qwenlong.backends.megatron.parallel import init_parallel

    if not dist.is_initialized():
        init_parallel(tensor_parallel=1)


def random_hf(arch: dict, seed: int, device: str):
    """A random transformers Qwen2 (float32, built on `device`: fast at 1B+) with non-trivial norms and biases."""
    import torch
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.config.training import TinyArch

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(tiny_qwen2_config(TinyArch(**arch), arch["vocab_size"], eos_token_id=0)).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def engine_for(hf_model, folder: Path, device: str):
    """The transformers rollout engine (rollout.backend: hf) over `hf_model` saved to `folder` in the run's
    dtype (the engine would round to it anyway; half the bytes to write). Casts `hf_model` in place."""
    import torch

    from nemo_qwenlong.backends.hf.generator import HFGenerator

    hf_model.to(getattr(torch, dtype_for(device))).save_pretrained(folder)
    return HFGenerator(folder, dtype=dtype_for(device), device=device)


def policy_for(hf_config: dict, device: str, layout: str = "padded", micro_batch_tokens: int = 1 << 20):
    """MegatronPolicy: local spec, SDPA core attention, TP=1, LocalAdamW, the run's dtype."""
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    ensure_parallel()
    par = ParallelismConfig(transformer_impl="local", local_attention="sdpa", distributed_optimizer=False,
                            dist_backend="nccl" if device == "cuda" else "gloo", sequence_layout=layout)
    policy = MegatronPolicy(hf_config, par, OptimConfig(lr=1e-6, weight_decay=0.0), dtype=dtype_for(device),
                            micro_batch_tokens=micro_batch_tokens, logprob_chunk_tokens=4096)
    if policy.device.type != device:
        raise RuntimeError(f"--device {device} but the policy sits on {policy.device} (CUDA available: "
                           f"{policy.device.type == 'cuda'})")
    return policy


def random_rows(rows: int, prompt: int, response: int, vocab: int, seed: int = 3):
    """TokenRows of random tokens: `rows` prompts of `prompt` tokens, responses of `response`."""
    import torch

    from nemo_qwenlong.algorithms.batch import TokenRows

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (rows, prompt + response), generator=g).tolist()
    return TokenRows.from_lists([r[:prompt] for r in ids], [r[prompt:] for r in ids])


def engine_logprobs(engine, rows):
    """[N, R] the engine's raw log-probs of each row's response (`Generator.score`)."""
    import torch

    prompts, responses = rows.to_lists()
    out = torch.zeros(rows.response_ids.shape, dtype=torch.float32)
    for i, scores in enumerate(engine.score(prompts, responses)):
        out[i, : len(scores)] = torch.tensor(scores)
    return out


def step_parity(device: str, size: dict) -> dict:
    """The local-spec policy (SDPA attention, the run's dtype) vs transformers on the same weights:
    response-token log-probs at temperature 1 (rollout.refit.agreement's figures)."""
    from nemo_qwenlong.rollout.refit import agreement

    hf = random_hf(size["arch"], seed=7, device=device)
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(hf, Path(tmp), device)
        policy = policy_for(engine.model.config.to_dict(), device)
        policy.load_hf_state_dict(state)
        rows = random_rows(size["rows"], size["prompt"], size["response"], size["arch"]["vocab_size"])
        sync(device)
        t0 = time.perf_counter()
        trainer = policy.compute_logprobs(rows, temperature=1.0)
        sync(device)
        seconds = time.perf_counter() - t0
        m = agreement(engine_logprobs(engine, rows), trainer, rows.response_mask)
    return m | {"dtype": dtype_for(device), "tokens": size["rows"] * (size["prompt"] + size["response"]),
                "trainer_logprob_s": round(seconds, 3), "tolerance_mean": size["tolerance_mean"],
                "ok": m["logprob_abs_diff_mean"] <= size["tolerance_mean"]}


def group_batch(rows: int, seq: int, vocab: int):
    """bench_train_step's GRPO-group rows: one prompt (3/4 of seq), responses of seq/8..seq/4."""
    from bench_train_step import make_batch

    batch = make_batch(rows, seq, vocab, "group")
    return batch.replace(old_logprobs=None)


def step_layouts(device: str, size: dict) -> dict:
    """SDPA core attention in the padded, packed (THD) and shared_prompt layouts on the same rows:
    response log-probs and the RL loss of each vs padded, and each layout's forward time."""
    import torch

    from nemo_qwenlong.config.training import RLConfig

    hf = random_hf(size["arch"], seed=11, device=device)
    state, cfg = hf.state_dict(), hf.config.to_dict()
    batch, rl = group_batch(size["rows"], size["seq"], size["arch"]["vocab_size"]), RLConfig()
    out, ref = {}, None
    for layout in ("padded", "packed", "shared_prompt"):
        policy = policy_for(cfg, device, layout=layout)
        policy.load_hf_state_dict({k: v.detach().clone() for k, v in state.items()})
        sync(device)
        t0 = time.perf_counter()
        lp = policy.compute_logprobs(batch, temperature=1.0)
        sync(device)
        seconds = time.perf_counter() - t0
        batch_rl = batch.replace(old_logprobs=lp)
        loss = sum(m["loss"] for m in policy.accumulate_gradients(batch_rl, policy.rl_loss(rl),
                                                                   policy.rl_count(batch_rl, rl)))
        mask = batch.response_mask
        ref = ref or (lp, loss)
        out[layout] = {"logprob_s": round(seconds, 3), "loss": loss,
                       "logprob_max_diff_vs_padded": float((lp - ref[0])[mask].abs().max()),
                       "loss_diff_vs_padded": abs(loss - ref[1])}
        del policy
        if device == "cuda":
            torch.cuda.empty_cache()
    worst = max(r["logprob_max_diff_vs_padded"] for r in out.values())
    return {"dtype": dtype_for(device), "rows": size["rows"], "seq": size["seq"], "layouts": out,
            "tolerance_max": size["tolerance_max"], "ok": worst <= size["tolerance_max"]}


def time_train_step(device: str, size: dict, seq: int, distributed: bool) -> dict:
    """One sequence length: median seconds of `steps` train steps after a warm-up, tokens/s, MFU, peak."""
    import statistics

    import torch
    from bench_train_step import hf_config, make_batch, train_flops

    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig, RLConfig

    gpu, peak = device == "cuda", float(os.environ.get("PEAK_TFLOPS", "989"))
    cfg = hf_config(size["preset"], size["layers"], seq)
    par = ParallelismConfig(transformer_impl="local", local_attention="sdpa", distributed_optimizer=distributed,
                            dist_backend="nccl" if gpu else "gloo", recompute="none")  # SDPA keeps no [S×S] scores
    policy = MegatronPolicy(cfg, par, OptimConfig(lr=1e-6), dtype=dtype_for(device), micro_batch_tokens=seq,
                            logprob_chunk_tokens=4096)
    batch, rl = make_batch(size["rows"], seq, cfg["vocab_size"]), RLConfig()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(size["steps"] + 1):
        sync(device)
        t0 = time.perf_counter()
        policy.train_step(batch, rl)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    n = sum(p.numel() for k, p in policy.module.named_parameters() if "embedding" not in k and "output_layer" not in k)
    tokens, step = int((batch.prompt_lengths + batch.response_lengths).sum()), statistics.median(times)
    flops = train_flops(tokens, n, cfg["num_hidden_layers"], cfg["hidden_size"], seq)
    return {"seq": seq, "layers": cfg["num_hidden_layers"], "optimizer": type(policy.optimizer).__name__,
            "step_s": round(step, 3), "tokens_per_s_per_gpu": round(tokens / step, 1), "params_non_embedding": n,
            "mfu": round(flops / step / (peak * 1e12), 3) if gpu else None,
            "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if gpu else None}


def step_train_step(device: str, size: dict) -> dict:
    """bench_train_step's RL step (forward, fused log-probs, DAPO loss, backward, AdamW) with the local
    spec and SDPA attention: tokens/s per GPU and MFU (bench_train_step.train_flops over the peak). On
    CUDA with megatron's distributed optimizer (as the recipes), falling back to LocalAdamW if it fails
    (its error is kept: it has never run on a GPU)."""
    import gc

    import torch

    ensure_parallel()
    distributed, results, errors = device == "cuda", [], []
    for seq in size["seq"]:
        try:
            results.append(time_train_step(device, size, seq, distributed))
        except Exception as err:  # noqa: BLE001 - recorded, then measured without it
            if not distributed:
                raise
            errors.append(f"seq {seq}, distributed optimizer: {type(err).__name__}: {err}"[:800])
            distributed = False
            gc.collect()
            torch.cuda.empty_cache()
            results.append(time_train_step(device, size, seq, distributed))
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"preset": size["preset"], "dtype": dtype_for(device), "peak_tflops": float(os.environ.get("PEAK_TFLOPS", "989")),
            "runs": results, "distributed_optimizer_errors": errors,
            "mfu_formula": "tokens·(6·N + 6·L·h·S) / step_s / peak; N = parameters without embedding and output layer"}


def step_logprobs(device: str, size: dict) -> dict:
    """bench_logprobs.run_one: peak memory over the inputs (torch.cuda.max_memory_allocated on CUDA,
    process RSS on CPU) of the chunked and the fused log-probs + entropy, forward and backward."""
    from bench_logprobs import run_one

    args = (size["tokens"], size["vocab"], size["chunk"], size["hidden"], device)
    runs = {method: run_one(method, *args) for method in ("fused", "chunked")}
    fused = runs["fused"]["peak_over_inputs_mb"]
    return {"runs": runs, "fused_peak_mb": fused, "goal_mb": size["goal_mb"], "ok": fused <= size["goal_mb"]}


def step_refit(device: str, size: dict) -> dict:
    """The TP=1 refit bucket path (rollout.refit.refit_and_check) from a policy into the transformers
    engine: time, buckets, MB, peak extra memory, then engine vs trainer log-probs on a probe."""
    from nemo_qwenlong.rollout.refit import agreement, refit_and_check

    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(random_hf(size["arch"], seed=1, device=device), Path(tmp), device)
        policy = policy_for(engine.model.config.to_dict(), device)  # megatron's own random init: not the engine's
        rows = random_rows(size["rows"], size["prompt"], size["response"], size["arch"]["vocab_size"])
        before = agreement(engine_logprobs(engine, rows), policy.compute_logprobs(rows, temperature=1.0),
                           rows.response_mask)["logprob_abs_diff_mean"]
        m = refit_and_check(policy, engine, rows, bucket_bytes=size["bucket_mb"] * 2**20, threshold=None)
    return m | {"dtype": dtype_for(device), "bucket_mb": size["bucket_mb"], "logprob_abs_diff_mean_before": before,
                "tolerance_mean": size["tolerance_mean"],
                "ok": m["logprob_abs_diff_mean"] <= size["tolerance_mean"]}


def e2e_command(recipe: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "nemo_qwenlong.cli.main", "run", recipe, "--output", str(out), "--no-progress",
            *E2E_OVERRIDES]


def e2e_figures(out: Path) -> dict:
    """What a finished run left: steps, wall time, the last RL step's engine/trainer agreement, the
    checkpoints and the export."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r.get("phase") == "rl"]
    last = rl[-1] if rl else {}
    return {"steps": summary.get("steps"), "wall_seconds": summary.get("wall_seconds"),
            "heldout_accuracy": summary.get("heldout_accuracy"),
            "logprob_abs_diff_mean_last": last.get("logprob_abs_diff_mean"),
            "checkpoints": sorted(str(p.relative_to(out)) for p in out.glob("*/checkpoints/iter_*")),
            "export": (out / "04-export" / "hf" / "config.json").is_file(),
            "stages": sorted(p.parent.name for p in out.glob("*/stage.json"))}


def step_e2e(device: str, size: dict) -> dict:
    """`nemo-qwenlong run` of the GPU variant of the tiny recipe, short (E2E_OVERRIDES): its own CUDA
    path (hardware check, device placement, checkpoints, export) once. If the recipe's distributed
    optimizer fails (never run on a GPU), once more with LocalAdamW, so the rest of the path still runs."""
    deadline, attempts = time.perf_counter() + size["timeout"], []
    for extra in ((), ("parallelism.distributed_optimizer=false",)):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            t0 = time.perf_counter()
            done = subprocess.run([*e2e_command(size["recipe"], out), *extra], capture_output=True, text=True,
                                  cwd=REPO, timeout=max(deadline - t0, 1))
            seconds = round(time.perf_counter() - t0, 1)
            if done.returncode == 0:
                return {"recipe": size["recipe"], "overrides": list(extra), "seconds": seconds,
                        "failed_attempts": attempts, "stdout_tail": done.stdout[-600:]} | e2e_figures(out)
            attempts.append({"overrides": list(extra), "seconds": seconds,
                             "error": f"run exited {done.returncode}: {done.stderr[-1500:]}"})
    raise RuntimeError(json.dumps(attempts))


STEPS = {"parity": step_parity, "layouts": step_layouts, "train_step": step_train_step, "logprobs": step_logprobs,
         "refit": step_refit, "e2e": step_e2e}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "all-but-e2e"],
                        help="one step, or every step but e2e in this one process (the CPU test)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=list(SIZES), default="gpu")
    parser.add_argument("--json", type=Path, help="write the figures here (else print them)")
    args = parser.parse_args(argv)
    names = [n for n in STEPS if n != "e2e"] if args.step == "all-but-e2e" else [args.step]
    figures = {n: STEPS[n](args.device, SIZES[args.size][n]) for n in names}
    figures = figures[args.step] if args.step in STEPS else figures
    text = json.dumps(figures, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
