"""Hugging Face checkpoint folders: lazy, validated reading and sharded streaming writing.

Reading (`HFCheckpoint`): `config.json` must describe a Qwen2 causal LM; weights come from
`model.safetensors` or the shards an index names. Every tensor is opened lazily (`get`), so a
converter holds one group of tensors at a time, never the model. Missing shard files, shard files
the index does not name, tensors missing for the config, and shapes that disagree with it are
errors that name the file or tensor.

Writing (`write_sharded_safetensors`): tensors are grouped up to `max_shard_bytes`, each shard is
written as soon as it is full, then renamed to `model-0000k-of-0000n.safetensors` beside
`model.safetensors.index.json`.

Rope fields (`export_config`): transformers 4.x reads top-level `rope_theta` / `rope_scaling`,
5.x reads `rope_parameters`, and each silently ignores the other's, so exported configs carry
both. YaRN is added only on export (with `max_position_embeddings = factor × original`, which
vLLM needs to serve the longer context); `import_config` strips rope scaling unless asked.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

log = logging.getLogger(__name__)
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")
QWEN2_ARCH = "Qwen2ForCausalLM"
SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


class CheckpointFormatError(ValueError):
    """A checkpoint folder that cannot be converted; the message names the file, tensor or field."""


def read_json(path: str | Path) -> Any:
    """A JSON file, or a CheckpointFormatError naming the file and the parse error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointFormatError(f"{path}: not valid JSON ({exc})") from None


@contextmanager
def open_safetensors(path: Path) -> Iterator[Any]:
    """`safe_open`, a truncated or corrupted file reported as a CheckpointFormatError naming it."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            yield _CheckedSafetensors(fh, path)
    except (SafetensorError, OSError) as exc:
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({exc})") from None


class _CheckedSafetensors:
    """A safe_open handle whose tensor reads report a corrupted file by name (the header may be intact)."""

    def __init__(self, fh: Any, path: Path) -> None:
        self._fh, self._path = fh, path

    def keys(self) -> list[str]:
        return list(self._fh.keys())

    def get_slice(self, name: str) -> Any:
        return self._fh.get_slice(name)

    def get_tensor(self, name: str) -> Tensor:
        try:
            return self._fh.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointFormatError(f"{self._path}: tensor {name} cannot be read ({exc})") from None


def expected_hf_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor a Qwen2ForCausalLM with this config has, with its shape."""
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    d = cfg.get("head_dim") or h // heads
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                   p + "self_attn.q_proj.weight": (heads * d, h), p + "self_attn.q_proj.bias": (heads * d,),
                   p + "self_attn.k_proj.weight": (kv * d, h), p + "self_attn.k_proj.bias": (kv * d,),
                   p + "self_attn.v_proj.weight": (kv * d, h), p + "self_attn.v_proj.bias": (kv * d,),
                   p + "self_attn.o_proj.weight": (h, heads * d), p + "mlp.gate_proj.weight": (f, h),
                   p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)}
    return shapes


def check_qwen2_config(cfg: dict, where: str) -> None:
    if not isinstance(cfg, dict):
        raise CheckpointFormatError(f"{where}: expected a JSON object with the model config, got {type(cfg).__name__}")
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "qwen2" or (archs and QWEN2_ARCH not in archs):
        raise CheckpointFormatError(
            f"{where}: model_type={cfg.get('model_type')!r}, architectures={archs}; only Qwen2 "
            f"(model_type 'qwen2', {QWEN2_ARCH}: R1-Distill-Qwen, Qwen2/2.5) is supported")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
            raise CheckpointFormatError(f"{where}: field {key}={cfg.get(key)!r} must be a positive integer")


class HFCheckpoint:
    """A validated HF Qwen2 folder whose tensors are read one at a time."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        cfg_path = self.dir / "config.json"
        if not cfg_path.is_file():
            raise CheckpointFormatError(f"{self.dir}: no config.json (not a Hugging Face model folder)")
        self.config: dict = read_json(cfg_path)
        check_qwen2_config(self.config, str(cfg_path))
        self.weight_map = self._weight_map()
        self._check_tensors(self._header_shapes())

    def _weight_map(self) -> dict[str, str]:
        on_disk = {p.name for p in self.dir.glob("*.safetensors")}
        index = self.dir / INDEX
        if index.is_file():
            index_data = read_json(index)
            weight_map = (index_data.get("weight_map") if isinstance(index_data, dict) else None) or {}
            named = set(weight_map.values())
            if missing := sorted(named - on_disk):
                raise CheckpointFormatError(f"{index}: names shard files that are missing: {missing}")
            if extra := sorted(on_disk - named):
                raise CheckpointFormatError(f"{self.dir}: shard files the index does not name: {extra} "
                                            "(a partial copy or a mix of two checkpoints?)")
            return weight_map
        if on_disk == {SINGLE}:
            with open_safetensors(self.dir / SINGLE) as fh:
                return {k: SINGLE for k in fh.keys()}
        raise CheckpointFormatError(f"{self.dir}: expected {INDEX} or a single {SINGLE}, found {sorted(on_disk)}")

    def _header_shapes(self) -> dict[tuple[str, str], tuple[int, ...]]:
        """(file, tensor) -> shape, from the safetensors headers only."""
        shapes = {}
        for f in sorted(set(self.weight_map.values())):
            with open_safetensors(self.dir / f) as fh:
                shapes |= {(f, k): tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        return shapes

    def _check_tensors(self, shapes: dict[tuple[str, str], tuple[int, ...]]) -> None:
        expected = expected_hf_shapes(self.config)
        expected_names = set(expected)
        if self.config.get("tie_word_embeddings"):
            expected_names |= {"lm_head.weight"} & set(self.weight_map)  # tied checkpoints may carry it
        if missing := sorted(expected_names - set(self.weight_map)):
            raise CheckpointFormatError(f"{self.dir}: tensors missing for the config: {missing[:5]} ({len(missing)} in all)")
        if extra := sorted(set(self.weight_map) - expected_names):
            raise CheckpointFormatError(f"{self.dir}: tensors the Qwen2 config does not have: {extra[:5]} ({len(extra)})")
        for name, want in expected.items():
            got = shapes.get((self.weight_map[name], name))
            if got is None:
                raise CheckpointFormatError(f"{self.dir / self.weight_map[name]}: the index places {name} here, "
                                            "but the file does not hold it")
            if got != want:
                raise CheckpointFormatError(f"{self.dir / self.weight_map[name]}: {name} has shape {list(got)}, "
                                            f"the config implies {list(want)}")

    def stored_dtype(self) -> str:
        """The weights' dtype as stored (the embedding's, from the safetensors header; nothing is read)."""
        name = "model.embed_tokens.weight"
        with open_safetensors(self.dir / self.weight_map[name]) as fh:
            code = fh.get_slice(name).get_dtype()
        if code not in SAFETENSORS_DTYPES:
            raise CheckpointFormatError(f"{self.dir}: {name} is stored as {code}; "
                                        f"accepted: {sorted(SAFETENSORS_DTYPES)}")
        return SAFETENSORS_DTYPES[code]

    def get(self, name: str) -> Tensor:
        """One tensor, copied out; the file is unmapped again at once, so the pages it touched do not
        stay resident (holding every shard open would grow RSS to the model's size)."""
        with open_safetensors(self.dir / self.weight_map[name]) as fh:
            return fh.get_tensor(name)


def write_sharded_safetensors(named: Iterable[tuple[str, Tensor]], folder: Path,
                              max_shard_bytes: int = 4 * 2**30) -> tuple[int, int]:
    """Stream (name, tensor) pairs into `model-0000k-of-0000n.safetensors` shards of at most
    `max_shard_bytes` (one tensor may exceed it) plus the index; returns (tensors, bytes)."""
    from safetensors.torch import save_file

    from nemo_qwenlong.algorithms.packing import budget_groups, tensor_bytes

    files: list[tuple[str, list[str]]] = []
    total = 0
    for group in budget_groups(named, tensor_bytes, max_shard_bytes):
        name = f"part-{len(files):05d}.safetensors"  # final names need the shard count: renamed below
        save_file({k: t.contiguous() for k, t in group}, str(folder / name), metadata={"format": "pt"})
        files.append((name, [k for k, _ in group]))
        total += sum(map(tensor_bytes, group))
    weight_map = {}
    for k, (tmp, names) in enumerate(files, start=1):
        final = f"model-{k:05d}-of-{len(files):05d}.safetensors"
        (folder / tmp).rename(folder / final)
        weight_map |= {t: final for t in names}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return len(weight_map), total


def rope_theta(cfg: dict) -> float:
    """RoPE base from either transformers layout (4.x `rope_theta`, 5.x `rope_parameters`)."""
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def rope_scaling(cfg: dict) -> dict | None:
    """Rope scaling from either layout; None for plain RoPE."""
    params = cfg.get("rope_parameters") or {}
    if params.get("rope_type") not in (None, "default"):
        return {k: v for k, v in params.items() if k != "rope_theta"}
    scaling = cfg.get("rope_scaling")
    return scaling or None


def import_config(cfg: dict, *, keep_rope_scaling: bool = False) -> dict:
    """The config the Megatron side trains with: rope scaling stripped unless asked (training at
    70K tokens needs none; a YaRN config would silently switch training to YaRN)."""
    scaling = rope_scaling(cfg)
    if scaling and not keep_rope_scaling:
        log.warning("dropping rope scaling %s from the imported config (pass keep_rope_scaling to keep it)", scaling)
        scaling = None
    return _with_rope(dict(cfg), rope_theta(cfg), scaling)


def export_config(cfg: dict, *, yarn_factor: float | None = None, yarn_original_max: int = 32768) -> dict:
    """config.json for serving: both rope layouts; YaRN only when `yarn_factor` is given."""
    out = dict(cfg)
    scaling = rope_scaling(cfg)
    if yarn_factor is not None:
        if yarn_factor <= 1:
            raise ValueError(f"yarn factor must be > 1, got {yarn_factor}")
        scaling = {"rope_type": "yarn", "factor": float(yarn_factor),
                   "original_max_position_embeddings": int(yarn_original_max)}
        out["max_position_embeddings"] = int(yarn_factor * yarn_original_max)
    out.setdefault("architectures", [QWEN2_ARCH])
    return _with_rope(out, rope_theta(cfg), scaling)


def _with_rope(cfg: dict, theta: float, scaling: dict | None) -> dict:
    out = {k: v for k, v in cfg.items() if k not in ("rope_scaling", "rope_parameters", "rope_theta")}
    out["rope_theta"] = theta
    if scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        out["rope_scaling"] = {**{k: v for k, v in scaling.items() if k != "type"}, "rope_type": kind, "type": kind}
        out["rope_parameters"] = {**{k: v for k, v in scaling.items() if k != "type"}, "rope_type": kind,
                                  "rope_theta": theta}
    else:
        out["rope_scaling"] = None
        out["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    return out


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    """Tokenizer files and generation_config.json present in `src`, copied into `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def generation_config(cfg: dict) -> dict[str, Any]:
    """A minimal generation_config.json when the source had none (token ids from config.json)."""
    out: dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    return out


def cast(tensor: Tensor, dtype: str | None) -> Tensor:
    return tensor if dtype is None else tensor.to(getattr(torch, dtype))


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> "bfloat16" (the name config.json and our CLI use)."""
    return str(dtype).removeprefix("torch.")
