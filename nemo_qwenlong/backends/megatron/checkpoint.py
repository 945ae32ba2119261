"""Policy checkpoints through megatron-core `dist_checkpointing` (torch_dist), saved atomically.

Layout (Megatron's, which NeMo's Megatron-Bridge also reads and writes):

    <root>/latest_checkpointed_iteration.txt      step of the newest complete checkpoint (Megatron-LM)
    <root>/latest_train_state.pt                  the same for Megatron-Bridge
    <root>/iter_0000010/                          torch_dist shards (.metadata, __*_*.distcp, metadata.json)
    <root>/iter_0000010/nql_manifest.json         step, config hash, parallel layout, optimiser step, HF config
    <root>/iter_0000010/run_config.yaml           the model section Megatron-Bridge rebuilds the model from
                                              (its GPTModelProvider; older checkpoints name Qwen2ModelProvider)
    <root>/iter_0000010/train_state.pt            Megatron-Bridge's train state (tensors only)
    <root>/iter_0000010/tokenizer/                HF tokenizer files (converter imports; docs/checkpoints.md)

A save writes everything into `<root>/.tmp-iter_NNNNNNN/` and renames it into place only when every
rank has finished, then updates the pointer file atomically, so a save that dies half-way leaves the
previous checkpoint and pointer untouched (the stale temp folder is removed by the next save).
Shards are keyed by global tensor and offset, so a checkpoint saved at one TP/DP layout loads at
another (resharding); the optimiser's Adam moments are sharded like their parameters.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nemo_qwenlong.backends.hf.checkpoint import rope_scaling, rope_theta
from nemo_qwenlong.backends.megatron.model import yarn_fields
from nemo_qwenlong.fsio import atomic_write_bytes, atomic_write_text

LATEST = "latest_checkpointed_iteration.txt"
LATEST_TRAIN_STATE = "latest_train_state.pt"
MANIFEST = "nql_manifest.json"
RUN_CONFIG = "run_config.yaml"
TRAIN_STATE = "train_state.pt"
FORMAT = "torch_dist"
MASTER = "fp32_param"  # LocalAdamW's fp32 master weights, saved beside the Adam moments
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint folder that is missing, incomplete, or not ours."""


def iter_dirname(step: int) -> str:
    return f"iter_{step:07d}"


def latest_step(root: str | Path) -> int | None:
    """Step named by the pointer file if that checkpoint is complete, else the newest complete one."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        text = pointer.read_text().strip()
        if text.isdigit() and (root / iter_dirname(int(text)) / MANIFEST).is_file():
            return int(text)
    return max(complete_steps(root), default=None)


def complete_steps(root: Path) -> list[int]:
    """Steps of the `iter_NNNNNNN` folders under `root` that hold a manifest, ascending."""
    return sorted(int(p.name[5:]) for p in root.glob("iter_*") if p.name[5:].isdigit() and (p / MANIFEST).is_file())


def read_manifest(root: str | Path, step: int) -> dict[str, Any]:
    path = Path(root) / iter_dirname(step) / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not a complete checkpoint (no {MANIFEST})")
    return json.loads(path.read_text())


def use_in_process_write_queue() -> None:
    """Synchronous saves only pass write results between threads of this process, but megatron-core
    creates the queue for them with a *spawned* multiprocessing Manager
    (dist_checkpointing/strategies/filesystem_async.py, get_write_results_queue): that starts a
    helper process (seconds per process) and breaks any script without a `__main__` guard. We never
    save asynchronously, so a thread-safe in-process queue is set first; megatron reuses it."""
    import queue

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = queue.Queue()


def _rank0() -> bool:
    return dist.get_rank() == 0


def _layout(policy) -> dict[str, int]:  # noqa: ANN001
    from megatron.core import parallel_state as ps

    return {"tensor_parallel": policy.tp_size, "pipeline_parallel": 1, "context_parallel": policy.cp_size,
            "data_parallel": ps.get_data_parallel_world_size()}


def _sharded_state(policy, *, loading: bool, masters: bool = False) -> dict[str, Any]:  # noqa: ANN001
    """{"model": ShardedTensors, "optimizer": ShardedTensors of the Adam moments and fp32 masters}.

    `LocalAdamW`'s fp32 master of a non-fp32 parameter is saved with that parameter's moments (before
    the first step there are neither, and the master is the parameter); on load it is requested only
    when the checkpoint holds masters (`masters`, from the manifest), else `weights_loaded` re-derives
    it from the loaded weights. Masters load into fresh tensors, not the live ones, because
    `weights_loaded` runs between the load and `_restore_optimizer`.
    """
    from megatron.core.dist_checkpointing.optimizer import (
        get_param_id_to_sharded_param_map,
        make_sharded_optimizer_tensor,
    )

    model_sd = policy.module.sharded_state_dict()
    opt = policy.optimizer
    if hasattr(opt, "megatron"):  # GPU distributed optimizer: megatron-core shards its own state
        return {"model": model_sd, "optimizer": opt.megatron.sharded_state_dict(model_sd, is_loading=loading)}
    id_map = get_param_id_to_sharded_param_map(model_sd, opt.params)
    moments = opt.state_tensors()
    fp32 = opt.master_tensors() if masters or not loading else {}
    optim_sd: dict[str, Any] = {}
    for i, param in enumerate(opt.params):
        for key in ("exp_avg", "exp_avg_sq"):
            tensor = moments[i].get(key)
            if tensor is None:
                if not loading:
                    continue  # before the first step there is no state to save
                tensor = torch.zeros_like(param, dtype=torch.float32)
            optim_sd[f"{key}.{i}"] = make_sharded_optimizer_tensor(id_map[i], tensor, prefix=f"optimizer.state.{key}")
        if i in fp32 and (loading or moments[i]):
            tensor = torch.empty_like(fp32[i]) if loading else fp32[i]
            optim_sd[f"{MASTER}.{i}"] = make_sharded_optimizer_tensor(id_map[i], tensor,
                                                                      prefix=f"optimizer.state.{MASTER}")
    return {"model": model_sd, "optimizer": optim_sd}


def save_checkpoint(policy, root: str | Path, step: int, *, config_hash: str, keep_last: int | None = None,  # noqa: ANN001
                    extra: dict[str, Any] | None = None, files: dict[str, str] | None = None) -> Path:
    """Save model + optimiser at `step` (collective: every rank calls it). Returns the final folder.
    `files` (name -> text, rank 0's) are written inside the folder before it is renamed into place,
    so the loop state they hold is complete exactly when the weights are."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    final, tmp = root / iter_dirname(step), root / f".tmp-{iter_dirname(step)}"
    if _rank0():
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-iter_*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    dist.barrier()
    started = time.perf_counter()
    use_in_process_write_queue()
    state = _sharded_state(policy, loading=False)
    has_optimizer_state = policy.optimizer.has_state()  # megatron's sharded dict is never empty: ask the optimizer
    local_optimizer = not hasattr(policy.optimizer, "megatron")  # megatron-core keeps its own main params
    has_masters = local_optimizer and any(k.startswith(f"{MASTER}.") for k in state["optimizer"])
    dist_checkpointing.save(state, str(tmp))
    dist.barrier()
    if _rank0():
        optimizer = {"kind": type(policy.optimizer).__name__, "step_count": policy.optimizer.step_count,
                     "has_state": has_optimizer_state, "has_master_params": has_masters}
        rows = policy.shape.padded_vocab_size or policy.hf_config["vocab_size"]
        write_iteration_files(tmp, step=step, config_hash=config_hash, layout=_layout(policy), optimizer=optimizer,
                              hf_config=policy.hf_config, dtype=policy.dtype,
                              extra={"padded_vocab_size": rows, **(extra or {})})
        for name, text in (files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(tmp / name, text)
        if final.exists():  # re-saving a step: the old copy goes only once the new one is complete
            shutil.rmtree(final)
        tmp.rename(final)
        write_pointers(root, step)
        if keep_last:
            _prune(root, keep_last)
        log.info("checkpoint %s saved in %.1f s", final, time.perf_counter() - started)
    dist.barrier()
    return final


def write_iteration_files(iter_dir: Path, *, step: int, config_hash: str, layout: dict[str, int],
                          optimizer: dict[str, Any], hf_config: dict, dtype: str,
                          extra: dict[str, Any] | None = None) -> None:
    """Beside the shards: our manifest and the Megatron-Bridge `run_config.yaml` (model section).
    `dtype`: the stored weights' dtype (recorded in both)."""
    manifest = {"format": FORMAT, "step": step, "config_hash": config_hash, "layout": layout, "optimizer": optimizer,
                "hf_config": hf_config, "dtype": dtype, "saved_unix_time": time.time(), **(extra or {})}
    atomic_write_text(iter_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))
    atomic_write_text(iter_dir / RUN_CONFIG, bridge_run_config(hf_config, layout, dtype))
    _write_train_state(iter_dir / TRAIN_STATE, step)


def write_pointers(root: Path, step: int) -> None:
    """Megatron-LM's and Megatron-Bridge's "latest" pointers, each written atomically."""
    atomic_write_text(root / LATEST, str(step))
    _write_train_state(root / LATEST_TRAIN_STATE, step)


def _write_train_state(path: Path, step: int) -> None:
    """Megatron-Bridge's TrainState fields (tensors only, so `torch.load(weights_only=True)` reads it)."""
    import io

    zero = torch.tensor(0, dtype=torch.int64)
    state = {"step": torch.tensor(step, dtype=torch.int64), "consumed_train_samples": zero,
             "skipped_train_samples": zero, "consumed_valid_samples": zero,
             "floating_point_operations_so_far": torch.tensor(0.0, dtype=torch.float64),
             "do_train": torch.tensor(False), "do_valid": torch.tensor(False), "do_test": torch.tensor(False)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


BRIDGE_PROVIDER = "megatron.bridge.models.gpt_provider.GPTModelProvider"
TORCH_DTYPES = ("float32", "bfloat16", "float16")


def _bridge_object(target: str) -> dict[str, Any]:
    """A Hydra-style reference to a Python object (not called), as Megatron-Bridge writes one."""
    return {"_target_": target, "_call_": False}


def bridge_run_config(hf_config: dict, layout: dict[str, int], dtype: str) -> str:
    """run_config.yaml with the `model` section Megatron-Bridge 0.6.2 instantiates: its
    GPTModelProvider with the fields its own HF import writes for Qwen2 (sizes, RMSNorm, SwiGLU,
    QKV bias, RoPE or YaRN, dropout 0) and `bf16`/`params_dtype` matching the stored weights."""
    import yaml

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {TORCH_DTYPES}")
    heads = hf_config["num_attention_heads"]
    model = {
        "_target_": BRIDGE_PROVIDER,
        "num_layers": hf_config["num_hidden_layers"], "hidden_size": hf_config["hidden_size"],
        "ffn_hidden_size": hf_config["intermediate_size"], "num_attention_heads": heads,
        "num_query_groups": hf_config.get("num_key_value_heads", heads),
        "kv_channels": hf_config.get("head_dim") or hf_config["hidden_size"] // heads,
        "vocab_size": hf_config["vocab_size"], "seq_length": hf_config.get("max_position_embeddings", 32768),
        "share_embeddings_and_output_weights": bool(hf_config.get("tie_word_embeddings", False)),
        "normalization": "RMSNorm", "layernorm_epsilon": hf_config.get("rms_norm_eps", 1e-6),
        "gated_linear_unit": True, "activation_func": _bridge_object("torch.nn.functional.silu"),
        "add_qkv_bias": True, "add_bias_linear": False, "hidden_dropout": 0.0, "attention_dropout": 0.0,
        "position_embedding_type": "rope", "rotary_base": float(rope_theta(hf_config)),
        **yarn_fields(rope_scaling(hf_config)),
        "bf16": dtype == "bfloat16", "fp16": dtype == "float16", "params_dtype": _bridge_object(f"torch.{dtype}"),
        "tensor_model_parallel_size": layout.get("tensor_parallel", 1),
        "pipeline_model_parallel_size": layout.get("pipeline_parallel", 1),
        "context_parallel_size": layout.get("context_parallel", 1), "make_vocab_size_divisible_by": 1,
    }
    return yaml.safe_dump({"model": model, "checkpoint": {"ckpt_format": FORMAT}}, sort_keys=False)


def _prune(root: Path, keep_last: int) -> None:
    for old in complete_steps(root)[:-keep_last]:
        shutil.rmtree(root / iter_dirname(old), ignore_errors=True)


def load_checkpoint(policy, root: str | Path, step: int | None = None, *, load_optimizer: bool = True,  # noqa: ANN001
                    config_hash: str | None = None) -> dict[str, Any]:
    """Load `step` (default: the latest complete one) into the policy at its current layout.

    `load_optimizer`: also the Adam moments, fp32 masters and step count (a resume). Without it only
    the weights load and the optimiser starts fresh at step 0, its LR schedule with it: the saved step
    count belongs to another phase (the SFT checkpoint RL starts from) and must not reach Adam's bias
    correction or the schedule. Call it on a freshly built policy (its optimiser has never stepped)."""
    from megatron.core import dist_checkpointing

    root = Path(root)
    step = latest_step(root) if step is None else step
    if step is None:
        raise CheckpointError(f"no complete checkpoint under {root} (looked for {LATEST} and iter_*/{MANIFEST})")
    manifest = read_manifest(root, step)
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{root / iter_dirname(step)}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if config_hash is not None and manifest.get("config_hash") != config_hash:
        log.warning("resuming %s saved with config %s under config %s", iter_dirname(step),
                    manifest.get("config_hash"), config_hash)
    if not load_optimizer and policy.optimizer.has_state():
        raise CheckpointError(f"load_optimizer=False into a policy whose optimiser has already stepped "
                              f"(step_count={policy.optimizer.step_count}): its Adam moments would outlive "
                              "the weights they belong to; build a fresh policy for a weights-only load")
    masters = manifest["optimizer"].get("has_master_params", False)
    state = _sharded_state(policy, loading=True, masters=masters)
    if not (load_optimizer and manifest["optimizer"]["has_state"]):
        state.pop("optimizer")
    from nemo_qwenlong.backends.megatron.safe_load import reading_checkpoint

    with reading_checkpoint(root / iter_dirname(step)):  # allow-listed unpickling only (docs/checkpoints.md)
        loaded = dist_checkpointing.load(state, str(root / iter_dirname(step)))
    missing, unexpected = policy.module.load_state_dict(loaded["model"], strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointError(f"{iter_dirname(step)} does not fit the model: missing {missing[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
    policy.optimizer.weights_loaded()
    if "optimizer" in loaded:
        _restore_optimizer(policy.optimizer, loaded["optimizer"], manifest["optimizer"]["step_count"])
    elif load_optimizer:  # saved before its first update: no moments, and the count it had
        policy.optimizer.step_count = manifest["optimizer"]["step_count"]
    else:  # weights only (SFT -> RL, a converted model): a fresh optimiser, its schedule at step 0
        policy.optimizer.step_count = 0
    return manifest


def _restore_optimizer(opt, loaded: dict[str, Any], step_count: int) -> None:  # noqa: ANN001
    if hasattr(opt, "megatron"):
        opt.megatron.load_state_dict(loaded)
        opt.step_count = step_count
        return
    tensors: dict[int, dict[str, torch.Tensor]] = {}
    masters: dict[int, torch.Tensor] = {}
    for name, tensor in loaded.items():
        key, index = name.rsplit(".", 1)
        if key == MASTER:
            masters[int(index)] = tensor
        else:
            tensors.setdefault(int(index), {})[key] = tensor
    opt.set_state_tensors(tensors, step_count)
    if masters:
        opt.set_master_tensors(masters)
