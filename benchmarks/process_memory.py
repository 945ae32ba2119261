"""Memory of this benchmark process, in MB (Linux). Shared by the benchmark scripts."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """Resident set size now."""
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith("VmRSS:"))


def peak_rss_mb() -> float:
    """Highest resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
