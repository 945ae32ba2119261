"""What `run` refuses before any process group, model or tensor exists: hardware the recipe cannot
use, and settings `run` does not support yet."""

from __future__ import annotations

import os

from nemo_qwenlong.config import RunConfig
from nemo_qwenlong.loops.run_dir import RunError


def check_hardware(cfg: RunConfig, world: int) -> None:
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
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
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


def check_supported(cfg: RunConfig, world: int) -> None:
    """Refuse, before any process group or model exists, what this machine or `run` cannot do."""
    check_hardware(cfg, world)
    if cfg.rl.kl_coef > 0:
        raise RunError(f"rl.kl_coef={cfg.rl.kl_coef}: `run` holds no reference policy yet (the released DAPO "
                       "settings use 0); set rl.kl_coef=0")
    for i, s in enumerate(cfg.curriculum.stages):
        if s.reset_optimizer or s.reset_lr_schedule:
            raise RunError(f"curriculum.stages.{i}: reset_optimizer/reset_lr_schedule are not supported by "
                           "`run` yet; set both to false (the optimiser and schedule continue across stages)")
