"""Loop state that is not model or optimiser: RNG states and counters, as JSON (nothing executes on load).

Saved inside each checkpoint folder (`loop_state.json`, written before the folder is renamed into
place, so it is complete exactly when the weights are) and restored on resume.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LOOP_STATE = "loop_state.json"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU) generator states as JSON-able lists."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), int(pos), int(has_gauss),
                                                                  float(cached)],
            "torch": torch.get_rng_state().tolist()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def dumps(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True)


def load(iter_dir: Path) -> dict[str, Any]:
    path = iter_dir / LOOP_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{iter_dir} has no {LOOP_STATE}: it was not written by `nemo-qwenlong run`")
    return json.loads(path.read_text())
