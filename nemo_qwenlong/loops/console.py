"""Console output of `run`: tqdm bars on a TTY, one line per step either way (rank 0 only)."""

from __future__ import annotations

import sys
from typing import Any

from nemo_qwenlong.loops import dist


class Console:
    """tqdm bars on a TTY (generation, scoring, updates); one line per step either way (rank 0)."""

    def __init__(self, enabled: bool) -> None:
        self.bars = enabled and sys.stderr.isatty() and dist.is_rank0()
        self._bar: Any = None
        self._what = ""

    def progress(self, what: str, done: int, total: int) -> None:
        if not self.bars:
            return
        from tqdm import tqdm

        if self._bar is None or self._what != what or done == 1:
            self.close()
            self._bar, self._what = tqdm(total=total, desc=what, unit="item", leave=False), what
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def line(self, text: str) -> None:
        self.close()
        if dist.is_rank0():
            print(text, flush=True)
