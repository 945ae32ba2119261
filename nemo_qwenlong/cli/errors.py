"""The CLI's one error and signal convention (docs/cli.md), applied to every subcommand by `run_command`.

- An anticipated failure (bad argument, file, config, checkpoint, data; unreachable server) prints
  `<command> error: <what>, <where>, <what is accepted>` on stderr and exits 2, without a traceback.
- Anything else is a bug: the traceback, then a line asking to report it; exit 1.
- SIGTERM (what Slurm sends) is raised as `Terminated` in the main thread, exactly like SIGINT's
  KeyboardInterrupt, so `finally`/`except BaseException` clean-ups (staged output folders, temp
  files) run; the command then exits 128 + the signal number (143, 130). Training loops install
  their own handler (loops.preemption) and checkpoint, then exit 0.

A new subcommand needs nothing beyond `set_defaults(handler=...)`: `main` runs every handler through
`run_command`. Raise `CommandError("what, where, accepted")` for a failure the user can fix, or let
one of ANTICIPATED (ConfigError, CheckpointFormatError, DataError, missing files...) propagate; a
module-specific exception becomes anticipated by raising it `from` a CommandError, or by listing it
with `set_defaults(anticipated=(MyError,))`. Use the argparse `type=` checkers in `cli.common`
(`positive_int`, ...) so ranges fail at parse time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from nemo_qwenlong.config import ConfigError
from nemo_qwenlong.redact import redact_text

BUG_LINE = "{command}: unexpected error (a bug in nemo-qwenlong); please report it with the traceback above"


class CommandError(Exception):
    """A failure the user can fix; the message says what, where, and what is accepted."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so clean-ups run."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def anticipated_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug (imported lazily: no heavy imports at start-up)."""
    from nemo_qwenlong.data.schema import DataError

    found: list[type[BaseException]] = [CommandError, ConfigError, DataError, FileNotFoundError, FileExistsError,
                                        NotADirectoryError, IsADirectoryError, PermissionError]
    try:  # needs safetensors/torch; absent in a minimal install
        from nemo_qwenlong.backends.hf.checkpoint import CheckpointFormatError

        found.append(CheckpointFormatError)
    except ImportError:
        pass
    return tuple(found)


def command_name(args: argparse.Namespace) -> str:
    """`convert megatron-to-hf`, `data synth`, `run`: the words the user typed."""
    return " ".join(str(w) for w in (getattr(args, "command", None), getattr(args, "verb", None)) if w)


def run_command(args: argparse.Namespace) -> int:
    """Run `args.handler(args)` under the convention in the module docstring; returns the exit code."""
    name = command_name(args) or "nemo-qwenlong"
    expected = anticipated_errors() + tuple(getattr(args, "anticipated", ()))
    try:
        with terminate_as_exception(), redacted_logs():
            return int(args.handler(args) or 0)
    except Terminated as stop:
        print(f"{name}: stopped by signal {stop.signum}; nothing partial was left behind", file=sys.stderr)
        return 128 + stop.signum
    except BrokenPipeError:  # `... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print(f"{name}: interrupted; nothing partial was left behind", file=sys.stderr)
        return 128 + signal.SIGINT
    except expected as err:
        print(f"{name} error: {redact_text(describe(err))}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - the bug path: show everything
        traceback.print_exc()
        print(BUG_LINE.format(command=name), file=sys.stderr)
        return 1


def describe(err: BaseException) -> str:
    """The message of an anticipated error (OSErrors: the reason and the path)."""
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.strerror or type(err).__name__}: {err.filename}"
    return str(err) or type(err).__name__


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (only in the main thread; elsewhere a no-op)."""
    def _raise(signum: int, _frame: FrameType | None) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def redacted_logs() -> Iterator[None]:
    """Every log record's message passes through `redact_text` (credentials never reach a log)."""
    old: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*a, **kw) -> logging.LogRecord:  # noqa: ANN002, ANN003 - the factory signature
        record = old(*a, **kw)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let logging report it as usual
            return record
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(old)
