"""The `data` stage: training, validation and held-out items, and the SFT data's path.

With `data.synthetic.kind: tiny` it generates the tiny QA task (`data.tiny_task`) into the stage
folder; otherwise it loads `data.train_path` / `data.val_path` / `evaluation.heldout_path`. Either
way it reports the files, item counts and fingerprints, which the stage's `stage.json` keeps so a
resumed run can check that its data is the data it started with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.data.loaders import load_items, write_docqa_parquet
from nemo_qwenlong.data.schema import DocQAItem
from nemo_qwenlong.loops import dist
from nemo_qwenlong.loops.run_dir import STAGE_JSON, RunError, mark_done, stage_done

@dataclass
class PreparedData:
    train: list[DocQAItem]
    val: list[DocQAItem]
    heldout: list[DocQAItem]
    sft_path: str | None
    info: dict[str, Any]


def fingerprint(items: list[DocQAItem]) -> str:
    h = hashlib.sha1()
    for it in items:
        h.update(json.dumps([it.item_id, it.messages, it.ground_truth], sort_keys=True).encode())
    return h.hexdigest()[:16]


def generate_tiny(cfg: Any, out: Path) -> dict[str, str]:
    """Write the tiny task's files into `out`; returns their paths by role."""
    from nemo_qwenlong.data.sft import SFTExample, write_sft_jsonl
    from nemo_qwenlong.data.tiny_task import TinyTaskSpec, sft_response, tiny_items

    syn = cfg.data.synthetic
    train, val, heldout, sft = [], [], [], []
    for k, stage in enumerate(cfg.curriculum.stages):
        spec = TinyTaskSpec(syn.facts[k], *syn.filler[k], template=cfg.data.prompt_template)
        every = syn.choice_every
        train += tiny_items(syn.train_per_stage, seed=cfg.seed, spec=spec, split="train", band=stage.name,
                            choice_every=every)
        val += tiny_items(syn.val_per_stage, seed=cfg.seed + 10_000, spec=spec, split="heldout", band=stage.name,
                          choice_every=every)
        heldout += tiny_items(syn.heldout_per_stage, seed=cfg.seed, spec=spec, split="heldout", band=stage.name)
        per_stage = syn.sft_items // len(cfg.curriculum.stages)
        sft += tiny_items(per_stage, seed=cfg.seed + 20_000, spec=spec, split="train", band=stage.name,
                          choice_every=every)
    paths = {"train": out / "train.parquet", "val": out / "val.parquet", "heldout": out / "heldout.parquet",
             "sft": out / "sft.jsonl"}
    for role, items in (("train", train), ("val", val), ("heldout", heldout)):
        write_docqa_parquet(items, paths[role])
    write_sft_jsonl((SFTExample(it.messages, sft_response(it)) for it in sft), paths["sft"])
    return {k: str(v) for k, v in paths.items()}


def _load(path: str | None, fmt: str, skip_invalid: bool, template: str) -> list[DocQAItem]:
    if not path:
        return []
    items, _ = load_items(path, fmt, skip_invalid=skip_invalid, template=template)  # type: ignore[arg-type]
    return items


def prepare(cfg: Any, stage_dir: Path) -> PreparedData:
    """Run (or re-read) the data stage into `stage_dir`."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data.synthetic.kind == "tiny":
        files = generate_tiny(cfg, stage_dir)
        fmt = "docqa_parquet"
    else:
        files = {"train": cfg.data.train_path, "val": cfg.data.val_path,
                 "heldout": cfg.evaluation.heldout_path or cfg.data.val_path, "sft": cfg.sft.train_path}
        fmt = cfg.data.format
    # the items' messages (so the data fingerprint and the cached prompt lengths) follow data.prompt_template
    train, val, heldout = (_load(files[role], fmt, cfg.data.skip_invalid, cfg.data.prompt_template)
                           for role in ("train", "val", "heldout"))
    info = {"files": files, "counts": {"train": len(train), "val": len(val), "heldout": len(heldout)},
            "fingerprint": {"train": fingerprint(train), "val": fingerprint(val), "heldout": fingerprint(heldout)}}
    return PreparedData(train, val, heldout, files.get("sft"), info)


def run_data_stage(run: Any) -> PreparedData:
    """The `data` stage of `run` (`loops.pipeline.Run`): prepared on rank 0, shared with every rank; a
    resumed run must find the data it started with."""
    folder = run.dirs.get("data", run.run_dir / "data")
    data = prepare(run.cfg, folder) if dist.is_rank0() else None
    data = dist.broadcast(data)
    done = stage_done(folder)
    if done and done["fingerprint"] != data.info["fingerprint"]:
        raise RunError(f"the data differs from the data this run started with ({folder / STAGE_JSON}: "
                       f"{done['fingerprint']}, now {data.info['fingerprint']}); start a new run")
    if not done:
        mark_done(folder, data.info)
        run.console.line(f"data: {data.info['counts']}")
    return data
