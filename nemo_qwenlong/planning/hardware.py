"""The GPUs and models the planner knows, and the assumptions its estimates rest on (docs/plan.md).

GPU figures are NVIDIA's datasheet numbers for the SXM parts (dense bf16 tensor-core peak, HBM
bandwidth) and the memory `nvidia-smi` reports (H100 80 GB: 81,559 MiB; H200 141 GB: 143,771 MiB).
Model geometries are the published `config.json`s (all untied); the R1-Distill-Qwen-1.5B/7B/14B/32B
entries let a recipe whose weights are not on this machine be planned and checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nemo_qwenlong.planning.memory import R1_DISTILL_QWEN_32B, Geometry

MIB = 2**20


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_bytes: float
    bf16_flops: float  # dense peak, FLOP/s
    hbm_bytes_per_s: float


GPUS = {
    "h100": Gpu("H100 80 GB", 81_559 * MIB, 989e12, 3.35e12),
    "h200": Gpu("H200 141 GB", 143_771 * MIB, 989e12, 4.8e12),
}


@dataclass(frozen=True)
class Assumptions:
    """What the estimates assume; each is a `plan` option (docs/plan.md says why these values)."""

    train_mfu: float = 0.35  # training model-FLOPs utilisation at 60K+ tokens with TP=8, CP=4
    prefill_mfu: float = 0.5  # vLLM prefill (compute-bound) utilisation
    decode_bandwidth: float = 0.7  # share of HBM bandwidth a decode step achieves
    reserve_gib: float = 5.0  # CUDA context, NCCL/CP buffers, allocator fragmentation, per GPU
    engine_asleep_gib: float = 0.5  # what a vLLM engine keeps after sleep(level=2)
    graph_reserve_gib: float = 1.0  # vLLM CUDA graphs and sampler buffers
    max_num_seqs: int = 256  # vLLM's scheduler cap on running sequences per engine
    generation_rounds: int = 1  # dynamic-sampling rounds per step (more when few groups are mixed)


KNOWN_MODELS = {
    "deepseek-r1-distill-qwen-32b": R1_DISTILL_QWEN_32B,
    "qwenlong-l1-32b": R1_DISTILL_QWEN_32B,
    "deepseek-r1-distill-qwen-14b": Geometry(layers=48, hidden=5120, ffn=13824, heads=40, kv_heads=8, head_dim=128,
                                             vocab=152064),
    "deepseek-r1-distill-qwen-7b": Geometry(layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4, head_dim=128,
                                            vocab=152064),
    "deepseek-r1-distill-qwen-1.5b": Geometry(layers=28, hidden=1536, ffn=8960, heads=12, kv_heads=2, head_dim=128,
                                              vocab=151936),
}

# max_position_embeddings of every R1-Distill-Qwen (and QwenLong-L1-32B) config.json: plain RoPE, rope_theta 1e6,
# no rope_scaling (spec §7); YaRN's `original_max_position_embeddings` for them is Qwen2.5's 32,768.
KNOWN_MODEL_POSITIONS = 131_072


def geometry_from_hf_config(cfg: dict) -> Geometry:
    """A Geometry from an HF Qwen2 `config.json` mapping."""
    heads = cfg["num_attention_heads"]
    return Geometry(layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], ffn=cfg["intermediate_size"],
                    heads=heads, kv_heads=cfg.get("num_key_value_heads", heads),
                    head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, vocab=cfg["vocab_size"],
                    tied=bool(cfg.get("tie_word_embeddings", False)))


def known_geometry(path: str | None) -> Geometry | None:
    """The geometry of a model named by its folder (`/models/DeepSeek-R1-Distill-Qwen-32B`), if known."""
    if not path:
        return None
    return KNOWN_MODELS.get(Path(path.rstrip("/")).name.lower())


def geometry_of(source: str, path: str | None, tiny: dict, named: str | None = None) -> Geometry | None:
    """A configured model's geometry without reading files: `model.tiny` for the tiny random model,
    else `model.geometry` (`named`), else the known geometry of the folder's name; None when unknown.
    A `named` geometry that contradicts a known folder name is a ValueError."""
    if source == "tiny-random":
        return geometry_from_hf_config(tiny)
    by_path = known_geometry(path)
    if named is None:
        return by_path
    if by_path is not None and by_path != KNOWN_MODELS[named]:
        raise ValueError(f"model.geometry={named!r} does not match model.path={path!r}, which names another known "
                         "model; set model.geometry to that model or null")
    return KNOWN_MODELS[named]


def known_positions(source: str, path: str | None, named: str | None) -> int | None:
    """The positions a real model's config allows, without reading files: a known R1-Distill model's
    131,072; None when the model is not known (or is the tiny random one)."""
    if source == "tiny-random" or (named is None and known_geometry(path) is None):
        return None
    return KNOWN_MODEL_POSITIONS
