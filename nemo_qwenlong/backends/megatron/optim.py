"""Optimisers for the Megatron policy: one interface, two implementations.

`LocalAdamW` (CPU, and GPUs without the distributed optimizer): torch AdamW over this rank's
parameter shards, updating fp32 master copies of every non-fp32 parameter (so a bf16 model still
moves at lr 2e-6; the parameter is the master rounded to its dtype). Gradients are summed (not
averaged: the loss is globally normalised) over the data-parallel × context-parallel group;
sequence-parallel norm gradients are summed over the tensor-parallel group; the global norm counts
each tensor-parallel duplicate once.

`MegatronDistributedAdam` (GPU): megatron-core's DDP grad buffers + distributed optimizer
(`get_megatron_optimizer`, which keeps its own fp32 main parameters), with `finalize_model_grads`
doing the reductions. megatron-core refuses CPU tensors here (shared/docs/megatron-on-cpu.md X1,
X4), so this path runs on GPUs only; `choose_optimizer_kind` picks between the two.

Both decay exactly the parameters `decays` names, take the LR from `algorithms.lr_schedule` each
step and keep their own step counter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_qwenlong.algorithms.lr_schedule import learning_rate
from nemo_qwenlong.config.training import OptimConfig

log = logging.getLogger(__name__)


def choose_optimizer_kind(distributed: bool, cuda: bool) -> Literal["distributed", "local"]:
    """"distributed" (`MegatronDistributedAdam`) when the distributed optimizer is asked for and CUDA
    is available, else "local" (`LocalAdamW`); asking for it without CUDA logs a warning."""
    if distributed and cuda:
        return "distributed"
    if distributed:
        log.warning("parallelism.distributed_optimizer=true but CUDA is not available: falling back to "
                    "LocalAdamW (torch AdamW with fp32 master weights; optimiser state is not sharded over "
                    "data-parallel ranks)")
    return "local"


def decays(name: str, param: Tensor) -> bool:
    """The weight-decay rule of both optimisers (Megatron-LM's default): a parameter decays unless it
    is a bias or has fewer than 2 dimensions. Every norm weight (RMSNorm / LayerNorm, Transformer
    Engine's fused `layer_norm_weight`) and every bias is 1-D, so none of them decays; the embedding
    and output matrices are 2-D and do. `name` may carry wrapper prefixes (`module.`)."""
    return param.dim() >= 2 and name.rsplit(".", 1)[-1] != "bias"


def decay_groups(named: Iterable[tuple[str, Tensor]], weight_decay: float) -> list[dict[str, Any]]:
    """torch param groups by `decays`: [{the decaying tensors, weight_decay}, {the rest, 0.0}]."""
    named = list(named)
    return [{"params": [t for n, t in named if decays(n, t)], "weight_decay": weight_decay},
            {"params": [t for n, t in named if not decays(n, t)], "weight_decay": 0.0}]


def megatron_decay_overrides() -> dict:
    """megatron-core `config_overrides` that give `wd_mult = 0` to exactly the parameters `decays`
    exempts. (megatron-core 0.19 has no `no_weight_decay_cond`; its default overrides encode the same
    rule, but `wd_mult` only reaches the optimizer through its param scheduler: see
    `apply_group_schedule`.)"""
    from megatron.core.optimizer import ParamKey, ParamWithNamePredicate

    exempt = ParamWithNamePredicate(name="nql_no_weight_decay",
                                    fn=lambda param, name: not decays(name, param))
    return {ParamKey(with_name_predicate=exempt): {"wd_mult": 0.0}}


def apply_group_schedule(param_groups: Iterable[dict], *, lr: float, weight_decay: float) -> None:
    """Set every group's lr, and its weight_decay to `weight_decay × wd_mult` (megatron's
    `OptimizerParamScheduler` rule, which we do not run; a group without `wd_mult` decays fully)."""
    for group in param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay * group.get("wd_mult", 1.0)


def update_allowed(norm: float, *, on_nonfinite: str, step: int) -> bool:
    """Whether an optimiser step with global gradient norm `norm` may update the weights. A finite
    norm may; a NaN/inf one (bf16 trains without a loss scaler, so nothing else catches it, and
    `nan > clip` is False, so clipping would pass it through) is skipped (`on_nonfinite="skip"`) or
    raises FloatingPointError ("error"). Every rank sees the same norm (reduced over TP, gradients
    summed over DP×CP), so every rank decides alike."""
    if math.isfinite(norm):
        return True
    if on_nonfinite == "error":
        raise FloatingPointError(f"optimizer step {step}: the global gradient norm is {norm} (non-finite); "
                                 "optim.nonfinite_grad='error' stops here ('skip' would skip the update)")
    log.warning("optimizer step %d skipped: non-finite global gradient norm %s", step, norm)
    return False


def master_copy(param: Tensor) -> Tensor:
    """The tensor the optimiser updates for `param`: the parameter itself when it is fp32, else a
    detached fp32 copy (the master weight)."""
    return param if param.dtype == torch.float32 else param.detach().to(torch.float32, copy=True)


class LocalAdamW:
    """torch AdamW on fp32 masters with explicit DP/CP gradient sums and tensor-parallel-aware clipping."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig, *, total_steps: int | None = None,
                 grad_group: dist.ProcessGroup | None = None, tp_group: dist.ProcessGroup | None = None) -> None:
        self.model, self.cfg, self.total_steps = model, cfg, total_steps
        self.grad_group, self.tp_group = grad_group, tp_group
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.masters = [master_copy(p) for p in self.params]
        groups = decay_groups([(n, m) for (n, _), m in zip(named, self.masters)], cfg.weight_decay)
        self.torch = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
        self.step_count, self.skipped_steps = 0, 0

    def _separate_masters(self) -> list[tuple[int, Tensor, Tensor]]:
        """(index, parameter, master) for the parameters whose master is a separate fp32 copy."""
        return [(i, p, m) for i, (p, m) in enumerate(zip(self.params, self.masters)) if m is not p]

    def zero_grad(self) -> None:
        self.torch.zero_grad(set_to_none=True)
        for _, p, _ in self._separate_masters():
            p.grad = None

    @torch.no_grad()
    def weights_loaded(self) -> None:
        """Re-derive the fp32 masters from the freshly loaded parameters (a checkpoint that saved the
        masters restores them afterwards, `set_master_tensors`)."""
        for _, p, m in self._separate_masters():
            m.copy_(p)

    def reduce_grads(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        _sum_over(self.params, self.grad_group)
        _sum_over([p for p in self.params if getattr(p, "sequence_parallel", False)], self.tp_group)

    def grad_norm(self) -> float:
        from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

        sq, tp = torch.zeros((), dtype=torch.float64), self.tp_group
        for p in self.params:
            unique = tp is None or param_is_not_tensor_parallel_duplicate(p, tp_group=tp)  # no group: all unique
            if p.grad is not None and unique:
                sq += p.grad.detach().double().pow(2).sum().cpu()
        if self.tp_group is not None and dist.get_world_size(self.tp_group) > 1:
            dist.all_reduce(sq, group=self.tp_group)
        return float(sq.sqrt())

    def step(self) -> dict[str, float]:
        """Clip, set the scheduled LR, update the masters in fp32 and round them into the parameters;
        returns {"lr", "grad_norm", "skipped_steps"} (norm before clipping). A non-finite norm skips
        the update (`update_allowed`); the step counter, and so the LR schedule, does not advance."""
        self.reduce_grads()
        norm = self.grad_norm()
        lr = self.current_lr()
        if not update_allowed(norm, on_nonfinite=self.cfg.nonfinite_grad, step=self.step_count):
            self.skipped_steps += 1
            return {"lr": lr, "grad_norm": norm, "skipped_steps": float(self.skipped_steps)}
        for _, p, m in self._separate_masters():
            m.grad = p.grad.to(torch.float32)
        if self.cfg.grad_clip > 0 and norm > self.cfg.grad_clip:
            scale = self.cfg.grad_clip / (norm + 1e-6)
            for m in self.masters:
                m.grad.mul_(scale)
        for group in self.torch.param_groups:
            group["lr"] = lr
        self.torch.step()
        self._masters_to_params()
        self.step_count += 1
        return {"lr": lr, "grad_norm": norm, "skipped_steps": float(self.skipped_steps)}

    def has_state(self) -> bool:
        """Whether Adam moments exist yet (not before the first update)."""
        return any(self.torch.state.get(m) for m in self.masters)

    @torch.no_grad()
    def _masters_to_params(self) -> None:
        for _, p, m in self._separate_masters():
            p.copy_(m)

    def current_lr(self) -> float:
        c = self.cfg
        return learning_rate(self.step_count, lr=c.lr, min_lr=c.min_lr, warmup_steps=c.warmup_steps,
                             schedule=c.schedule, total_steps=self.total_steps)

    def state_tensors(self) -> dict[int, dict[str, Tensor]]:
        """Per parameter index: its Adam moments (fp32; empty before the first step)."""
        out = {}
        for i, m in enumerate(self.masters):
            state = self.torch.state.get(m, {})
            out[i] = {k: state[k] for k in ("exp_avg", "exp_avg_sq") if k in state}
        return out

    def set_state_tensors(self, tensors: dict[int, dict[str, Tensor]], step_count: int) -> None:
        self.step_count = step_count
        for i, m in enumerate(self.masters):
            if tensors.get(i):
                self.torch.state[m] = {"step": torch.tensor(float(step_count)), **tensors[i]}

    def master_tensors(self) -> dict[int, Tensor]:
        """Per parameter index: its fp32 master, for the non-fp32 parameters only (an fp32 parameter
        is its own master)."""
        return {i: m for i, _, m in self._separate_masters()}

    @torch.no_grad()
    def set_master_tensors(self, tensors: dict[int, Tensor]) -> None:
        """Restore saved masters and round them into their parameters (the invariant of a step)."""
        for i, p, m in self._separate_masters():
            if i in tensors:
                m.copy_(tensors[i])
                p.copy_(m)

    def move_state(self, device: str | torch.device) -> None:
        """Adam moments and the separate fp32 masters to `device` (masters keep their identity, which
        keys the optimiser state)."""
        for state in self.torch.state.values():
            for k, v in state.items():
                if isinstance(v, Tensor) and k != "step":
                    state[k] = v.to(device, non_blocking=True)
        for _, _, m in self._separate_masters():
            m.data = m.data.to(device, non_blocking=True)


def torch_optimizers_hold_state(optimizers: Iterable[torch.optim.Optimizer]) -> bool:
    """True once any of the torch optimizers has per-parameter state (Adam: after its first step)."""
    return any(any(state for state in opt.state.values()) for opt in optimizers)


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
        self.megatron = get_megatron_optimizer(opt_cfg, [self.model],
                                               config_overrides=megatron_decay_overrides())
        self.cfg, self.total_steps, self.step_count, self.skipped_steps = cfg, total_steps, 0, 0
        apply_group_schedule(self.megatron.param_groups, lr=self.current_lr(), weight_decay=cfg.weight_decay)

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.megatron.zero_grad()

    def weights_loaded(self) -> None:
        """Copy freshly loaded model weights into the fp32 main parameters (else the next step
        would write the construction-time weights back)."""
        self.megatron.reload_model_params()

    def step(self) -> dict[str, float]:
        """Reduce gradients, then the same rule and metrics as `LocalAdamW.step`. megatron-core's own
        `step()` checks for inf/NaN only with an fp16 loss scaler (`prepare_grads`), and returns a
        grad norm only when clipping is on (0.0 / None otherwise), so the pre-clip norm is computed
        here from the main gradients (`get_grad_norm`) and checked before megatron updates.
        (`step()` copies the model gradients into the main ones again: an idempotent assignment.)"""
        from megatron.core.distributed import finalize_model_grads

        finalize_model_grads([self.model])
        lr = self.current_lr()
        self.megatron.prepare_grads()
        norm = float(self.megatron.get_grad_norm())
        if not update_allowed(norm, on_nonfinite=self.cfg.nonfinite_grad, step=self.step_count):
            self.skipped_steps += 1
            return {"lr": lr, "grad_norm": norm, "skipped_steps": float(self.skipped_steps)}
        apply_group_schedule(self.megatron.param_groups, lr=lr, weight_decay=self.cfg.weight_decay)
        ok, _, _ = self.megatron.step()
        if not ok:  # only an fp16 loss scaler reports this
            raise FloatingPointError(f"optimizer step {self.step_count}: megatron-core found inf/NaN gradients")
        self.step_count += 1
        return {"lr": lr, "grad_norm": norm, "skipped_steps": float(self.skipped_steps)}

    def has_state(self) -> bool:
        """Whether any inner torch optimizer holds Adam moments (not before the first update;
        megatron's sharded_state_dict is never empty, so it cannot tell)."""
        return torch_optimizers_hold_state(inner.optimizer for inner in
                                           getattr(self.megatron, "chained_optimizers", [self.megatron]))

    current_lr = LocalAdamW.current_lr

    def move_state(self, device: str | torch.device) -> None:
        for inner in getattr(self.megatron, "chained_optimizers", [self.megatron]):
            for state in inner.optimizer.state.values():
                for k, v in state.items():
                    if isinstance(v, Tensor) and v.dim() > 0:
                        state[k] = v.to(device, non_blocking=True)
