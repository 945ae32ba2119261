"""A run's per-GPU memory in its two phases, and whether trainer and rollout engine can share a GPU.

Colocation (docs/plan.md): every GPU holds a trainer rank and its share of one vLLM engine replica.
The W ranks hold R = W / T replicas (T = `rollout.tensor_parallel`, replica r = ranks r·T … r·T+T−1),
so each GPU holds weights / T and its own KV cache, the same on every GPU; a judge launched on the
trainer's first node (`cluster.judge.placement: trainer_node`) adds its share on its GPU(s) only.
- Rollout phase (engine awake): the trainer keeps weights, the fp32 gradient buffer and the fp32
  master shard on the GPU (Adam moments go to host: `prepare_for_generation`), runs the
  old-log-prob forward, and vLLM holds `gpu_memory_utilization` × GPU memory.
- Training phase (engine asleep, level 2): the trainer's full state, activations and log-prob
  temporaries; the engine keeps only a small remainder.
Each phase also keeps `reserve_gib` free. `colocation_problems` is the config's check: only exact
sizes (weights, buffers, KV bytes), none of the activation estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nemo_qwenlong.planning import memory as mem
from nemo_qwenlong.planning.hardware import Assumptions, Gpu
from nemo_qwenlong.planning.memory import GIB, Geometry


@dataclass(frozen=True)
class Layout:
    """The numbers of a run that size its memory: trainer layout, engine, and the stage's sequences."""

    world: int
    gpus_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    context_parallel: int
    recompute: str
    distributed_optimizer: bool
    param_bytes: int
    micro_batch_tokens: int
    logprob_chunk: int
    full_logits: bool  # rl.logprob_impl=logits holds every token's logits; fused one chunk's
    rollout_tp: int
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    seq_tokens: int  # longest rollout: input + output cap
    judge_memory_utilization: float = 0.0  # share of each judge GPU the judge's vLLM takes; 0: no judge on them
    judge_gpus: int = 0  # GPUs of the first node the judge shares with trainer ranks 0 … judge_gpus−1

    @property
    def rollout_replicas(self) -> int:
        """R = W / T vLLM engine replicas (at least one)."""
        return rollout_replicas(self.world, self.rollout_tp)

    @property
    def model_parallel(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def data_parallel(self) -> int:
        return max(1, self.world // (self.model_parallel * self.context_parallel))

    @property
    def optimizer_shards(self) -> int:
        return self.data_parallel * self.context_parallel if self.distributed_optimizer else 1

    @property
    def train_tokens(self) -> int:
        """Tokens of one micro-batch: the budget, or one longer row alone."""
        return max(self.micro_batch_tokens, self.seq_tokens)


def rollout_replicas(world: int, rollout_tp: int) -> int:
    """R = W / T: the engine replicas W ranks hold when each replica spans T consecutive ranks."""
    return max(1, world // rollout_tp)


def replicas_text(world: int, rollout_tp: int) -> str:
    """'R = W/T = 32/4 = 8', as `plan` and the launch scripts print it."""
    return f"R = W/T = {world}/{rollout_tp} = {rollout_replicas(world, rollout_tp)}"


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU bytes of every item, and the two phase peaks (with the reserve)."""

    weights: float
    gradients: float
    masters: float
    optimizer: float  # masters + moments, at the layout's sharding
    optimizer_unsharded: float
    activations: float
    logprobs_train: float
    logprob_pass: float
    engine_share: float
    engine_weights: float
    engine_overhead: float
    kv_cache: float
    kv_tokens: float
    engine_asleep: float
    reserve: float
    judge_share: float = 0.0  # on the GPU(s) the judge shares (cluster.judge.placement: trainer_node)

    @property
    def rollout_peak(self) -> float:
        return self.weights + self.gradients + self.masters + self.logprob_pass + self.engine_share + self.reserve

    @property
    def training_trainer(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logprobs_train

    @property
    def training_peak(self) -> float:
        return self.training_trainer + self.engine_asleep + self.reserve

    @property
    def training_peak_engine_awake(self) -> float:
        return self.training_trainer + self.engine_share + self.reserve

    @property
    def peak(self) -> float:
        """The larger phase peak on a GPU without the judge."""
        return max(self.rollout_peak, self.training_peak)

    @property
    def judge_gpu_peak(self) -> float:
        """The larger phase peak on a GPU the judge shares (equal to `peak` when there is none)."""
        return self.peak + self.judge_share

    def peaks_without_distributed_optimizer(self, shards: int) -> tuple[float, float]:
        """(rollout, training) peaks if the optimiser state were not sharded (`shards` = DP×CP)."""
        extra_masters = self.masters * shards - self.masters
        return (self.rollout_peak + extra_masters,
                self.training_peak + self.optimizer_unsharded - self.optimizer)


def memory_plan(g: Geometry, lay: Layout, gpu: Gpu, a: Assumptions) -> MemoryPlan:
    mp, shards, tp, cp = lay.model_parallel, lay.optimizer_shards, lay.tensor_parallel, lay.context_parallel
    share = lay.gpu_memory_utilization * gpu.memory_bytes
    engine_weights = mem.weight_bytes(g, model_parallel=lay.rollout_tp, param_bytes=lay.param_bytes)
    overhead = mem.engine_overhead_bytes(g, rollout_tp=lay.rollout_tp, batched_tokens=lay.max_num_batched_tokens,
                                         graph_reserve=a.graph_reserve_gib * GIB)
    kv = max(0.0, share - engine_weights - overhead)
    tokens = lay.train_tokens
    return MemoryPlan(
        weights=mem.weight_bytes(g, model_parallel=mp, param_bytes=lay.param_bytes),
        gradients=mem.gradient_bytes(g, model_parallel=mp),
        masters=mem.master_bytes(g, model_parallel=mp, optimizer_shards=shards),
        optimizer=mem.optimizer_bytes(g, model_parallel=mp, optimizer_shards=shards),
        optimizer_unsharded=mem.optimizer_bytes(g, model_parallel=mp, optimizer_shards=1),
        activations=mem.activation_bytes(g, lay.recompute, tokens=tokens, tensor_parallel=tp, context_parallel=cp),
        logprobs_train=mem.logprob_bytes(g, tokens=tokens, chunk=lay.logprob_chunk, tensor_parallel=tp,
                                         context_parallel=cp, backward=True, full_logits=lay.full_logits),
        logprob_pass=mem.logprob_bytes(g, tokens=tokens, chunk=lay.logprob_chunk, tensor_parallel=tp,
                                       context_parallel=cp, backward=False, full_logits=lay.full_logits),
        engine_share=share, engine_weights=engine_weights, engine_overhead=overhead, kv_cache=kv,
        kv_tokens=kv / mem.kv_bytes_per_token(g, rollout_tp=lay.rollout_tp),
        engine_asleep=a.engine_asleep_gib * GIB, reserve=a.reserve_gib * GIB,
        judge_share=lay.judge_memory_utilization * gpu.memory_bytes if lay.judge_gpus else 0.0,
    )


def fits(m: MemoryPlan, lay: Layout, gpu: Gpu) -> bool:
    """Both phase peaks (and the judge's GPU) within the GPU, and one whole rollout in a replica's KV cache."""
    return m.judge_gpu_peak <= gpu.memory_bytes and m.kv_tokens >= lay.seq_tokens


def smallest_fitting_cp(g: Geometry, lay: Layout, gpu: Gpu, a: Assumptions) -> int | None:
    """The smallest context-parallel size (TP, PP and the world kept) whose plan fits `gpu`; None if none does."""
    cp = 1
    while lay.model_parallel * cp <= lay.world:
        if lay.world % (lay.model_parallel * cp) == 0:
            candidate = replace(lay, context_parallel=cp)
            if fits(memory_plan(g, candidate, gpu, a), candidate, gpu):
                return cp
        cp *= 2
    return None


def gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB"


def vllm_tp_problems(g: Geometry, tp: int, name: str) -> list[str]:
    """vLLM's tensor-parallel rule for this model (`rollout.engine_layout`, the one place for it), as
    problems naming the setting `name`."""
    from nemo_qwenlong.rollout.engine_layout import EngineShape, broken_rules

    return [f"{name}={tp} {rule}" for rule in broken_rules(tp, EngineShape(heads=g.heads, kv_heads=g.kv_heads))]


def colocation_problems(g: Geometry | None, lay: Layout, gpu: Gpu, a: Assumptions) -> list[str]:
    """Why trainer and engine cannot share the GPUs (empty when they can), each naming the settings.
    Memory only: which rollout.tensor_parallel a layout accepts (nodes, ranks, heads) is
    rollout.engine_layout's rule, checked before this. With no geometry (a model the planner does
    not know) nothing is checked."""
    rtp, problems = lay.rollout_tp, []
    if g is None:
        return problems
    m = memory_plan(g, lay, gpu, a)
    need_kv = lay.seq_tokens * mem.kv_bytes_per_token(g, rollout_tp=rtp)
    if m.kv_cache < need_kv:
        problems.append(
            f"rollout.gpu_memory_utilization={lay.gpu_memory_utilization} gives vLLM {gib(m.engine_share)} of an "
            f"{gpu.name}; its weights at rollout.tensor_parallel={rtp} ({gib(m.engine_weights)}) and step buffers "
            f"({gib(m.engine_overhead)}) leave {gib(m.kv_cache)} of KV cache, but one {lay.seq_tokens}-token "
            f"rollout needs {gib(need_kv)}: raise rollout.gpu_memory_utilization or rollout.tensor_parallel")
    resident = m.weights + m.gradients + m.masters
    if resident + m.engine_share + m.reserve > gpu.memory_bytes:
        room = (gpu.memory_bytes - resident - m.reserve) / gpu.memory_bytes
        fixes = ([f"lower rollout.gpu_memory_utilization to <= {room:.2f}"] if room > 0 else []) + [
            "raise parallelism.tensor_parallel"] + (
            [] if lay.distributed_optimizer else ["set parallelism.distributed_optimizer=true"])
        problems.append(
            f"during rollouts the trainer keeps {gib(resident)} per GPU (bf16 weights, fp32 gradients and fp32 "
            f"masters at TP×PP={lay.model_parallel}, optimiser shards={lay.optimizer_shards}) and vLLM takes "
            f"rollout.gpu_memory_utilization={lay.gpu_memory_utilization} × {gib(gpu.memory_bytes)} = "
            f"{gib(m.engine_share)}; with the {gib(m.reserve)} reserve that is more than the {gpu.name} "
            f"(cluster.gpu) holds: {', or '.join(fixes)}")
    elif resident + m.engine_share + m.judge_share + m.reserve > gpu.memory_bytes:
        problems.append(_judge_problem(lay, gpu, m, resident))
    return problems


def _judge_problem(lay: Layout, gpu: Gpu, m: MemoryPlan, resident: float) -> str:
    """The judge shares GPU 0 (… judge_gpus−1) of the first node and leaves too little for trainer and engine."""
    free = gpu.memory_bytes - resident - m.reserve
    judge_room = (free - m.engine_share) / gpu.memory_bytes
    engine_room = (free - m.judge_share) / gpu.memory_bytes
    fixes = ([f"lower cluster.judge.gpu_memory_utilization to <= {judge_room:.2f}"] if judge_room > 0 else []) + (
        [f"lower rollout.gpu_memory_utilization to <= {engine_room:.2f}"] if engine_room > 0 else []) + [
        "set cluster.judge.placement=own_node"]
    return (f"the judge shares {lay.judge_gpus} GPU(s) of the first node (cluster.judge.placement=trainer_node) "
            f"and takes cluster.judge.gpu_memory_utilization={lay.judge_memory_utilization} × "
            f"{gib(gpu.memory_bytes)} = {gib(m.judge_share)}; with the trainer's {gib(resident)}, vLLM's "
            f"{gib(m.engine_share)} and the {gib(m.reserve)} reserve that is more than the {gpu.name} "
            f"(cluster.gpu) holds: {', or '.join(fixes)}")
