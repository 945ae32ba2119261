"""Snapshot tests: the rendered sbatch and task scripts of every recipe × kind (sample cluster file) equal
the stored ones. Update after an intended change: see tests/launch/snapshots.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.launch.snapshots import cases, render_case, snapshot_path, snapshot_text
from tests.snapshot import check_snapshot


@pytest.mark.parametrize(("recipe", "kind"), cases(), ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_rendered_plan_matches_snapshot(recipe: Path, kind: str, tmp_path: Path) -> None:
    code, printed, folder = render_case(recipe, kind, tmp_path)
    assert code == 0, printed
    text = snapshot_text(folder, kind)
    check_snapshot(text, snapshot_path(recipe, kind), f"{recipe.name} / {kind}: the rendered plan",
                   "tests/launch/test_snapshots.py")


def test_every_snapshot_belongs_to_a_case() -> None:
    wanted = {snapshot_path(r, k) for r, k in cases()}
    stored = set(snapshot_path(Path("x"), "x").parents[1].rglob("*.txt"))
    assert stored <= wanted, f"stale snapshots: {sorted(str(p) for p in stored - wanted)}"
