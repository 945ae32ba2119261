"""Building the real objects a run needs from its config: model files, the Megatron policy, the
rollout engine, the reward, HF exports. Heavy imports happen inside the functions (backends only).

Layout under the run directory:
    model/hf_init/          the starting HF folder (tiny-random: built here; hf: model.path's copy is not made)
    model/megatron_init/    the starting Megatron checkpoint (converted once, by rank 0)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.loops import dist

log = logging.getLogger(__name__)
TOKENIZER_FILES_DIR = "tokenizer"


@dataclass
class ModelFiles:
    hf_dir: Path  # tokenizer + architecture the engine starts from
    megatron_dir: Path  # the starting weights
    manifest: dict[str, Any]


def _tiny_tokenizer(cfg: Any, out: Path):  # noqa: ANN202
    from nemo_qwenlong.backends.hf.tiny import build_tiny_tokenizer

    if cfg.data.synthetic.kind == "tiny":
        from nemo_qwenlong.data.tiny_task import tokenizer_corpus, tokenizer_extra_tokens

        return build_tiny_tokenizer(out, vocab_size=min(cfg.model.tiny.vocab_size, 512), corpus=tokenizer_corpus(),
                                    extra_tokens=tokenizer_extra_tokens())
    return build_tiny_tokenizer(out, vocab_size=min(cfg.model.tiny.vocab_size, 512))


def prepare_model_files(cfg: Any, run_dir: Path) -> ModelFiles:
    """The starting HF and Megatron folders (made once, on rank 0; reused on resume)."""
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.backends.megatron.convert import hf_to_megatron_checkpoint, megatron_to_hf_checkpoint

    root = run_dir / "model"
    hf_dir, meg_dir = root / "hf_init", root / "megatron_init"
    if dist.is_rank0():
        if cfg.model.source == "tiny-random" and not (hf_dir / "config.json").is_file():
            from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2

            build_tiny_qwen2(hf_dir, cfg.model.tiny, seed=cfg.seed, tokenizer=_tiny_tokenizer(cfg, hf_dir))
        if cfg.model.source == "hf":
            hf_dir = Path(cfg.model.path)
        if cfg.model.source == "megatron":
            meg_dir = Path(cfg.model.path)
            if not (hf_dir / "config.json").is_file():
                print(megatron_to_hf_checkpoint(meg_dir, hf_dir, dtype=cfg.model.dtype).line())
        elif ckpt.latest_step(meg_dir) is None:
            if dist.world() == 1:
                print(hf_to_megatron_checkpoint(hf_dir, meg_dir).line())
            else:  # the converter's dist_checkpointing saves are collective: give it a world of its own
                _convert_in_subprocess(hf_dir, meg_dir)
    hf_dir, meg_dir = dist.broadcast((hf_dir, meg_dir))
    step = ckpt.latest_step(meg_dir)
    return ModelFiles(hf_dir, meg_dir, ckpt.read_manifest(meg_dir, step))


def _convert_in_subprocess(hf_dir: Path, meg_dir: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT",
                                                             "MASTER_ADDR", "GROUP_RANK", "LOCAL_WORLD_SIZE")}
    cmd = [sys.executable, "-m", "nemo_qwenlong.cli.main", "convert", "hf-to-megatron", "--hf", str(hf_dir),
           "--out", str(meg_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"converting {hf_dir} to {meg_dir} failed: {done.stderr[-2000:]}")


def schedule_steps(cfg: Any, phase: str, phase_steps: int) -> int:
    """Optimiser steps in `phase_steps` steps of `phase`: the length of its LR schedule, which
    advances once per optimiser step. An SFT step is one optimiser step (its micro-batches
    accumulate gradients); an RL step makes `updates_per_rollout` (epochs × mini-batches: 4 with
    the released batch sizes), at most: a partial dynamic-sampling batch may make fewer."""
    if phase == "sft":
        return phase_steps
    if phase == "rl":
        from nemo_qwenlong.loops.rl import updates_per_rollout

        return phase_steps * updates_per_rollout(cfg.rl)
    raise ValueError(f"phase={phase!r} is not one of ('sft', 'rl')")


def build_policy(cfg: Any, files: ModelFiles, *, phase: str, phase_steps: int):  # noqa: ANN201
    """The phase's policy. `phase_steps`: in the phase's own steps (SFT or RL); `schedule_steps`
    turns them into the optimiser steps its LR schedule spans."""
    from nemo_qwenlong.backends.megatron.policy import MegatronPolicy

    hf_config = training_hf_config(files.manifest["hf_config"], cfg.model.yarn)
    return MegatronPolicy.from_run_config(cfg, hf_config, phase=phase,
                                          total_steps=schedule_steps(cfg, phase, phase_steps),
                                          padded_vocab_size=files.manifest.get("padded_vocab_size"))


def load_weights(policy: Any, root: Path, *, optimizer: bool, config_hash: str | None = None) -> dict[str, Any]:
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt

    return ckpt.load_checkpoint(policy, root, load_optimizer=optimizer, config_hash=config_hash)


def build_engine(cfg: Any, hf_dir: Path):  # noqa: ANN201
    """The rollout engine. vLLM: on every rank, R = world / rollout.tensor_parallel replicas
    (`rollout.replicas.EngineReplicas`; one rank: the in-process engine itself); building it is
    collective. The transformers reference: rank 0 only (None elsewhere)."""
    hf_config = json.loads((hf_dir / "config.json").read_text())
    overrides = engine_rope_overrides(hf_config, cfg.model.yarn)
    if cfg.rollout.backend == "vllm":
        from nemo_qwenlong.backends.vllm.engine import VLLMGenerator
        from nemo_qwenlong.rollout.replicas import EngineReplicas, ReplicaLayout

        # several ranks: refuses a T that does not divide them (`run` checks it before any stage already)
        layout = ReplicaLayout(dist.world(), dist.rank(), cfg.rollout.tensor_parallel) if dist.world() > 1 else None
        max_len = (overrides or hf_config).get("max_position_embeddings", 32768)
        engine = VLLMGenerator.from_rollout_config(hf_dir, cfg.rollout, dtype=cfg.model.dtype, max_model_len=max_len,
                                                   seed=cfg.seed, hf_overrides=overrides)
        return engine if layout is None else EngineReplicas(engine, layout, dist)
    if not dist.is_rank0():
        return None
    import torch

    from nemo_qwenlong.backends.hf.generator import HFGenerator

    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"  # the trainer's device
    return HFGenerator(hf_dir, dtype=cfg.model.dtype, config_overrides=overrides, device=device)


def training_hf_config(hf_config: dict, yarn: Any) -> dict:
    """The config the policy trains with: `model.yarn` adds YaRN (the rope the rollout engine uses, so
    trainer and engine log-probs agree beyond the original context); null keeps the checkpoint's."""
    if yarn is None:
        return hf_config
    from nemo_qwenlong.backends.hf.checkpoint import export_config

    return export_config(hf_config, yarn_factor=yarn.factor, yarn_original_max=yarn.original_max_position_embeddings)


def engine_rope_overrides(hf_config: dict, yarn: Any) -> dict | None:
    """The rollout engine's config overrides for `model.yarn` (rope parameters and the scaled
    max_position_embeddings, which is also its max_model_len); None without YaRN."""
    if yarn is None:
        return None
    from nemo_qwenlong.backends.hf.checkpoint import rope_theta
    from nemo_qwenlong.backends.vllm.server import yarn_overrides

    return yarn_overrides(yarn.factor, yarn.original_max_position_embeddings, rope_theta(hf_config))


def load_tokenizer(hf_dir: Path):  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=False)


def tokenizer_files(hf_dir: Path) -> dict[str, str]:
    """The tokenizer's text files, to be stored inside every checkpoint (`tokenizer/`)."""
    from nemo_qwenlong.backends.hf.checkpoint import TOKENIZER_FILES

    return {f"{TOKENIZER_FILES_DIR}/{n}": (hf_dir / n).read_text(encoding="utf-8")
            for n in TOKENIZER_FILES if (hf_dir / n).is_file()}


def export_hf(cfg: Any, policy: Any, hf_src: Path, out: Path) -> Path:
    """The policy's current weights as an HF folder vLLM serves (collective: the TP gathers run on
    every rank; rank 0 writes), the same files as `convert megatron-to-hf` (`write_hf_folder`)."""
    from nemo_qwenlong.backends.megatron.convert import staged_output, write_hf_folder

    tensors = policy.state_dict_for_refit()
    if not dist.is_rank0():
        for _ in tensors:
            pass
        dist.barrier()
        return out
    yarn = cfg.model.yarn
    with staged_output(out) as tmp:
        write_hf_folder(tmp, tensors, policy.hf_config, policy.shape, tokenizer_dir=hf_src, dtype=cfg.model.dtype,
                        yarn_factor=yarn.factor if yarn else None,
                        yarn_original_max=yarn.original_max_position_embeddings if yarn else 32768)
    dist.barrier()
    return out


def hf_tensors(hf_dir: Path):  # noqa: ANN201
    """(name, tensor) from an HF folder's safetensors, one tensor at a time (for refitting an engine:
    every engine replica's rank reads them, so none holds a whole shard file)."""
    from safetensors import safe_open

    for path in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                yield name, f.get_tensor(name)
