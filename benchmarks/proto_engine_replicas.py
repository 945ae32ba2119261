"""Prototype (issue 23, distributed rollouts): vLLM engine replicas inside the trainer's torchrun ranks.

    flock /tmp/nql-heavy.lock timeout 900 .venv/bin/torchrun --nproc-per-node 2 \
        benchmarks/proto_engine_replicas.py --engine-tp 1 --trainer-tp 1 --out /tmp/i23

W ranks, rollout tensor parallel T: R = W / T replicas. Every rank: megatron `init_parallel` (gloo),
a Megatron policy from a tiny HF Qwen2, then its share of one vLLM engine built with
`distributed_executor_backend="external_launcher"` (T=1: each rank is a replica; T=2 on 2 ranks: one
replica over both). Prompts are dealt to replicas in contiguous blocks (a replica's prompt i is
global prompt start+i, seeded with seed+start+i, so samples do not depend on the layout), gathered
to every rank over the world group, then the policy takes one SFT step and every rank refits its
engine from its own trainer shards (`state_dict_for_refit` gathers over megatron's TP group),
and each replica scores a probe batch against the trainer's log-probs. Rank 0 prints
"REPLICAS <json>" and writes OUT/report-w{W}-e{T}-t{M}-dp{world|1}.json (samples included, to compare layouts).
Not a test and not library code: research for docs/design/distributed-rollouts.md; nothing here is imported elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

PROMPTS = [[5, 17, 99, 3, 250, 41], [7, 7, 300, 12], [1, 2, 3, 4, 5, 6, 7, 8], [400, 31, 9], [88, 21, 5, 5, 60]]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def group_ranks(group) -> list[int]:  # noqa: ANN001
    return dist.get_process_group_ranks(group)


def build_policy(model_dir: Path, trainer_tp: int):  # noqa: ANN201
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig
    from nemo_qwenlong.loops.backend import hf_tensors

    par = ParallelismConfig(tensor_parallel=trainer_tp, transformer_impl="local", distributed_optimizer=False,
                            recompute="none", dist_backend="gloo")
    hf_config = json.loads((model_dir / "config.json").read_text())
    policy = MegatronPolicy(hf_config, par, OptimConfig(lr=1e-2, weight_decay=0.0, grad_clip=1.0), dtype="float32")
    policy.load_hf_state_dict(dict(hf_tensors(model_dir)))
    return policy


def build_replica(model_dir: Path, engine_tp: int, vllm_dp: str):  # noqa: ANN201
    """A VLLMGenerator whose LLM is this rank's share of a replica (external_launcher, CPU).
    vllm_dp="world": data_parallel_size=W/T (vLLM's DP: replicas step in lockstep, one all_reduce per
    engine step, idle replicas run dummy batches); "1": data_parallel_size=1, the replicas are vLLM's
    leading "ExternalDP" dimension of its rank layout (independent engines, as verl uses them)."""
    from vllm import LLM

    from nemo_qwenlong.backends.vllm.engine import REFIT_EXTENSION, Residency, VLLMGenerator
    from nemo_qwenlong.backends.vllm.model_runner import select_model_runner

    select_model_runner(os.environ)  # our constructor's runner choice (V1), before LLM(...)
    world = dist.get_world_size()
    gen = VLLMGenerator.__new__(VLLMGenerator)  # its generate/score/load_weights, our constructor
    gen.llm = LLM(model=str(model_dir), dtype="float32", max_model_len=256, seed=0, enforce_eager=True,
                  enable_prefix_caching=True, enable_chunked_prefill=False, logprobs_mode="processed_logprobs",
                  tensor_parallel_size=engine_tp, data_parallel_size=world // engine_tp if vllm_dp == "world" else 1,
                  distributed_executor_backend="external_launcher", worker_extension_cls=REFIT_EXTENSION)
    gen.worker_processes, gen.sleep_mode, gen.residency, gen._next_id = False, False, Residency(), 0
    return gen


def vllm_groups() -> dict:
    from vllm.distributed import parallel_state as vps

    return {"vllm_world": vps.get_world_group().ranks, "vllm_tp": vps.get_tp_group().ranks,
            "vllm_dp": vps.get_dp_group().ranks, "vllm_pp": vps.get_pp_group().ranks}


def megatron_groups() -> dict:
    from megatron.core import parallel_state as ps

    return {"megatron_tp": group_ranks(ps.get_tensor_model_parallel_group()),
            "megatron_dp": group_ranks(ps.get_data_parallel_group())}


def deal(n: int, replicas: int, replica: int) -> tuple[int, int]:
    """[start, stop) of a replica's contiguous block of n prompts (the first n % R blocks one longer)."""
    base, extra = divmod(n, replicas)
    start = replica * base + min(replica, extra)
    return start, start + base + (replica < extra)


def generate_dealt(engine, prompts: list[list[int]], settings, replica: int, replicas: int) -> dict:  # noqa: ANN001
    """This replica's block with global-index seeds; every rank calls generate together."""
    start, stop = deal(len(prompts), replicas, replica)
    mine = dataclasses.replace(settings, seed=settings.seed + start)
    t = time.perf_counter()
    samples = engine.generate(prompts[start:stop], mine)
    return {"start": start, "samples": [[list(s.token_ids) for s in g] for g in samples],
            "logprobs": [[list(s.logprobs) for s in g] for g in samples], "seconds": time.perf_counter() - t}


def gather_samples(part: dict, n: int) -> tuple[list, bool]:
    """Every rank's block to every rank (all_gather_object over the world); blocks of the same
    replica (its TP ranks) must agree. Returns samples in global prompt order and the agreement."""
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    out: list = [None] * n
    agree = True
    for p in parts:
        for i, g in enumerate(p["samples"]):
            j = p["start"] + i
            agree &= out[j] is None or out[j] == g
            out[j] = g
    return out, agree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine-tp", type=int, required=True)
    ap.add_argument("--trainer-tp", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--vllm-dp", choices=("world", "1"), default="world")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    report: dict = {"engine_tp": args.engine_tp, "trainer_tp": args.trainer_tp, "vllm_dp": args.vllm_dp}
    part, engine = setup_and_run(args)
    report |= part
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, report)
    if dist.get_rank() == 0:
        summary = {"ranks": parts}
        path = args.out / f"report-w{dist.get_world_size()}-e{args.engine_tp}-t{args.trainer_tp}-dp{args.vllm_dp}.json"
        path.write_text(json.dumps(summary, indent=1))
        slim = [{k: v for k, v in p.items() if k not in ("samples", "samples_after")} for p in parts]
        print("REPLICAS " + json.dumps(slim), flush=True)
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel

    # vLLM's engine shutdown (explicit, or its finalizer at exit) runs cleanup_dist_env_and_memory,
    # which destroys the torch.distributed default group too: stop it first, then megatron's groups.
    engine.shutdown()
    destroy_parallel()


def setup_and_run(args: argparse.Namespace) -> tuple[dict, object]:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.config.training import TinyArch

    init_parallel(tensor_parallel=args.trainer_tp, backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model_dir = args.out / "model"
    if rank == 0 and not (model_dir / "config.json").is_file():
        build_tiny_qwen2(model_dir, TinyArch(), seed=1)
    dist.barrier()
    r: dict = {"rank": rank} | megatron_groups()
    policy = build_policy(model_dir, args.trainer_tp)
    seed_before = torch.initial_seed()
    rss0, t0 = rss_mb(), time.perf_counter()
    engine = build_replica(model_dir, args.engine_tp, args.vllm_dp)
    r |= {"engine_build_s": time.perf_counter() - t0, "engine_rss_mb": rss_mb() - rss0,
          "torch_initial_seed_before_after": [seed_before, torch.initial_seed()]} | vllm_groups()
    r |= {"megatron_groups_after_engine": megatron_groups()}
    if args.vllm_dp == "world":
        pc = engine.llm.llm_engine.vllm_config.parallel_config
        replica, replicas = pc.data_parallel_rank, pc.data_parallel_size
    else:  # ExternalDP: replica = rank // T (vLLM's TP groups are consecutive ranks)
        replica, replicas = rank // args.engine_tp, world // args.engine_tp
    r |= {"replica": replica, "replicas": replicas, "world": world}
    r |= run_checks(engine, policy, args, replica, replicas)
    return r, engine


def run_checks(engine, policy, args: argparse.Namespace, replica: int, replicas: int) -> dict:  # noqa: ANN001
    from megatron.core import parallel_state as ps

    from nemo_qwenlong.algorithms.batch import TokenRows
    from nemo_qwenlong.rollout.generator import SamplingSettings
    from nemo_qwenlong.rollout.refit import refit_and_check

    prompts = PROMPTS[: args.prompts]
    r: dict = {}
    t = torch.ones(1)
    dist.all_reduce(t, group=ps.get_tensor_model_parallel_group())  # megatron groups still usable
    r["megatron_tp_allreduce_after_engine"] = float(t)
    greedy = SamplingSettings(n=1, temperature=0.0, max_tokens=8, seed=0)
    sampled = SamplingSettings(n=3, temperature=0.8, max_tokens=8, seed=123)
    part = generate_dealt(engine, prompts, greedy, replica, replicas)
    r["samples"], r["tp_ranks_agree_greedy"] = gather_samples(part, len(prompts))
    part = generate_dealt(engine, prompts, sampled, replica, replicas)
    r["sampled"], r["tp_ranks_agree_sampled"] = gather_samples(part, len(prompts))
    r["my_block"], r["generate_s"] = [part["start"], len(part["samples"])], part["seconds"]
    probe = TokenRows.from_lists(prompts, [g[0] or [1] for g in r["samples"]])
    r["sft"] = policy.sft_step(probe)["grad_norm"]  # weights change: the refit must carry them
    metrics = refit_and_check(policy, engine, probe, bucket_bytes=1 << 16, threshold=None)
    r["refit"] = {k: metrics[k] for k in ("logprob_abs_diff_mean", "logprob_abs_diff_max", "refit_seconds",
                                          "refit_buckets")}
    part = generate_dealt(engine, prompts, greedy, replica, replicas)
    r["samples_after"], r["tp_ranks_agree_after"] = gather_samples(part, len(prompts))
    r["greedy_changed_by_refit"] = r["samples_after"] != r["samples"]
    part = generate_dealt(engine, prompts[:1], greedy, replica, replicas)  # fewer prompts than replicas
    r["one_prompt_over_replicas"] = [part["start"], len(part["samples"])]
    r["peak_rss_mb"] = rss_mb()
    return r


if __name__ == "__main__":
    main()
