"""`nemo-qwenlong config ...`: show, validate and document the run configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nemo_qwenlong.cli.common import add_recipe_args, config_from_args, recipe_paths
from nemo_qwenlong.config import ConfigError, check_runnable, load_config, load_tree, to_yaml
from nemo_qwenlong.config.docs import field_table


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="show, validate or document run configs")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)

    show = verbs.add_parser("show", help="print the resolved config (recipe + inherited + overrides)")
    add_recipe_args(show, required=False)
    show.set_defaults(handler=_show)

    validate = verbs.add_parser("validate", help="validate recipes; exit 2 listing every problem")
    add_recipe_args(validate, many=True)
    validate.set_defaults(handler=_validate)

    fields = verbs.add_parser("fields", help="list fields with defaults, ranges and descriptions")
    fields.add_argument("section", nargs="?", help="dotted section, e.g. rl or rl.dynamic_sampling")
    fields.set_defaults(handler=_fields)


def _show(args: argparse.Namespace) -> int:
    sys.stdout.write(to_yaml(config_from_args(args)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for item in map(Path, recipe_paths(args)):
        found = sorted(item.rglob("*.yaml")) if item.is_dir() else [item]
        if not found:
            raise ConfigError(f"{item}: folder holds no *.yaml recipes; pass recipe files or a folder of them")
        files.extend(found)
    failures = 0
    for path in files:
        try:
            print(f"ok    {path}{_validate_one(path)}")
        except ConfigError as err:  # the line `run`, `plan` and `launch` print for this recipe
            failures += 1
            print(f"config validate error: {err}", file=sys.stderr)
    print(f"{len(files) - failures} valid, {failures} invalid")
    return 2 if failures else 0


def _validate_one(path: Path) -> str:
    """A recipe: the schema and what `run` refuses from the config alone (check_runnable). A cluster file
    (only the keys `launch --cluster` takes): the schema alone; it is not a recipe. Returns a note."""
    from nemo_qwenlong.cli.launch_cmd import CLUSTER_FILE_KEYS

    cfg = load_config(path)
    if set(load_tree(path)) <= set(CLUSTER_FILE_KEYS):
        return f"  (cluster file: {', '.join(CLUSTER_FILE_KEYS)} only; not a recipe)"
    check_runnable(cfg, str(path))
    return ""


def _fields(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(field_table(args.section))
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None
    return 0
