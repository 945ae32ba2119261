"""SIGTERM / SIGUSR1 (what Slurm sends before preemption or at the end of a time limit) and SIGINT
(Ctrl-C, handled the same way): finish the current step, write a checkpoint, exit 0. The handler only sets a flag; the loops read it at safe
points (between steps), and every rank agrees on it (rank 0 decides), so all ranks save together."""

from __future__ import annotations

import signal
from types import FrameType

from nemo_qwenlong.loops import dist

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Raised after the checkpoint is written; the CLI turns it into exit 0."""


class PreemptionFlag:
    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> "PreemptionFlag":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum

    def requested(self) -> bool:
        """Whether any rank was signalled (rank 0's view, shared)."""
        return bool(dist.broadcast(self.signal is not None))
