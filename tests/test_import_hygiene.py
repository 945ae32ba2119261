"""The package and its pure modules never import the heavy backends (design.md §3)."""

from __future__ import annotations

import subprocess
import sys

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
    "nemo_qwenlong.demo.loop",
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
    "nemo_qwenlong.backends.hf.checkpoint",
    "nemo_qwenlong.cli.convert_cmd",
    "nemo_qwenlong.cli.eval_cmd",
    "nemo_qwenlong.eval.metrics",
    "nemo_qwenlong.eval.score",
    "nemo_qwenlong.eval.generate",
    "nemo_qwenlong.eval.report",
    "nemo_qwenlong.eval.run",
    "nemo_qwenlong.loops.evaluation",
    "nemo_qwenlong.demo.llm_stack",
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
