"""Run the CLI in-process and capture (exit code, stdout, stderr)."""

from __future__ import annotations

import contextlib
import io

from nemo_qwenlong.cli.main import main


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as stop:  # argparse refusals
            code = int(stop.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_named_error(result: tuple[int, str, str], *needles: str) -> None:
    """Exit 2, no traceback, and the message names each needle (field, file, ...)."""
    code, _, err = result
    assert code == 2, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    for needle in needles:
        assert needle in err, (needle, err[-2000:])
