"""Snapshot tests: the rendered sbatch and task scripts of every recipe × kind (sample cluster file) equal
the stored ones. Update after an intended change: see tests/launch/snapshots.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.launch.snapshots import cases, render_case, snapshot_path, snapshot_text

UPDATE = os.environ.get("NQL_UPDATE_SNAPSHOTS") == "1"


@pytest.mark.parametrize(("recipe", "kind"), cases(), ids=lambda v: v.stem if isinstance(v, Path) else v)
def test_rendered_plan_matches_snapshot(recipe: Path, kind: str, tmp_path: Path) -> None:
    code, printed, folder = render_case(recipe, kind, tmp_path)
    assert code == 0, printed
    text = snapshot_text(folder, kind)
    stored = snapshot_path(recipe, kind)
    if UPDATE:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(text)
    assert stored.is_file(), f"no snapshot {stored}; create it with NQL_UPDATE_SNAPSHOTS=1"
    assert text == stored.read_text(), (f"{recipe.name} / {kind}: the rendered plan changed; if intended, "
                                        "NQL_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/launch/test_snapshots.py")


def test_every_snapshot_belongs_to_a_case() -> None:
    wanted = {snapshot_path(r, k) for r, k in cases()}
    stored = set(snapshot_path(Path("x"), "x").parents[1].rglob("*.txt"))
    assert stored <= wanted, f"stale snapshots: {sorted(str(p) for p in stored - wanted)}"
