"""requirements/gpu.txt resolves as one set: pip's resolver, binary wheels only, for the container's
Python 3.12 on manylinux x86_64 (glibc up to Ubuntu 24.04's 2.39), against the package registry.
Nothing is installed (`--dry-run`). Needs the package registry (which CI reaches through pip) and
~45 s; it runs in every `make test`, so a broken pin fails CI (`-m "not registry"` leaves it out while
editing). Transformer Engine's PyTorch part is source-only and
is built in the Dockerfile, so it is not part of this set."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.registry
PINS = Path(__file__).resolve().parents[1] / "requirements" / "gpu.txt"
# pip matches --platform tags literally, so list every manylinux glibc level the image satisfies.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)] + ["manylinux2014_x86_64"]
NETWORK_ERRORS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "ConnectTimeout", "ReadTimeoutError")


def resolve(requirements: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--target", str(tmp_path / "target"),
           "-r", str(requirements)]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_gpu_pins_resolve_binary_only_for_the_container(tmp_path: Path) -> None:
    started = time.perf_counter()
    proc = resolve(PINS, tmp_path)
    seconds = time.perf_counter() - started
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING: Location")]
    if proc.returncode and any(e in proc.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"package registry unreachable after {seconds:.0f} s: {errors[-1:]}")
    assert proc.returncode == 0, "\n".join(errors[-15:])
    assert "Would install" in proc.stdout and "vllm-0.33.0" in proc.stdout and "torch-2.14.0" in proc.stdout
