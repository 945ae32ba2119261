"""Recipe inheritance, dotted overrides, error messages and the resolved-config file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nemo_qwenlong.config import ConfigError, RunConfig, load_config, write_run_config


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_schema_defaults_are_the_released_settings() -> None:
    cfg = load_config(None)
    # spec §4.3/§4.4/§3.4: released DAPO demo
    assert (cfg.rl.clip_low, cfg.rl.clip_high, cfg.rl.group_size) == (0.2, 0.2, 8)
    assert cfg.rl.dynamic_sampling.max_rounds == 10
    assert (cfg.rl.overlong.buffer, cfg.rl.overlong.factor, cfg.rollout.max_new_tokens) == (1000, 1.0, 10000)
    assert cfg.rl.optim.lr == 2e-6 and cfg.rl.entropy_coef == 0.001


def test_defaults_inherit_and_child_wins(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "name: base\nrl:\n  clip_high: 0.3\n  group_size: 4\n")
    _write(tmp_path / "mid.yaml", "defaults: base.yaml\nrl:\n  group_size: 16\n")
    child = _write(tmp_path / "child.yaml", "defaults: [mid.yaml]\nname: child\n")
    cfg = load_config(child)
    assert cfg.name == "child"
    assert cfg.rl.clip_high == 0.3  # from base, through mid
    assert cfg.rl.group_size == 16  # mid overrides base


def test_lists_replace_rather_than_merge(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", "cluster:\n  container_mounts: [a:/a, b:/b]\n")
    child = _write(tmp_path / "child.yaml", "defaults: base.yaml\ncluster:\n  container_mounts: [c:/c]\n")
    assert load_config(child).cluster.container_mounts == ["c:/c"]


def test_defaults_cycle_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    _write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="defaults cycle"):
        load_config(tmp_path / "a.yaml")


def test_dotted_overrides_parse_yaml_scalars_and_list_indices() -> None:
    cfg = load_config(
        None,
        ["rl.clip_high=0.28", "rl.dynamic_sampling.enable=false", "model.path=/m",
         "curriculum.stages.1.steps=40", "cluster.container_mounts=[x:/x]"],
    )
    assert cfg.rl.clip_high == 0.28
    assert cfg.rl.dynamic_sampling.enable is False
    assert cfg.model.path == "/m"
    assert cfg.curriculum.stages[1].steps == 40
    assert cfg.cluster.container_mounts == ["x:/x"]


def test_bad_value_names_dotted_path_value_and_range() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rl.clip_high=1.7"])
    text = str(err.value)
    assert "rl.clip_high = 1.7" in text and "less than or equal to 1" in text


def test_bad_choice_lists_accepted_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rl.loss_level=tokens"])
    assert "rl.loss_level = 'tokens'" in str(err.value) and "'token' or 'sequence'" in str(err.value)


def test_unknown_key_suggests_and_lists_accepted() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rl.dynamic_sampling.max_round=3"])
    text = str(err.value)
    assert "rl.dynamic_sampling.max_round: unknown key" in text
    assert "did you mean 'max_rounds'" in text and "on_exhausted" in text


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["rl.clip_low=-1", "rollout.top_p=2", "logging.level=LOUD"])
    assert "3 problem(s)" in str(err.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("parallelism.transformer_impl=local", "parallelism.context_parallel"),
        ("parallelism.sequence_parallel=true", "parallelism.tensor_parallel > 1"),
        ("rl.mini_batch_size=5", "rl.train_batch_size=128 must be a multiple of rl.mini_batch_size=5"),
        ("rl.overlong.buffer=20000", "rl.overlong.buffer=20000 must be below rollout.max_new_tokens=10000"),
        ("curriculum.stages.1.max_input_tokens=10000", "min_input_tokens=20000 must be below"),
        ("cluster.executor=slurm", "cluster.account, cluster.partition"),
        ("cluster.env_vars={OPENAI_API_KEY: x}", "pass secrets through"),
        ("model.source=hf", "model.path is required"),
    ],
)
def test_cross_field_rules_name_their_fields(override: str, fragment: str) -> None:
    base = ["parallelism.context_parallel=2"] if "transformer_impl" in override else []
    if override.startswith("parallelism.sequence"):
        base = ["parallelism.tensor_parallel=1"]
    with pytest.raises(ConfigError) as err:
        load_config(None, [*base, override])
    assert fragment in str(err.value)


def test_malformed_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(None, ["rl.clip_high"])
    with pytest.raises(ConfigError, match="index '7' is not in 0..1"):
        load_config(None, ["curriculum.stages.7.steps=3"])


def test_resolved_config_written_atomically_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["rl.clip_high=0.28", "name=roundtrip"])
    path = write_run_config(cfg, tmp_path / "run")
    assert path.name == "config.yaml"
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left behind
    again = RunConfig.model_validate(yaml.safe_load(path.read_text()))
    assert again == cfg
    assert load_config(path) == cfg


def test_every_field_has_a_description() -> None:
    missing: list[str] = []

    def walk(model: type, prefix: str) -> None:
        from nemo_qwenlong.config.loader import nested_model

        for name, info in model.model_fields.items():
            if not (info.description and info.description.strip()):
                missing.append(prefix + name)
            sub = nested_model(info.annotation)
            if sub is not None:
                walk(sub, f"{prefix}{name}.")

    walk(RunConfig, "")
    assert missing == []
