"""Import hygiene (design.md §3): pure modules never import the heavy backends; no import circles inside
the package; the library never imports the command line; data/ never imports rewards/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nemo_qwenlong

PACKAGE_DIR = Path(nemo_qwenlong.__file__).resolve().parent

PURE_MODULES = [
    "nemo_qwenlong",
    "nemo_qwenlong.config",
    "nemo_qwenlong.cli.main",
    "nemo_qwenlong.algorithms",
    "nemo_qwenlong.rewards",
    "nemo_qwenlong.rewards.extract",
    "nemo_qwenlong.rewards.rule",
    "nemo_qwenlong.rewards.judge",
    "nemo_qwenlong.rewards.hybrid",
    "nemo_qwenlong.data.kind",
    "nemo_qwenlong.logs",
    "nemo_qwenlong.data.loaders",
    "nemo_qwenlong.data.synth",
    "nemo_qwenlong.curriculum.sampler",
    "nemo_qwenlong.curriculum.stages",
    "nemo_qwenlong.data",
    "nemo_qwenlong.curriculum",
    "nemo_qwenlong.algorithms.logprobs",
    "nemo_qwenlong.algorithms.sequences",
    "nemo_qwenlong.rollout.generator",
    "nemo_qwenlong.rollout.refit",
    "nemo_qwenlong.rollout.engine_layout",
    "nemo_qwenlong.backends.vllm.version",  # run's version check reads metadata, never imports vllm
    "nemo_qwenlong.backends.vllm.model_runner",  # the runner choice: servers and the Dockerfile lint use it
    "nemo_qwenlong.loops.checks",
    "nemo_qwenlong.backends.hf.checkpoint",
    "nemo_qwenlong.cli.convert_cmd",
    "nemo_qwenlong.cli.eval_cmd",
    "nemo_qwenlong.eval.metrics",
    "nemo_qwenlong.eval.score",
    "nemo_qwenlong.eval.generate",
    "nemo_qwenlong.eval.report",
    "nemo_qwenlong.eval.run",
    "nemo_qwenlong.loops.evaluation",
]
HEAVY = ("megatron", "vllm", "transformer_engine")


def test_pure_modules_import_no_heavy_backend() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {PURE_MODULES!r}: importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_hygiene_check_would_catch_a_heavy_import() -> None:
    # The same probe sees megatron when something does import it (megatron-core is installed here).
    code = "import sys, megatron.core\nprint(any(n.startswith('megatron') for n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith("True"), out.stderr[-2000:]


# ---- the import graph, read from the source (ast), not by importing ----------------------------

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run when the module is imported: the body, the branches of if/try/with
    (`if TYPE_CHECKING:` included: a circle there is still a circle) and class bodies, not functions."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for field in ("body", "orelse", "finalbody"):
            out += _top_level_statements(getattr(node, field, []))
        for handler in getattr(node, "handlers", []):
            out += _top_level_statements(handler.body)
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package modules an import statement names (`from pkg import sub` names pkg.sub when it is one)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    found = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    if base in known and len(found) < len(node.names):
        found.add(base)
    return found


def import_graph(root: Path, *, module_level_only: bool) -> dict[str, set[str]]:
    """{module: the package modules it imports} for every .py file under the package folder `root`."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = _top_level_statements(tree.body) if module_level_only else list(ast.walk(tree))
        graph[name] = set()
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _targets(node, name, path.name == "__init__.py", known) - {name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_the_checker_sees_a_circle_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import c\n")
    (pkg / "c.py").write_text("import os\nfrom pkg.a import thing\n\ndef late():\n    from pkg import d\n")
    (pkg / "d.py").write_text("from . import c\n")
    graph = import_graph(pkg, module_level_only=True)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    # a -> sub.b -> c -> a is a circle; c's function-local import of d is not module level
    assert import_circles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert "pkg.d" in import_graph(pkg, module_level_only=False)["pkg.c"]


def test_no_import_circles_in_the_package() -> None:
    assert import_circles(import_graph(PACKAGE_DIR, module_level_only=True)) == []


def _importers(prefix: str, *, outside: str) -> list[str]:
    """Modules not under `outside` that import anything under `prefix`, at any depth (functions too)."""
    graph = import_graph(PACKAGE_DIR, module_level_only=False)
    hit = lambda m: m == prefix or m.startswith(prefix + ".")  # noqa: E731
    return sorted(f"{m} -> {', '.join(sorted(filter(hit, deps)))}" for m, deps in graph.items()
                  if not (m == outside or m.startswith(outside + ".")) and any(map(hit, deps)))


def test_the_library_never_imports_the_command_line() -> None:
    assert _importers("nemo_qwenlong.cli", outside="nemo_qwenlong.cli") == []


def test_data_never_imports_rewards() -> None:
    """An item's kind and its prompt belong to the data; rewards read them, never the other way round."""
    graph = import_graph(PACKAGE_DIR, module_level_only=False)
    data = {m: deps for m, deps in graph.items() if m == "nemo_qwenlong.data" or m.startswith("nemo_qwenlong.data.")}
    bad = {m: sorted(d for d in deps if d.startswith("nemo_qwenlong.rewards")) for m, deps in data.items()}
    assert {m: d for m, d in bad.items() if d} == {}
