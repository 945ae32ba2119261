"""`nemo-qwenlong plan`: a recipe's per-GPU memory on H100 and H200 and where a step's time goes.

`layout_for` and `batch_for` read the numbers that size a run out of a RunConfig; `step_times`,
`render_memory` and `render_times` are plain functions of them (memory: planning.layout, time:
planning.steptime).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nemo_qwenlong.planning.hardware import Assumptions, Gpu
from nemo_qwenlong.planning.layout import Layout, MemoryPlan, memory_plan, replicas_text, smallest_fitting_cp
from nemo_qwenlong.planning.memory import BF16, FP32, GIB, Geometry
from nemo_qwenlong.planning.steptime import Decode, decode_estimate, forward_flops, training_flops

PARAM_BYTES = {"bfloat16": BF16, "float16": BF16, "float32": FP32}


@dataclass(frozen=True)
class Batch:
    """One RL step's shape: prompts generated and trained, samples per prompt, token lengths."""

    gen_prompts: int
    train_prompts: int
    group_size: int
    input_tokens: int
    output_tokens: int
    epochs: int  # passes over the batch (rl.epochs_per_batch)
    optimizer_steps: int  # per batch: epochs × train/mini
    reference_pass: bool
    prefix_caching: bool


def judge_on_trainer_gpus(cfg: Any) -> bool:
    """Whether `launch rl/run/eval` starts the judge on the job's first node, sharing its first
    `cluster.judge.gpus` GPUs (so its memory share counts against those trainer ranks)."""
    j = cfg.cluster.judge
    return j.placement == "trainer_node" and j.launch and cfg.reward.judge_when != "never"


def layout_for(cfg: Any, *, input_tokens: int, output_tokens: int) -> Layout:
    """The Layout of a RunConfig, its rollouts `input_tokens` + `output_tokens` long (a stage's caps)."""
    p, r, c = cfg.parallelism, cfg.rollout, cfg.cluster
    judge = judge_on_trainer_gpus(cfg)
    return Layout(
        world=max(1, c.nodes * c.gpus_per_node), gpus_per_node=c.gpus_per_node, tensor_parallel=p.tensor_parallel,
        pipeline_parallel=p.pipeline_parallel, context_parallel=p.context_parallel, recompute=p.recompute,
        distributed_optimizer=p.distributed_optimizer, param_bytes=PARAM_BYTES[cfg.model.dtype],
        micro_batch_tokens=cfg.rl.micro_batch_tokens, logprob_chunk=cfg.rl.logprob_chunk_tokens,
        full_logits=cfg.rl.logprob_impl == "logits",
        rollout_tp=r.tensor_parallel, gpu_memory_utilization=r.gpu_memory_utilization,
        max_num_batched_tokens=r.max_num_batched_tokens, seq_tokens=input_tokens + output_tokens,
        judge_memory_utilization=c.judge.gpu_memory_utilization if judge else 0.0,
        judge_gpus=c.judge.gpus if judge else 0)


def batch_for(cfg: Any, *, input_tokens: int, output_tokens: int, rounds: int) -> Batch:
    rl = cfg.rl
    return Batch(gen_prompts=rl.gen_batch_size * rounds, train_prompts=rl.train_batch_size, group_size=rl.group_size,
                 input_tokens=input_tokens, output_tokens=output_tokens, epochs=rl.epochs_per_batch,
                 optimizer_steps=rl.epochs_per_batch * (rl.train_batch_size // rl.mini_batch_size),
                 reference_pass=rl.kl_coef > 0, prefix_caching=cfg.rollout.enable_prefix_caching)


@dataclass(frozen=True)
class StepTimes:
    replicas: int  # R = W / T engine replicas generating side by side
    replica_prompts: int  # prompts (whole groups) one replica generates: ⌈prompts / R⌉
    prefill: float  # one replica's prefill of its prompts on its T GPUs
    decode: Decode  # one replica's decode of its groups
    old_logprobs: float
    reference: float
    train: float

    @property
    def total(self) -> float:
        return self.prefill + self.decode.seconds + self.old_logprobs + self.reference + self.train


def step_times(g: Geometry, lay: Layout, b: Batch, gpu: Gpu, m: MemoryPlan, a: Assumptions) -> StepTimes:
    """Seconds per RL step on `lay.world` GPUs of kind `gpu` (prefill and decode added, not overlapped).
    Generation: the step's prompts are dealt to the R replicas group by group, each replica prefills and
    decodes its ⌈prompts / R⌉ on its T GPUs, and the step waits for the fullest one."""
    compute = lay.world * gpu.bf16_flops
    seq = b.input_tokens + b.output_tokens
    replicas = lay.rollout_replicas
    per_replica = math.ceil(b.gen_prompts / replicas)
    prefills = per_replica * (1 if b.prefix_caching else b.group_size)
    replica_compute = lay.rollout_tp * gpu.bf16_flops * a.prefill_mfu
    decode = decode_estimate(
        g, prompts_per_engine=per_replica, group_size=b.group_size,
        input_tokens=b.input_tokens, output_tokens=b.output_tokens, kv_tokens=m.kv_tokens, rollout_tp=lay.rollout_tp,
        prefix_caching=b.prefix_caching, max_num_seqs=a.max_num_seqs, weights_per_gpu=m.engine_weights,
        hbm_bytes_per_s=gpu.hbm_bytes_per_s, bandwidth_share=a.decode_bandwidth, peak_flops=gpu.bf16_flops,
        mfu=a.prefill_mfu)
    sequences = b.train_prompts * b.group_size
    forward = sequences * forward_flops(g, seq) / (compute * a.train_mfu)
    train = b.epochs * sequences * training_flops(g, seq, recompute=lay.recompute) / (compute * a.train_mfu)
    return StepTimes(replicas=replicas, replica_prompts=per_replica,
                     prefill=prefills * forward_flops(g, b.input_tokens) / replica_compute, decode=decode,
                     old_logprobs=forward if b.optimizer_steps > 1 else 0.0,
                     reference=forward if b.reference_pass else 0.0, train=train)


def _row(label: str, values: list[str]) -> str:
    return f"  {label:<62}" + "".join(f"{v:>14}" for v in values)


def _g(x: float) -> str:
    return f"{x / GIB:.1f}"


def _fits(peak: float, gpu: Gpu) -> str:
    return "fits" if peak <= gpu.memory_bytes else "NO"


def render_memory(g: Geometry, lay: Layout, gpus: list[Gpu], plans: list[MemoryPlan]) -> list[str]:
    """The per-GPU memory table (GiB) with a column per GPU."""
    m0 = plans[0]
    shards = lay.data_parallel * lay.context_parallel
    used = {True: " (recipe)", False: ""}

    def col(f) -> list[str]:  # noqa: ANN001 - one column per GPU
        return [_g(f(m)) for m in plans]

    out = [_row("per-GPU memory, GiB", [f"{gpu.name.split()[0]} {_g(gpu.memory_bytes)}" for gpu in gpus]),
           "  trainer (TP×PP×CP×DP = "
           f"{lay.tensor_parallel}×{lay.pipeline_parallel}×{lay.context_parallel}×{lay.data_parallel})",
           _row(f"  weights ({'bf16' if lay.param_bytes == BF16 else 'fp32'})", col(lambda m: m.weights)),
           _row("  gradients (fp32 buffer)", col(lambda m: m.gradients)),
           _row(f"  optimiser, distributed (÷ DP×CP = {shards}){used[lay.distributed_optimizer]}",
                col(lambda m: m.optimizer_unsharded / shards)),
           _row(f"  optimiser, not distributed{used[not lay.distributed_optimizer]}",
                col(lambda m: m.optimizer_unsharded)),
           _row(f"  activations ({lay.train_tokens} tokens/micro-batch, {lay.recompute} recompute)",
                col(lambda m: m.activations)),
           _row(f"  log-prob temporaries, training ({'logits' if lay.full_logits else 'fused'}, chunk "
                f"{lay.logprob_chunk})", col(lambda m: m.logprobs_train)),
           _row("  old-log-prob forward (no grad)", col(lambda m: m.logprob_pass)),
           f"  vLLM replica's share of this GPU ({replicas_text(lay.world, lay.rollout_tp)} replicas of TP="
           f"{lay.rollout_tp}, gpu_memory_utilization {lay.gpu_memory_utilization})",
           _row("  share", col(lambda m: m.engine_share)),
           _row(f"    weights (÷ T = {lay.rollout_tp})", col(lambda m: m.engine_weights)),
           _row(f"    step buffers ({lay.max_num_batched_tokens} batched tokens) + CUDA graphs",
                col(lambda m: m.engine_overhead)),
           _row("    KV cache (its own, per replica GPU)", col(lambda m: m.kv_cache)),
           _row("    KV cache, tokens per replica", [f"{m.kv_tokens / 1000:.0f}K" for m in plans]),
           _row(f"    KV cache, tokens over all {lay.rollout_replicas} replicas",
                [f"{m.kv_tokens * lay.rollout_replicas / 1000:.0f}K" for m in plans]),
           f"  phase peaks (each + {_g(m0.reserve)} GiB reserve)",
           _row("  rollouts: trainer resident + old-log-prob pass + engine", col(lambda m: m.rollout_peak)),
           _row("  training: trainer + engine asleep (level 2)", col(lambda m: m.training_peak)),
           _row("  (training with the engine awake)", col(lambda m: m.training_peak_engine_awake))]
    if lay.distributed_optimizer:
        other = [m.peaks_without_distributed_optimizer(shards) for m in plans]
        out.append(_row("  (without the distributed optimiser: rollouts / training)",
                        [f"{_g(r)} / {_g(t)}" for r, t in other]))
    if lay.judge_gpus:
        out += _judge_rows(lay, plans, col)
    one_seq = [m.kv_tokens >= lay.seq_tokens for m in plans]
    out.append(_row("fits?", [_fits(m.judge_gpu_peak, gpu) if ok else "NO (KV)"
                              for m, gpu, ok in zip(plans, gpus, one_seq)]))
    return out


def render_cp_advice(g: Geometry, lay: Layout, gpus: list[Gpu], a: Assumptions) -> list[str]:
    """The smallest CP whose plan fits each GPU (TP×PP and the GPU count kept): the layout `plan` recommends."""
    found = [smallest_fitting_cp(g, lay, gpu, a) for gpu in gpus]
    return [_row(f"smallest CP that fits ({lay.seq_tokens}-token sequences, TP×PP = {lay.model_parallel}, "
                 f"{lay.world} GPUs)", [f"CP={cp}" if cp else "none" for cp in found])]


def _judge_rows(lay: Layout, plans: list[MemoryPlan], col) -> list[str]:  # noqa: ANN001
    gpus = "GPU 0" if lay.judge_gpus == 1 else f"each of GPUs 0-{lay.judge_gpus - 1}"
    return [f"  judge on {gpus} of the first node (cluster.judge.placement=trainer_node)",
            _row(f"  judge vLLM share (gpu_memory_utilization {lay.judge_memory_utilization})",
                 col(lambda m: m.judge_share)),
            _row("  rollouts + judge", col(lambda m: m.rollout_peak + m.judge_share)),
            _row("  training + judge", col(lambda m: m.training_peak + m.judge_share))]


def render_times(lay: Layout, b: Batch, gpus: list[Gpu], times: list[StepTimes], a: Assumptions) -> list[str]:
    def col(f) -> list[str]:  # noqa: ANN001
        return [f"{f(t):.0f} s" for t in times]

    t0 = times[0]
    out = [_row("step time (estimate)", [gpu.name.split()[0] for gpu in gpus]),
           f"    generation: {b.gen_prompts} prompts dealt group by group to {replicas_text(lay.world, lay.rollout_tp)}"
           f" replicas; the fullest gets {t0.replica_prompts} prompts × {b.group_size} samples = "
           f"{t0.replica_prompts * b.group_size} sequences",
           _row(f"  prefill per replica: {t0.replica_prompts} prompts × {b.input_tokens} "
                f"({'per group' if b.prefix_caching else f'× {b.group_size}'}, MFU {a.prefill_mfu})",
                col(lambda t: t.prefill)),
           _row(f"  decode per replica: {b.output_tokens} tokens (HBM × {a.decode_bandwidth})",
                col(lambda t: t.decode.seconds)),
           _row("    groups resident per replica / waves", [f"{t.decode.groups_resident} / {t.decode.waves}"
                                                           for t in times]),
           _row("    seconds per decode step", [f"{t.decode.step_seconds * 1000:.0f} ms" for t in times]),
           _row(f"  old log-probs: {b.train_prompts * b.group_size} × {b.input_tokens + b.output_tokens} "
                "tokens forward",
                col(lambda t: t.old_logprobs))]
    if b.reference_pass:
        out.append(_row("  reference log-probs (kl_coef > 0)", col(lambda t: t.reference)))
    out += [_row(f"  training: forward + backward{' + recompute' if lay.recompute != 'none' else ''} "
                 f"(MFU {a.train_mfu})", col(lambda t: t.train)),
            _row("  total", col(lambda t: t.total)),
            _row("  total, hours", [f"{t.total / 3600:.2f} h" for t in times])]
    return out


def device_fit_problem(cfg: Any, *, memory_bytes: float, device: str) -> str | None:
    """Why the recipe's longest stage would not fit a GPU of `memory_bytes` (the planner's estimate of
    the larger phase peak, rollouts or training), or None when it fits or the model is unknown.
    The hardware check of `run` (loops.checks.check_hardware) asks this of the real device."""
    from nemo_qwenlong.planning.hardware import geometry_of

    m = cfg.model
    try:
        g = geometry_of(m.source, m.path, m.tiny.model_dump(), m.geometry)
    except ValueError:
        return None
    if g is None:
        return None
    stage = cfg.curriculum.stages[-1]
    lay = layout_for(cfg, input_tokens=stage.max_input_tokens, output_tokens=stage.max_output_tokens)
    plan = memory_plan(g, lay, Gpu(device, memory_bytes, 0.0, 0.0), Assumptions())
    peak = plan.judge_gpu_peak
    if peak <= memory_bytes:
        return None
    judge = f", judge share {plan.judge_share / GIB:.1f} on GPU 0" if plan.judge_share else ""
    return (f"the planner estimates {peak / GIB:.1f} GiB per GPU (rollouts {plan.rollout_peak / GIB:.1f}, training "
            f"{plan.training_peak / GIB:.1f}{judge}, stage {stage.name}: {stage.max_input_tokens}+"
            f"{stage.max_output_tokens} "
            f"tokens) but this {device} has {memory_bytes / GIB:.1f} GiB; see `nemo-qwenlong plan --recipe ...` "
            "(raise parallelism.context_parallel, use parallelism.recompute=full, or lower rollout.gpu_memory_utilization)")
