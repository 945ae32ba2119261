"""HF ⇄ Megatron checkpoint conversion for Qwen2, streamed one tensor group at a time.

`hf_to_megatron_checkpoint`: HF folder -> `<out>/iter_0000000/` (torch_dist shards chunked as a
TP=`tp` run writes them, Megatron-Bridge `run_config.yaml`, our manifest, `tokenizer/`) plus the
"latest" pointer files. `megatron_to_hf_checkpoint`: any of our Megatron checkpoints (converter
output or a training checkpoint, at any layout) -> a servable HF folder (sharded safetensors with
an index, config.json with both rope layouts and optional YaRN, tokenizer, generation config).

Both write into a hidden temp folder beside the output and rename it at the end, so a failure
leaves no half-written output; an existing non-empty output folder is refused. Peak memory is one
group (the embedding, or one layer) plus the safetensors buffer, not the model.
torch_dist is layout-independent (any TP/PP loads it); `tp`/`pp` choose how tensors are chunked,
are validated against the model, and are recorded for Megatron-Bridge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from nemo_qwenlong.backends.hf.checkpoint import (
    CheckpointFormatError,
    HFCheckpoint,
    cast,
    check_qwen2_config,
    copy_tokenizer_files,
    dtype_name,
    export_config,
    generation_config,
    import_config,
    read_json,
    write_sharded_safetensors,
)
from nemo_qwenlong.backends.megatron import checkpoint as ckpt
from nemo_qwenlong.backends.megatron.dist_ckpt_stream import (
    extra_state_objects,
    load_group,
    save_groups,
    sharded_tensors,
    tensor_metadata,
)
from nemo_qwenlong.backends.megatron.parallel import single_process_group
from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, iter_hf_to_megatron, iter_megatron_to_hf, padded_vocab

log = logging.getLogger(__name__)
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class ConversionReport:
    out: Path
    tensors: int
    seconds: float
    peak_rss_mb: float
    dtype: str = ""  # e.g. "float32 (the checkpoint's dtype)" or "bfloat16 (--dtype)"

    def line(self) -> str:
        weights = f", weights {self.dtype}" if self.dtype else ""
        return (f"wrote {self.out} ({self.tensors} tensors{weights}) in {self.seconds:.1f} s, "
                f"peak RSS {self.peak_rss_mb:.0f} MB")


def dtype_note(requested: str | None, stored: str) -> str:
    """What the output holds and why: the requested dtype, or the source's kept."""
    return f"{requested} (--dtype)" if requested else f"{stored} (the checkpoint's dtype)"


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A temp folder beside `out`, renamed to `out` on success and removed on failure."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output {out} exists and is not an empty folder; choose a new path or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run (SIGKILL skips cleanup)
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            log.warning("removing %s left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_layout(cfg: dict, tp: int, pp: int) -> None:
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    for what, value, size in (("num_key_value_heads", kv, tp), ("num_attention_heads", heads, tp),
                              ("intermediate_size", cfg["intermediate_size"], tp),
                              ("num_hidden_layers", cfg["num_hidden_layers"], pp)):
        if tp < 1 or pp < 1 or value % size:
            raise CheckpointFormatError(f"{what}={value} is not divisible by the requested "
                             f"{'tp' if what != 'num_hidden_layers' else 'pp'}={size}")


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="group", disable=not os.isatty(2))


def hf_to_megatron_checkpoint(hf_dir: str | Path, out_dir: str | Path, *, tp: int = 1, pp: int = 1,
                              dtype: str | None = None, keep_rope_scaling: bool = False) -> ConversionReport:
    """Convert an HF Qwen2 folder into a Megatron torch_dist checkpoint at step 0 (see module doc)."""
    started = time.perf_counter()
    src = HFCheckpoint(hf_dir)
    source_dtype = src.stored_dtype()
    cfg = import_config(src.config, keep_rope_scaling=keep_rope_scaling)
    _check_layout(cfg, tp, pp)
    vocab = cfg["vocab_size"]
    padded = padded_vocab(vocab, tp)
    if padded != vocab:
        log.warning("vocabulary %d padded to %d rows to split over tp=%d", vocab, padded, tp)
    shape = Qwen2Shape.from_hf_config(cfg, padded_vocab_size=padded)
    count = 0
    with staged_output(Path(out_dir)) as tmp, single_process_group():
        iter_dir = tmp / ckpt.iter_dirname(0)
        iter_dir.mkdir()
        bar = _progress(shape.num_layers + 2, "hf→megatron")

        def groups():
            nonlocal count
            for layer, tensors in iter_hf_to_megatron(lambda n: cast(src.get(n), dtype), shape):
                items = [sh for name, t in tensors.items() for sh in sharded_tensors(name, t, shape, tp)]
                if layer is not None:
                    items += extra_state_objects(layer, shape)
                count += len(tensors)
                yield items
                bar.update()

        save_groups(groups(), iter_dir)
        bar.close()
        layout = {"tensor_parallel": tp, "pipeline_parallel": pp, "context_parallel": 1, "data_parallel": 1}
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]
        ckpt.write_iteration_files(iter_dir, step=0, config_hash=digest, layout=layout, hf_config=cfg,
                                   dtype=dtype or source_dtype,
                                   optimizer={"kind": None, "step_count": 0, "has_state": False},
                                   extra={"source": str(Path(hf_dir).resolve()), "source_dtype": source_dtype,
                                          "padded_vocab_size": padded})
        copied = copy_tokenizer_files(src.dir, iter_dir / TOKENIZER_DIR)
        if "tokenizer.json" not in copied and "vocab.json" not in copied:
            log.warning("%s has no tokenizer files; the checkpoint carries none", src.dir)
        ckpt.write_pointers(tmp, 0)
    return ConversionReport(Path(out_dir), count, time.perf_counter() - started, _peak_rss_mb(),
                            dtype_note(dtype, source_dtype))


def resolve_iteration(path: str | Path, step: int | None = None) -> Path:
    """An `iter_NNNNNNN` folder: `path` itself, or the requested/latest one under a checkpoint root."""
    path = Path(path)
    if (path / ckpt.MANIFEST).is_file():
        return path
    chosen = ckpt.latest_step(path) if step is None else step
    if chosen is None or not (path / ckpt.iter_dirname(chosen) / ckpt.MANIFEST).is_file():
        steps = ckpt.complete_steps(path) if path.is_dir() else []
        if steps:  # a step that is not there: say which are
            raise CheckpointFormatError(f"{path}: no complete checkpoint at step {chosen}; accepted: the "
                                        f"complete steps here, {', '.join(map(str, steps))} (or no step: the "
                                        "latest)")
        raise CheckpointFormatError(f"{path}: no complete nemo_qwenlong Megatron checkpoint "
                                    f"(step {chosen}; looked for iter_*/{ckpt.MANIFEST})")
    return path / ckpt.iter_dirname(chosen)


def megatron_to_hf_checkpoint(megatron_dir: str | Path, out_dir: str | Path, *, step: int | None = None,
                              yarn_factor: float | None = None, yarn_original_max: int = 32768,
                              dtype: str | None = None, max_shard_bytes: int = 4 * 2**30) -> ConversionReport:
    """Export a Megatron checkpoint as an HF folder vLLM and transformers load (see module doc).
    `dtype` None keeps the stored weights' dtype (bit-exact); a name casts every tensor to it."""
    started = time.perf_counter()
    iter_dir = resolve_iteration(megatron_dir, step)
    manifest = read_json(iter_dir / ckpt.MANIFEST)
    cfg = manifest.get("hf_config") if isinstance(manifest, dict) else None
    check_qwen2_config(cfg, str(iter_dir / ckpt.MANIFEST))
    with staged_output(Path(out_dir)) as tmp, single_process_group():
        meta = tensor_metadata(iter_dir)
        rows = tuple(meta["embedding.word_embeddings.weight"].global_shape)[0]
        stored = dtype_name(meta["embedding.word_embeddings.weight"].dtype)
        shape = Qwen2Shape.from_hf_config(cfg, padded_vocab_size=rows)
        groups = {name: [e.at(layer)[0] for e in entries] for layer, entries in shape.groups()
                  for name in (e.at(layer)[0] for e in entries)}
        cache: dict = {}
        bar = _progress(shape.num_layers + 2, "megatron→hf")

        def get(name: str):
            if name not in cache:
                cache.clear()
                cache.update(load_group(iter_dir, groups[name], meta, shape))
                bar.update()
            return cache.pop(name)

        written = write_hf_folder(tmp, iter_megatron_to_hf(get, shape), cfg, shape, tokenizer_dir=iter_dir / TOKENIZER_DIR,
                                  dtype=dtype, yarn_factor=yarn_factor, yarn_original_max=yarn_original_max,
                                  max_shard_bytes=max_shard_bytes)
        bar.close()
    return ConversionReport(Path(out_dir), written, time.perf_counter() - started, _peak_rss_mb(),
                            dtype_note(dtype, stored))


def write_hf_folder(folder: Path, hf_tensors: Iterable[tuple[str, Tensor]], hf_config: dict, shape: Qwen2Shape, *,
                    tokenizer_dir: Path, dtype: str | None, yarn_factor: float | None = None,
                    yarn_original_max: int = 32768, max_shard_bytes: int = 4 * 2**30) -> int:
    """An HF folder vLLM and transformers load: sharded safetensors (a tied lm_head is left to the
    embedding), config.json (YaRN when asked), tokenizer files, generation_config.json. Returns the
    number of safetensors files. Used by the converter and by `run`'s export of the live policy.
    `dtype` None writes each tensor as it comes; config.json then names the first tensor's dtype."""
    seen: list[str] = []

    def tensors() -> Iterator[tuple[str, Tensor]]:
        for name, t in hf_tensors:
            if not (name == "lm_head.weight" and shape.tie_word_embeddings):
                out = cast(t, dtype)
                if not seen:
                    seen.append(dtype_name(out.dtype))
                yield name, out

    written, _ = write_sharded_safetensors(tensors(), folder, max_shard_bytes)
    out_cfg = export_config(hf_config, yarn_factor=yarn_factor, yarn_original_max=yarn_original_max)
    if dtype or seen:
        out_cfg["torch_dtype"] = out_cfg["dtype"] = dtype or seen[0]  # transformers 4.x and 5.x names
    (folder / "config.json").write_text(json.dumps(out_cfg, indent=2) + "\n")
    copy_tokenizer_files(tokenizer_dir, folder)
    if not (folder / "generation_config.json").is_file():
        (folder / "generation_config.json").write_text(json.dumps(generation_config(hf_config), indent=2) + "\n")
    return written
