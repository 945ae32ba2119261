"""One snapshot rule for every snapshot test: the text equals the stored file; with NQL_UPDATE_SNAPSHOTS=1
the file is (re)written first, for an intended change whose diff is then reviewed."""

from __future__ import annotations

import os
from pathlib import Path

UPDATE = os.environ.get("NQL_UPDATE_SNAPSHOTS") == "1"


def check_snapshot(text: str, stored: Path, what: str, test_file: str) -> None:
    if UPDATE:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(text)
    assert stored.is_file(), f"no snapshot {stored}; create it with NQL_UPDATE_SNAPSHOTS=1"
    assert text == stored.read_text(), (f"{what} changed; if intended, NQL_UPDATE_SNAPSHOTS=1 "
                                        f".venv/bin/python -m pytest {test_file}")
