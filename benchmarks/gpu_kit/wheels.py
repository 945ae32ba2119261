"""The GPU kit's CPU half: the cp312 manylinux wheels the lent GPU image lacks, fetched into a git-ignored
folder that travels with the device command (shared/docs/gpu-machines.md: 64 MiB per command in all).

    python benchmarks/gpu_kit/wheels.py list              # the recorded set (wheels.lock.json), offline
    python benchmarks/gpu_kit/wheels.py fetch             # download it into benchmarks/gpu_kit/wheels/, verify
    python benchmarks/gpu_kit/wheels.py fetch --record    # download PINS, rewrite wheels.lock.json
    python benchmarks/gpu_kit/wheels.py check DIR         # refuse a folder over 64 MiB

The set is what `import nemo_qwenlong.backends.megatron` and `nemo-qwenlong run` (data, sft, rl with the
transformers engine, export, eval) import that the image (torch, transformers, safetensors, numpy,
pyarrow, pyyaml, tqdm, matplotlib, pytest) does not hold: megatron-core; pydantic (config); psutil
(dist_checkpointing save); openai (rewards.judge and eval.docmath_extract import it at module level);
and their dependencies, with typing-extensions and packaging at the versions pydantic and megatron-core
need (the image's may be older). Versions: requirements/lock-cpu.txt. Found by running `run` with only
the image's packages plus these visible (docs/benchmarks.md, "GPU kit").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

KIT = Path(__file__).resolve().parent
LOCK = KIT / "wheels.lock.json"
WHEEL_DIR = KIT / "wheels"
LIMIT_BYTES = 64 * 2**20  # what one device command carries (working tree + carry paths)
PINS = ("megatron-core==0.19.2", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
        "typing-inspection==0.4.5", "typing-extensions==4.16.0", "packaging==26.3", "psutil==7.2.2",
        "openai==2.54.0", "jiter==0.19.0", "distro==1.9.0", "anyio==4.16.0", "sniffio==1.3.1", "httpx==0.27.2",
        "httpcore==1.0.9", "h11==0.16.0", "idna==3.20", "certifi==2026.10.19.post1")
PLATFORM = ("--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64")


class KitError(Exception):
    """A refusal: printed as `gpu_kit wheels error: …`, exit 2."""


def download_command(pin: str, dest: Path) -> list[str]:
    """shared/docs/gpu-machines.md's `pip download` for one pinned cp312 manylinux wheel, no dependencies."""
    return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "-d", str(dest), pin]


def read_lock(path: Path = LOCK) -> list[dict]:
    """The recorded wheels: [{name, version, filename, size, sha256}] (no network)."""
    return json.loads(path.read_text())["wheels"]


def folder_bytes(folder: Path) -> int:
    """Apparent size of every file under `folder` (what the device tool copies)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_size(total: int, where: str, limit: int = LIMIT_BYTES) -> None:
    if total >= limit:
        raise KitError(f"{where} holds {total / 2**20:.1f} MiB; a device command carries at most "
                       f"{limit / 2**20:.0f} MiB in all (working tree included): drop wheels or split the kit")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe(path: Path, pin: str) -> dict:
    name, version = pin.split("==")
    return {"name": name, "version": version, "filename": path.name, "size": path.stat().st_size,
            "sha256": sha256(path)}


def fetch(dest: Path, pins: tuple[str, ...]) -> list[dict]:
    """Download each pin into `dest`; one record per wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    records = []
    for pin in pins:
        before = set(dest.glob("*.whl"))
        done = subprocess.run(download_command(pin, dest), capture_output=True, text=True)
        if done.returncode:
            raise KitError(f"pip download {pin} failed (cp312 manylinux wheel): {done.stderr.strip()[-400:]}")
        name = pin.split("==")[0].replace("-", "_").lower()
        new = sorted(set(dest.glob("*.whl")) - before) or sorted(
            p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{name}-"))
        if not new:
            raise KitError(f"pip download {pin} left no wheel in {dest}")
        records.append(describe(new[0], pin))
    return records


def verify(dest: Path, lock: list[dict]) -> None:
    """Every recorded wheel is in `dest` with its recorded sha256."""
    for w in lock:
        path = dest / w["filename"]
        if not path.is_file():
            raise KitError(f"{path} is missing (run: python benchmarks/gpu_kit/wheels.py fetch)")
        if sha256(path) != w["sha256"]:
            raise KitError(f"{path}: sha256 {sha256(path)} differs from wheels.lock.json's {w['sha256']}")


def cmd_list(args: argparse.Namespace) -> None:
    lock = read_lock(args.lock)
    for w in lock:
        print(f"{w['filename']:<75} {w['size'] / 2**20:7.2f} MiB  sha256 {w['sha256'][:16]}")
    total = sum(w["size"] for w in lock)
    print(f"{len(lock)} wheels, {total / 2**20:.2f} MiB of the {LIMIT_BYTES / 2**20:.0f} MiB a device command carries")
    check_size(total, str(args.lock))


def cmd_fetch(args: argparse.Namespace) -> None:
    pins = PINS if args.record else tuple(f"{w['name']}=={w['version']}" for w in read_lock(args.lock))
    records = fetch(args.dir, pins)
    check_size(folder_bytes(args.dir), str(args.dir))
    if args.record:
        args.lock.write_text(json.dumps({"python": "cp312", "platform": "manylinux x86_64", "wheels": records},
                                        indent=2) + "\n")
        print(f"recorded {len(records)} wheels in {args.lock}")
    else:
        verify(args.dir, read_lock(args.lock))
    print(f"{args.dir}: {len(records)} wheels, {folder_bytes(args.dir) / 2**20:.2f} MiB (limit "
          f"{LIMIT_BYTES / 2**20:.0f} MiB); carry it: run(carry=['benchmarks/gpu_kit/wheels'])")


def cmd_check(args: argparse.Namespace) -> None:
    if not args.dir.is_dir():
        raise KitError(f"check: {args.dir} is not a folder (fetch the wheels first: wheels.py fetch)")
    total = folder_bytes(args.dir)
    check_size(total, str(args.dir))
    print(f"{args.dir}: {total / 2**20:.2f} MiB, under {LIMIT_BYTES / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_kit wheels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path, default=LOCK, help="recorded wheel list (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the recorded wheels and their total (offline)")
    f = sub.add_parser("fetch", help="download the wheels, check the folder's size")
    f.add_argument("--dir", type=Path, default=WHEEL_DIR)
    f.add_argument("--record", action="store_true", help="download the pins in this file and rewrite the lock")
    c = sub.add_parser("check", help="refuse a folder over 64 MiB")
    c.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        {"list": cmd_list, "fetch": cmd_fetch, "check": cmd_check}[args.command](args)
    except KitError as err:
        print(f"gpu_kit wheels error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
