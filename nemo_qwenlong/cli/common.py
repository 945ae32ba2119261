"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nemo_qwenlong.cli.errors import CommandError
from nemo_qwenlong.config import RunConfig, load_config


def at_least(minimum: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse `type=` that parses with `kind` and refuses values below `minimum` (exit 2, at parse time)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def above(bound: float) -> Callable[[str], float]:
    """An argparse `type=` for a float strictly above `bound`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > bound or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > {bound}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def file_stem(text: str) -> str:
    """An argparse `type=` for a bare file name stem (no folders, no `..`): outputs stay inside --out."""
    if not text or text in (".", "..") or any(c in text for c in "/\\\0") or text.startswith("."):
        raise argparse.ArgumentTypeError(f"expected a plain file name stem such as 'train' (no folders), got {text!r}")
    return text


RECIPE_FLAGS = ("--recipe", "-c")  # every command that reads a recipe takes it here or as its first word
LEGACY_RECIPE_FLAGS = ("--config", "-r")  # earlier spellings (config show, launch): still work, not advertised


def add_recipe_args(parser: argparse.ArgumentParser, *, required: bool = True, many: bool = False) -> None:
    """The one recipe argument of `run`, `config show`, `config validate`, `plan` and `launch`: the recipe
    as the first positional word or after --recipe/-c (either, not both). `many` (config validate): any
    number of recipe files or folders, positional or repeated --recipe. Read back with `recipe_args` /
    `recipe_paths`."""
    what = "recipe file(s) or folder(s)" if many else "recipe file (inherits through its `defaults:` key)"
    action = "append" if many else "store"
    parser.add_argument(*RECIPE_FLAGS, dest="recipe_flag", action=action, metavar="YAML",
                        help=f"{what}; the same as giving it as the first argument")
    parser.add_argument(*LEGACY_RECIPE_FLAGS, dest="recipe_flag", action=action, metavar="YAML",
                        help=argparse.SUPPRESS)
    if many:
        parser.add_argument("recipes", nargs="*", metavar="YAML", help=what)
    else:
        parser.add_argument("recipe", nargs="?", metavar="RECIPE",
                            help=f"{what}, e.g. conf/tiny-cpu.yaml (or --recipe/-c RECIPE)")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="dotted overrides applied last, e.g. rl.clip_high=0.28 "
                            "curriculum.stages.1.steps=40")
    parser.set_defaults(recipe_required=required)


def recipe_args(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(recipe, overrides) from `add_recipe_args`'s arguments, also stored back as args.recipe and
    args.overrides. Raises CommandError (exit 2) for no recipe where one is required, two recipes, or a
    stray word. A word holding '=' is an override, never the recipe."""
    positional, overrides = args.recipe, list(args.overrides)
    if positional is not None and "=" in positional:  # no recipe word: the first override landed here
        positional, overrides = None, [positional, *overrides]
    if positional is not None and args.recipe_flag is not None:
        raise CommandError(f"two recipes: {positional} and --recipe/-c {args.recipe_flag}; accepted: one "
                           "recipe, as the first argument or after --recipe/-c")
    recipe = args.recipe_flag or positional
    stray = [w for w in overrides if "=" not in w]
    if stray:
        raise CommandError(f"{stray[0]!r} is not a KEY=VALUE override"
                           + (f" (the recipe is {recipe})" if recipe else "")
                           + "; accepted: one recipe (first argument or --recipe/-c), then dotted overrides "
                           "such as rl.clip_high=0.28")
    if recipe is None and args.recipe_required:
        raise CommandError("no recipe; accepted: a recipe YAML as the first argument or after --recipe/-c, "
                           "e.g. conf/tiny-cpu.yaml")
    args.recipe, args.recipe_flag, args.overrides = recipe, None, overrides  # resolved: a second call agrees
    return recipe, overrides


def recipe_paths(args: argparse.Namespace) -> list[str]:
    """The recipe files or folders of `add_recipe_args(many=True)`, positional ones first."""
    paths = [*args.recipes, *(args.recipe_flag or [])]
    if not paths and args.recipe_required:
        raise CommandError("no recipe; accepted: recipe files or folders, as arguments or after --recipe/-c")
    return paths


def config_from_args(args: argparse.Namespace) -> RunConfig:
    recipe, overrides = recipe_args(args)
    return load_config(recipe, overrides)
