"""Config errors name their source: file and line (or the override), the defaults chain; duplicates
and empty recipes refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_qwenlong.config import ConfigError, load_config
from tests.cli.helpers_cli import assert_named_error, cli


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_an_error_in_a_parent_recipe_names_the_parent_line_and_the_chain(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "name: p\nrl:\n  clip_high: -3\n")
    top = _write(tmp_path, "top.yaml", "defaults: parent.yaml\nname: t\n")
    with pytest.raises(ConfigError) as err:
        load_config(top)
    assert f"set at {tmp_path / 'parent.yaml'}:3 via top.yaml -> parent.yaml" in str(err.value)


def test_an_error_in_an_override_names_the_override(tmp_path: Path) -> None:
    top = _write(tmp_path, "top.yaml", "name: t\nrl:\n  clip_high: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(top, ["rl.clip_high=-1"])
    assert "rl.clip_high = -1" in str(err.value) and "set at command line override rl.clip_high=..." in str(err.value)


def test_a_missing_defaults_target_names_the_recipe_that_refers_to_it(tmp_path: Path) -> None:
    top = _write(tmp_path, "top.yaml", "name: t\ndefaults: [nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"nope.yaml \(named in `defaults:` at .*top.yaml:2\)"):
        load_config(top)


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    dup = _write(tmp_path, "dup.yaml", "name: a\nrl:\n  clip_high: 0.2\n  clip_high: 0.3\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:4: duplicate key 'rl.clip_high' \(first set at line 3\)"):
        load_config(dup)


def test_an_empty_recipe_and_an_empty_folder_are_errors(tmp_path: Path) -> None:
    empty = _write(tmp_path, "empty.yaml", "")
    with pytest.raises(ConfigError, match="empty recipe"):
        load_config(empty)
    (tmp_path / "none").mkdir()
    assert_named_error(cli("config", "validate", str(tmp_path / "none")), "config validate error:", "no *.yaml")
