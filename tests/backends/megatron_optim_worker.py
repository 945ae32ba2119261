"""python megatron_optim_worker.py OUT_DIR: weight decay and fp32 masters on a real megatron-core
GPTModel, in one gloo process (torch.distributed and megatron's parallel state are process-global).

decay:   every named parameter of a local-spec GPTModel (Qwen2 geometry: QKV bias, RMSNorm, untied
         embeddings): the weight decay megatron-core's own torch optimizer gets from our overrides
         plus `apply_group_schedule` (what MegatronDistributedAdam builds), the one megatron's default
         gives without its param scheduler (the old behaviour), and LocalAdamW's, each against `decays`.
masters: a bf16 MegatronPolicy takes SFT steps at lr 2e-6, saves a checkpoint; a second policy with
         other weights loads it: masters, moments and weights must be bit-exact, and one more step on
         both must agree; a third loads the weights only and must start a fresh optimiser at step 0.
Prints one line "OPTIM <json>".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

VOCAB = 256


def hf_config() -> dict:
    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.config.training import TinyArch

    arch = TinyArch(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, tie_word_embeddings=False)
    return tiny_qwen2_config(arch, VOCAB, eos_token_id=0).to_dict()


def torch_weight_decay(opt: torch.optim.Optimizer) -> dict[int, float]:
    """id(param) -> the weight decay its torch param group applies."""
    return {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}


def decay_report() -> dict:
    from megatron.core.optimizer import (
        OptimizerConfig,
        _get_megatron_optimizer_based_on_param_groups,
        _get_param_groups,
        get_standard_config_overrides,
    )

    from nemo_qwenlong.backends.megatron.model import build_gpt_model
    from nemo_qwenlong.backends.megatron.optim import (
        LocalAdamW,
        apply_group_schedule,
        decays,
        megatron_decay_overrides,
    )
    from nemo_qwenlong.config.training import OptimConfig

    model = build_gpt_model(hf_config(), transformer_impl="local", dtype="float32")
    named = list(model.named_parameters())
    cfg = OptimizerConfig(optimizer="adam", lr=1e-3, weight_decay=0.1, bf16=False,
                          use_distributed_optimizer=False)

    def built(overrides: dict, schedule: bool) -> dict[int, float]:
        groups = _get_param_groups([model], cfg, overrides)
        opt, _ = _get_megatron_optimizer_based_on_param_groups(cfg, [model], groups,
                                                               skip_megatron_wrapping=True)
        if schedule:
            apply_group_schedule(opt.param_groups, lr=1e-3, weight_decay=0.1)
        return torch_weight_decay(opt)

    def wrong(wd: dict[int, float]) -> list[str]:
        return [n for n, p in named if (wd[id(p)] > 0) != decays(n, p) or wd[id(p)] not in (0.0, 0.1)]

    ours, old = built(megatron_decay_overrides(), True), built(get_standard_config_overrides(cfg), False)
    local = LocalAdamW(model, OptimConfig(weight_decay=0.1))
    local_wd = torch_weight_decay(local.torch)  # fp32 model: the masters are the parameters
    standard = _get_param_groups([model], cfg, get_standard_config_overrides(cfg))
    standard_exempt = sorted(id(p) for g in standard if g["wd_mult"] == 0.0 for p in g["params"])
    return {"params": len(named), "exempt": sorted(n for n, p in named if not decays(n, p)),
            "decayed": sorted(n for n, p in named if decays(n, p)),
            "megatron_wrong": wrong(ours), "old_megatron_wrong": wrong(old), "local_wrong": wrong(local_wd),
            "standard_rule_agrees": standard_exempt == sorted(id(p) for n, p in named if not decays(n, p))}


def bf16_policy(lr: float = 2e-6, warmup_steps: int = 0):
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy
    from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig

    par = ParallelismConfig(transformer_impl="local", distributed_optimizer=False, recompute="none",
                            dist_backend="gloo")
    optim = OptimConfig(lr=lr, weight_decay=0.01, grad_clip=1.0, warmup_steps=warmup_steps)
    return MegatronPolicy(hf_config(), par, optim, dtype="bfloat16", micro_batch_tokens=10_000)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a), default=0.0)


def flat_moments(opt) -> dict:
    return {f"{k}.{i}": t for i, m in opt.state_tensors().items() for k, t in m.items()}


def masters_report(out: Path) -> dict:
    from nemo_qwenlong.algorithms.batch import TokenRows
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    g = torch.Generator().manual_seed(3)
    rows = TokenRows.from_lists([torch.randint(1, VOCAB, (6,), generator=g).tolist() for _ in range(4)],
                                [torch.randint(1, VOCAB, (5,), generator=g).tolist() for _ in range(4)])
    a = bf16_policy()
    start = {k: v.clone() for k, v in a.local_state().items()}
    start_masters = {i: m.clone() for i, m in a.optimizer.master_tensors().items()}
    for _ in range(3):
        a.sft_step(rows)
    masters = a.optimizer.master_tensors()
    params = a.optimizer.params
    ckpt.save_checkpoint(a, out / "ckpt", 3, config_hash="x")
    manifest = ckpt.read_manifest(out / "ckpt", 3)

    b = bf16_policy()
    with torch.no_grad():  # other weights than `a`, so the load has to bring everything
        for p in b.module.parameters():
            p.add_(0.5)
    b.optimizer.weights_loaded()
    ckpt.load_checkpoint(b, out / "ckpt")
    after_load = {"weights": max_diff(b.local_state(), a.local_state()),
                  "masters": max_diff(b.optimizer.master_tensors(), masters),
                  "moments": max_diff(flat_moments(b.optimizer), flat_moments(a.optimizer)),
                  "step_count": b.optimizer.step_count}
    a.sft_step(rows)
    b.sft_step(rows)
    return {
        "dtypes": sorted({str(p.dtype) for p in params}),
        "master_dtypes": sorted({str(m.dtype) for m in masters.values()}),
        "masters": len(masters), "params": len(params),
        "moment_dtypes": sorted({str(t.dtype) for t in flat_moments(a.optimizer).values()}),
        # the masters hold what bf16 cannot: they differ from their rounded parameters
        "master_vs_param": max(float((masters[i] - params[i].detach().float()).abs().max()) for i in masters),
        "master_moved": max_diff(masters, start_masters),
        "weights_changed": sum(int((a.local_state()[k] != start[k]).sum()) for k in start),
        "manifest_optimizer": manifest["optimizer"],
        "after_load": after_load,
        "next_step": {"weights": max_diff(b.local_state(), a.local_state()),
                      "masters": max_diff(b.optimizer.master_tensors(), a.optimizer.master_tensors())},
        "weights_only": weights_only_report(out / "ckpt", b),  # last: it may reload `b`
    }


def weights_only_report(root: Path, stepped) -> dict:  # noqa: ANN001
    """A fresh policy (lr 1e-3, 4 warm-up steps) loads the step-3 checkpoint without its optimiser,
    as RL loads the SFT checkpoint: its step count, moments and LR must be a fresh optimiser's.
    `stepped` (a policy that has taken a step) must be refused a weights-only load."""
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    c = bf16_policy(lr=1e-3, warmup_steps=4)
    ckpt.load_checkpoint(c, root, load_optimizer=False)
    try:
        ckpt.load_checkpoint(stepped, root, load_optimizer=False)
        refused = ""
    except ckpt.CheckpointError as err:
        refused = str(err)
    return {"step_count": c.optimizer.step_count, "has_state": c.optimizer.has_state(),
            "lr": c.optimizer.current_lr(), "refused": refused}


def main() -> None:
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel, init_parallel

    out = Path(sys.argv[1])
    init_parallel(tensor_parallel=1)
    report = {"decay": decay_report(), "masters": masters_report(out)}
    print("OPTIM " + json.dumps(report), flush=True)
    destroy_parallel()


if __name__ == "__main__":
    main()
