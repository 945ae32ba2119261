"""The CLI error convention (docs/cli.md): named errors exit 2, bugs exit 1 with a traceback, signals."""

from __future__ import annotations

import argparse
import os
import signal

from nemo_qwenlong.cli.errors import CommandError, run_command
from tests.cli.helpers_cli import assert_named_error, cli


def _args(handler) -> argparse.Namespace:  # noqa: ANN001
    return argparse.Namespace(command="thing", verb="do", handler=handler)


def test_anticipated_error_exits_2_with_the_command_name(capsys) -> None:  # noqa: ANN001
    def handler(_a):  # noqa: ANN001, ANN202
        raise CommandError("--x 3 is too big; accepted: 1..2")

    assert run_command(_args(handler)) == 2
    err = capsys.readouterr().err
    assert err.startswith("thing do error: --x 3 is too big") and "Traceback" not in err


def test_a_bug_exits_1_with_the_traceback_and_a_report_line(capsys) -> None:  # noqa: ANN001
    def handler(_a):  # noqa: ANN001, ANN202
        raise ZeroDivisionError("oops")

    assert run_command(_args(handler)) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "a bug in nemo-qwenlong" in err


def test_sigterm_raises_so_cleanups_run_and_exits_143(capsys) -> None:  # noqa: ANN001
    cleaned = []

    def handler(_a):  # noqa: ANN001, ANN202
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raises at once
        finally:
            cleaned.append(True)

    assert run_command(_args(handler)) == 143
    assert cleaned == [True] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert "stopped by signal 15" in capsys.readouterr().err


def test_error_messages_are_redacted(capsys) -> None:  # noqa: ANN001
    def handler(_a):  # noqa: ANN001, ANN202
        raise CommandError("cannot reach https://me:sk-abcdefgh12345678@judge.example/v1")

    assert run_command(_args(handler)) == 2
    err = capsys.readouterr().err
    assert "sk-abcdefgh" not in err and "https://<redacted>@judge.example/v1" in err


def test_argument_ranges_are_checked_at_parse_time(tmp_path) -> None:  # noqa: ANN001
    assert_named_error(cli("convert", "hf-to-megatron", "--hf", str(tmp_path), "--out", str(tmp_path / "o"), "--tp", "0"),
                       "--tp", "must be >= 1, got 0")
    assert_named_error(cli("convert", "hf-to-megatron", "--hf", str(tmp_path), "--out", str(tmp_path / "o"), "--tp", "-2"),
                       "--tp", "must be >= 1, got -2")
    assert_named_error(cli("convert", "megatron-to-hf", "--megatron", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--max-shard-gb", "0"), "--max-shard-gb", "> 0")
    assert_named_error(cli("eval", "generate", "--samples", "0"), "--samples", "must be >= 1, got 0")
    assert not (tmp_path / "o").exists()

