"""The installed `nemo-qwenlong` console script: help, config subcommands, error exits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nemo_qwenlong.cli.main import build_parser


def _run(exe: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _subcommand_paths() -> list[list[str]]:
    """Every (sub)command path the parser knows, e.g. ['config', 'show']."""
    paths: list[list[str]] = []

    def walk(parser, prefix: list[str]) -> None:
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


def test_top_level_help(cli_exe: str) -> None:
    out = _run(cli_exe, "--help")
    assert out.returncode == 0
    assert "config" in out.stdout


@pytest.mark.parametrize("path", _subcommand_paths(), ids=" ".join)
def test_every_subcommand_has_help(path: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0


def test_bad_config_value_prints_path_and_range_and_exits_nonzero(cli_exe: str, repo_root: Path) -> None:
    out = _run(cli_exe, "config", "show", "-c", "conf/tiny-cpu.yaml", "rl.clip_high=1.7", cwd=repo_root)
    assert out.returncode == 2
    assert "rl.clip_high = 1.7" in out.stderr and "less than or equal to 1" in out.stderr
    assert out.stdout == ""


def test_config_show_resolves_overrides(cli_exe: str, repo_root: Path) -> None:
    out = _run(cli_exe, "config", "show", "-c", "conf/tiny-cpu.yaml", "seed=7", cwd=repo_root)
    assert out.returncode == 0, out.stderr
    assert "seed: 7" in out.stdout and "source: tiny-random" in out.stdout


def test_config_validate_reports_each_file(cli_exe: str, repo_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl:\n  group_size: 0\n")
    out = _run(cli_exe, "config", "validate", "conf", str(bad), cwd=repo_root)
    assert out.returncode == 2
    assert "ok    conf/tiny-cpu.yaml" in out.stdout
    assert "rl.group_size = 0" in out.stderr and "greater than or equal to 1" in out.stderr


def test_config_fields_documents_a_section(cli_exe: str) -> None:
    out = _run(cli_exe, "config", "fields", "rl.overlong")
    assert out.returncode == 0
    assert "rl.overlong.buffer" in out.stdout and "default=1000" in out.stdout
    assert _run(cli_exe, "config", "fields", "nosuch").returncode == 2
