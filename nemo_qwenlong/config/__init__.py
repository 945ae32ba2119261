"""Typed run configuration (pydantic v2): schema, YAML recipes with inheritance, dotted overrides."""

from nemo_qwenlong.config.loader import (
    ConfigError,
    apply_override,
    check_runnable,
    load_config,
    load_tree,
    to_yaml,
    validate_tree,
    write_run_config,
)
from nemo_qwenlong.config.schema import RunConfig

__all__ = [
    "ConfigError",
    "RunConfig",
    "apply_override",
    "check_runnable",
    "load_config",
    "load_tree",
    "to_yaml",
    "validate_tree",
    "write_run_config",
]
