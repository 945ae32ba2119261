"""Optimisers for the Megatron policy: one interface, two implementations.

`LocalAdamW` (CPU, and GPUs without the distributed optimizer): torch AdamW over this rank's
parameter shards. Gradients are summed (not averaged: the loss is globally normalised) over the
data-parallel × context-parallel group; sequence-parallel norm gradients are summed over the
tensor-parallel group; the global norm counts each tensor-parallel duplicate once.

`MegatronDistributedAdam` (GPU): megatron-core's DDP grad buffers + distributed optimizer
(`get_megatron_optimizer`), with `finalize_model_grads` doing the reductions. megatron-core refuses
CPU tensors here (shared/docs/megatron-on-cpu.md X1, X4), so this path runs on GPUs only.

Both take the LR from `algorithms.lr_schedule` each step and keep their own step counter.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_qwenlong.algorithms.lr_schedule import learning_rate
from nemo_qwenlong.config.training import OptimConfig


def _no_decay(name: str, param: Tensor) -> bool:
    return param.dim() < 2 or name.endswith(".bias")


class LocalAdamW:
    """torch AdamW with explicit DP/CP gradient sums and tensor-parallel-aware clipping."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig, *, total_steps: int | None = None,
                 grad_group: dist.ProcessGroup | None = None, tp_group: dist.ProcessGroup | None = None) -> None:
        self.model, self.cfg, self.total_steps = model, cfg, total_steps
        self.grad_group, self.tp_group = grad_group, tp_group
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        groups = [{"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0}]
        self.torch = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        self.step_count = 0

    def zero_grad(self) -> None:
        self.torch.zero_grad(set_to_none=True)

    def weights_loaded(self) -> None:
        """Nothing to do: torch AdamW updates the parameters themselves."""

    def reduce_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        _sum_over(self.params, self.grad_group)
        _sum_over([p for p in self.params if getattr(p, "sequence_parallel", False)], self.tp_group)

    def grad_norm(self) -> float:
        from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

        sq = torch.zeros((), dtype=torch.float64)
        for p in self.params:
            if p.grad is not None and param_is_not_tensor_parallel_duplicate(p):
                sq += p.grad.detach().double().pow(2).sum().cpu()
        if self.tp_group is not None and dist.get_world_size(self.tp_group) > 1:
            dist.all_reduce(sq, group=self.tp_group)
        return float(sq.sqrt())

    def step(self) -> dict[str, float]:
        """Clip, set the scheduled LR, update; returns {"lr", "grad_norm"} (norm before clipping)."""
        self.reduce_grads()
        norm = self.grad_norm()
        if self.cfg.grad_clip > 0 and norm > self.cfg.grad_clip:
            scale = self.cfg.grad_clip / (norm + 1e-6)
            for p in self.params:
                p.grad.mul_(scale)
        lr = self.current_lr()
        for group in self.torch.param_groups:
            group["lr"] = lr
        self.torch.step()
        self.step_count += 1
        return {"lr": lr, "grad_norm": norm}

    def current_lr(self) -> float:
        c = self.cfg
        return learning_rate(self.step_count, lr=c.lr, min_lr=c.min_lr, warmup_steps=c.warmup_steps,
                             schedule=c.schedule, total_steps=self.total_steps)

    def state_tensors(self) -> dict[int, dict[str, Tensor]]:
        """Per parameter index: its Adam moments (empty before the first step)."""
        out = {}
        for i, p in enumerate(self.params):
            state = self.torch.state.get(p, {})
            out[i] = {k: state[k] for k in ("exp_avg", "exp_avg_sq") if k in state}
        return out

    def set_state_tensors(self, tensors: dict[int, dict[str, Tensor]], step_count: int) -> None:
        self.step_count = step_count
        for i, p in enumerate(self.params):
            if tensors.get(i):
                self.torch.state[p] = {"step": torch.tensor(float(step_count)), **tensors[i]}

    def move_state(self, device: str | torch.device) -> None:
        for state in self.torch.state.values():
            for k, v in state.items():
                if isinstance(v, Tensor) and k != "step":
                    state[k] = v.to(device, non_blocking=True)


def _sum_over(params: list[Tensor], group: dist.ProcessGroup | None) -> None:
    if not params or group is None or dist.get_world_size(group) == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, group=group)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


class MegatronDistributedAdam:  # GPU only: exercised by the `gpu`-marked tests
    """megatron-core DDP + distributed Adam. Wraps the model; use `.model` for forward passes."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig, *, total_steps: int | None = None,
                 bf16: bool = True) -> None:
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        ddp_cfg = DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                                use_distributed_optimizer=True, average_in_collective=False)
        self.model = DistributedDataParallel(config=model.config, ddp_config=ddp_cfg, module=model)
        opt_cfg = OptimizerConfig(optimizer="adam", lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
                                  adam_beta1=cfg.beta1, adam_beta2=cfg.beta2, adam_eps=cfg.eps,
                                  clip_grad=cfg.grad_clip, bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
                                  use_distributed_optimizer=True)
        self.megatron = get_megatron_optimizer(opt_cfg, [self.model])
        self.cfg, self.total_steps, self.step_count = cfg, total_steps, 0

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.megatron.zero_grad()

    def weights_loaded(self) -> None:
        """Copy freshly loaded model weights into the fp32 main parameters (else the next step
        would write the construction-time weights back)."""
        self.megatron.reload_model_params()

    def step(self) -> dict[str, float]:
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.model])
        lr = self.current_lr()
        for group in self.megatron.param_groups:
            group["lr"] = lr
        ok, norm, _ = self.megatron.step()
        if not ok:
            raise FloatingPointError(f"optimizer step {self.step_count} skipped: non-finite gradients (grad norm {norm})")
        self.step_count += 1
        return {"lr": lr, "grad_norm": float(norm or 0.0)}

    current_lr = LocalAdamW.current_lr

    def move_state(self, device: str | torch.device) -> None:
        for inner in getattr(self.megatron, "chained_optimizers", [self.megatron]):
            for state in inner.optimizer.state.values():
                for k, v in state.items():
                    if isinstance(v, Tensor) and v.dim() > 0:
                        state[k] = v.to(device, non_blocking=True)
