"""`nemo-qwenlong plan RECIPE`: per-GPU memory and step-time estimate of a recipe (docs/plan.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nemo_qwenlong.cli.common import above, add_recipe_args, at_least, positive_int, recipe_args
from nemo_qwenlong.cli.errors import CommandError
from nemo_qwenlong.config import check_runnable, load_config
from nemo_qwenlong.planning.hardware import GPUS, Assumptions, geometry_from_hf_config, geometry_of
from nemo_qwenlong.planning.memory import Geometry

DEFAULTS = Assumptions()
fraction = above(0.0)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="per-GPU memory (H100/H200) and step-time estimate of a recipe",
                       description="Estimates, not measurements: docs/plan.md gives the formulas and assumptions.")
    add_recipe_args(p)
    p.add_argument("--stage", help="curriculum stage name or index; default: the last (longest) stage")
    p.add_argument("--input-tokens", type=positive_int, help="prompt tokens (>= 1); default: the stage's input cap")
    p.add_argument("--output-tokens", type=positive_int, help="response tokens (>= 1); default: the stage's output cap")
    p.add_argument("--hf-config", type=Path, help="config.json giving the model's geometry; default: model.tiny, "
                   "model.path/config.json, or a known model name (R1-Distill-Qwen-1.5B/7B/14B/32B)")
    p.add_argument("--gpu", action="append", choices=sorted(GPUS), help="GPU column(s); default: h100 and h200")
    p.add_argument("--train-mfu", type=fraction, default=DEFAULTS.train_mfu,
                   help=f"training model-FLOPs utilisation (> 0); default {DEFAULTS.train_mfu}")
    p.add_argument("--prefill-mfu", type=fraction, default=DEFAULTS.prefill_mfu,
                   help=f"vLLM prefill utilisation (> 0); default {DEFAULTS.prefill_mfu}")
    p.add_argument("--decode-bandwidth", type=fraction, default=DEFAULTS.decode_bandwidth,
                   help=f"share of HBM bandwidth in decode (> 0); default {DEFAULTS.decode_bandwidth}")
    p.add_argument("--rounds", type=positive_int, default=DEFAULTS.generation_rounds,
                   help=f"generation rounds per step (dynamic sampling, >= 1); default {DEFAULTS.generation_rounds}")
    p.add_argument("--reserve-gib", type=at_least(0.0, float), default=DEFAULTS.reserve_gib,
                   help=f"memory kept free per GPU (>= 0); default {DEFAULTS.reserve_gib}")
    p.set_defaults(handler=_plan)


def _stage(cfg: Any, name: str | None) -> tuple[int, Any]:
    stages = cfg.curriculum.stages
    if name is None:
        return len(stages) - 1, stages[-1]
    for i, stage in enumerate(stages):
        if name in (stage.name, str(i)):
            return i, stage
    raise CommandError(f"--stage {name!r}: not a stage of this recipe; accepted: "
                       f"{', '.join(f'{i} ({s.name})' for i, s in enumerate(stages))}")


def _geometry(cfg: Any, hf_config: Path | None) -> tuple[Geometry, str]:
    """The model's geometry and where it came from."""
    path = hf_config
    if path is None and cfg.model.source != "tiny-random" and cfg.model.path:
        candidate = Path(cfg.model.path) / "config.json"
        path = candidate if candidate.is_file() else None
    if path is not None:
        try:
            return geometry_from_hf_config(json.loads(path.read_text())), str(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"--hf-config {path}: not a readable HF Qwen2 config.json ({exc!r})") from None
    m = cfg.model
    try:
        found = geometry_of(m.source, m.path, m.tiny.model_dump(), m.geometry)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if found is None:
        raise CommandError(f"model.path={m.path!r}: no config.json there and not a known model; pass "
                           "--hf-config PATH/config.json or set model.geometry")
    if m.source == "tiny-random":
        return found, "model.tiny"
    return found, f"model.geometry={m.geometry}" if m.geometry else f"known geometry of {m.path}"


def _plan(args: argparse.Namespace) -> int:
    from nemo_qwenlong.planning.layout import memory_plan, replicas_text
    from nemo_qwenlong.planning.report import (batch_for, layout_for, render_cp_advice, render_memory, render_times,
                                               step_times)

    recipe, overrides = recipe_args(args)
    cfg = check_runnable(load_config(recipe, overrides), recipe)  # what `run` refuses
    if cfg.cluster.gpus_per_node == 0:
        raise CommandError(f"{args.recipe}: cluster.gpus_per_node=0 is a CPU recipe; plan sizes GPU layouts "
                           "(use a recipe under conf/qwenlong-l1/ or override cluster.gpus_per_node)")
    index, stage = _stage(cfg, args.stage)
    tokens_in = args.input_tokens or stage.max_input_tokens
    tokens_out = args.output_tokens or stage.max_output_tokens
    geometry, source = _geometry(cfg, args.hf_config)
    assume = Assumptions(train_mfu=args.train_mfu, prefill_mfu=args.prefill_mfu,
                         decode_bandwidth=args.decode_bandwidth, reserve_gib=args.reserve_gib,
                         generation_rounds=args.rounds)
    gpus = [GPUS[k] for k in (args.gpu or ["h100", "h200"])]
    lay = layout_for(cfg, input_tokens=tokens_in, output_tokens=tokens_out)
    batch = batch_for(cfg, input_tokens=tokens_in, output_tokens=tokens_out, rounds=args.rounds)
    plans = [memory_plan(geometry, lay, gpu, assume) for gpu in gpus]
    times = [step_times(geometry, lay, batch, gpu, m, assume) for gpu, m in zip(gpus, plans)]
    print(f"plan: {cfg.name}, stage {index} ({stage.name}): {tokens_in} input + {tokens_out} output tokens; "
          f"model {geometry.params / 1e9:.2f} B parameters ({source}); {lay.world} GPUs "
          f"({cfg.cluster.nodes}×{cfg.cluster.gpus_per_node}); rollout replicas "
          f"{replicas_text(lay.world, lay.rollout_tp)} (vLLM TP={lay.rollout_tp} each)")
    print("\n".join(render_memory(geometry, lay, gpus, plans)))
    print("\n".join(render_cp_advice(geometry, lay, gpus, assume)))
    print("\n".join(render_times(lay, batch, gpus, times, assume)))
    print("estimates from formulas (docs/plan.md), not calibrated against GPU measurements")
    return 0
