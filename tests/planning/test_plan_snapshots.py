"""`nemo-qwenlong plan` output of the QwenLong-L1.5 three-stage recipes (stage 3: 120K + 50K tokens with YaRN)
equals the stored text. Update after an intended change, then review the diff:

    NQL_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/planning/test_plan_snapshots.py
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from nemo_qwenlong.cli.main import main
from tests.snapshot import check_snapshot

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "conf" / "qwenlong-l15").glob("*-3stage-*.yaml"))
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def test_there_are_three_stage_recipes() -> None:
    assert {p.stem.split("-3stage")[0] for p in RECIPES} >= {"dapo-r1distill14b", "dapo-r1distill32b"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_plan_output_matches_snapshot(recipe: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["plan", "--recipe", str(recipe)])
    assert code == 0, out.getvalue()
    text = out.getvalue()
    assert "stage3-120k): 120000 input + 50000 output tokens" in text
    assert "smallest CP that fits (170000-token sequences" in text
    check_snapshot(text, SNAPSHOTS / f"{recipe.stem}.txt", f"{recipe.name}: the plan",
                   "tests/planning/test_plan_snapshots.py")
