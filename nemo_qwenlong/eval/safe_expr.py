"""A tiny expression interpreter standing in for the `eval()` that DocMath's normaliser applies to
answer text (DocMath-Eval `utils/evaluation_utils.py` `normalize`, copied into QwenLong-L1's eval).

Model text is never executed. The string is parsed with `ast.parse(mode="eval")` and only these
nodes are interpreted, with Python's own semantics: literals (numbers, strings, True/False/None),
tuples/lists/sets, unary and binary arithmetic (including `^` = XOR, as `eval` does), comparisons,
`and`/`or`/`not`, the `math` constants, calls to pure `math` functions and to `abs`, `round`,
`float`, `int`, `min`, `max`, `pow`.

Where the result can differ from `eval()` (documented limits):
- anything else (other names, attributes, comprehensions, lambdas, other calls) raises
  `UnsafeExpression`; the callers treat it like an `eval` error (the normaliser's value 0);
- a bare name of the scorer module's namespace (`math`, `np`, `re`, `Rational`) evaluates to an
  opaque object, as `eval` gives a module/class that no comparison accepts;
- powers and shifts with huge results, and very long strings, raise instead of running for ages.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any


class UnsafeExpression(ValueError):
    """The text is not an expression this interpreter evaluates (its `eval` stand-in failed)."""


class Opaque:
    """A module-level name (`math`, `np`, …) evaluated bare: not a number, string, bool or list."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<opaque {self.name}>"


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.BitXor: operator.xor, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_, ast.Invert: operator.invert}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_MATH_CONSTANTS = {"pi", "e", "tau", "inf", "nan"}
_MATH_FUNCTIONS = {"pow", "sqrt", "exp", "log", "log10", "log2", "log1p", "expm1", "fabs", "floor", "ceil",
                   "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "degrees",
                   "radians", "hypot", "trunc", "fsum", "isclose"}
_BUILTINS = {"abs": abs, "round": round, "float": float, "int": int, "min": min, "max": max, "pow": pow}
_OPAQUE_NAMES = {"math", "np", "re", "Rational"}
MAX_BITS = 100_000  # integer results beyond ~30,000 digits are refused
MAX_TEXT = 10_000_000


def evaluate(text: str) -> Any:
    """The value `eval(text)` would have, for the grammar above; `UnsafeExpression` otherwise."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise UnsafeExpression(f"not an expression: {type(exc).__name__}") from None
    try:
        return _eval(tree.body)
    except (RecursionError, MemoryError) as exc:  # deeply nested or huge: eval would have failed too
        raise UnsafeExpression(type(exc).__name__) from None


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [_eval(e) for e in node.elts]
        return {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(node.op, _eval(node.left), _eval(node.right))
    if isinstance(node, ast.Compare):
        return _compare(node)
    if isinstance(node, ast.BoolOp):
        return _boolop(node)
    if isinstance(node, ast.Name) and node.id in _OPAQUE_NAMES:
        return Opaque(node.id)
    if isinstance(node, ast.Attribute) and _is_math(node.value) and node.attr in _MATH_CONSTANTS:
        return getattr(math, node.attr)
    if isinstance(node, ast.Call) and not node.keywords:
        return _call(node)
    raise UnsafeExpression(f"{type(node).__name__} is not evaluated")


def _is_math(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "math"


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        if right * max(abs(left), 2).bit_length() > MAX_BITS:
            raise UnsafeExpression("power too large")
    if isinstance(op, ast.LShift) and isinstance(right, int) and right > MAX_BITS:
        raise UnsafeExpression("shift too large")
    sequences = (str, bytes, list, tuple)
    if isinstance(op, ast.Mult) and (isinstance(left, sequences) or isinstance(right, sequences)):
        seq, count = (left, right) if isinstance(left, sequences) else (right, left)
        if isinstance(count, int) and max(len(seq), 1) * count > MAX_TEXT:  # the result's size, not the factor
            raise UnsafeExpression("repetition too large")
    try:
        return _BINARY[type(op)](left, right)
    except Exception as exc:  # noqa: BLE001 - eval would have raised the same
        raise UnsafeExpression(f"{type(exc).__name__}: {exc}") from None


def _compare(node: ast.Compare) -> bool:
    left = _eval(node.left)
    for op, comparator in zip(node.ops, node.comparators):
        if type(op) not in _COMPARE:
            raise UnsafeExpression(f"{type(op).__name__} is not evaluated")
        right = _eval(comparator)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True


def _boolop(node: ast.BoolOp) -> Any:
    value: Any = None
    for operand in node.values:
        value = _eval(operand)
        if isinstance(node.op, ast.And) and not value:
            return value
        if isinstance(node.op, ast.Or) and value:
            return value
    return value


def _call(node: ast.Call) -> Any:
    func = node.func
    if isinstance(func, ast.Attribute) and _is_math(func.value) and func.attr in _MATH_FUNCTIONS:
        target = getattr(math, func.attr)
    elif isinstance(func, ast.Name) and func.id in _BUILTINS:
        target = _BUILTINS[func.id]
    else:
        raise UnsafeExpression("call is not evaluated")
    args = [_eval(a) for a in node.args]
    if target is pow and len(args) >= 2:
        return _binary(ast.Pow(), args[0], args[1]) if len(args) == 2 else pow(*args)
    try:
        return target(*args)
    except Exception as exc:  # noqa: BLE001
        raise UnsafeExpression(f"{type(exc).__name__}: {exc}") from None
