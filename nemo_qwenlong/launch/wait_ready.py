"""`python -m nemo_qwenlong.launch.wait_ready URL --timeout-s N`: wait until URL answers HTTP 200.

Run inside a launched job before a client starts (the trainer before its judge, the eval client before its
model server): `vllm serve` takes minutes to load a model. Standard library only. Exit 0 when ready, 2 on
timeout (the job then fails instead of scoring everything as a judge failure).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request


def ready(url: str, timeout_s: float = 5.0) -> bool:
    """Whether `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 - a URL we rendered
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(url: str, timeout_s: float, poll_s: float = 10.0) -> bool:
    """Poll `url` every `poll_s` seconds until it answers 200 or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready(url):
            return True
        if time.monotonic() + poll_s > deadline:
            return False
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="wait_ready", description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--timeout-s", type=float, default=1800.0)
    p.add_argument("--poll-s", type=float, default=10.0)
    args = p.parse_args(argv)
    print(f"wait_ready: waiting up to {args.timeout_s:.0f} s for {args.url}", flush=True)
    if wait_ready(args.url, args.timeout_s, args.poll_s):
        print(f"wait_ready: {args.url} is up", flush=True)
        return 0
    print(f"wait_ready error: {args.url} did not answer 200 within {args.timeout_s:.0f} s, "
          "see the server task's log beside this one", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
