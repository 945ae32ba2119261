"""A lint of the Dockerfile (no Docker engine here, and hadolint is not in the pinned environment): the
rules our image depends on, each a check that fails on the mistake it names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = {line.split("==")[0].strip().lower(): line.split("==")[1].strip()
        for line in (ROOT / "requirements" / "gpu.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_base_image_is_pinned_by_tag() -> None:
    args = {k: v for k, v in (a.split("=", 1) for op, a in instructions() if op == "ARG" and "=" in a)}
    images = [a.split()[0] for op, a in instructions() if op == "FROM"]
    assert images, "no FROM"
    for image in images:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert ":" in resolved.rsplit("/", 1)[-1] and not resolved.endswith(":latest"), resolved


def test_every_pip_install_is_pinned() -> None:
    for op, arg in instructions():
        if op != "RUN":
            continue
        for command in arg.split("&&"):
            words = shlex.split(command.replace('"', ""))
            if "pip" not in words or "install" not in words:
                continue
            specs = [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
            flags = [w for w in words if w.startswith("-")]
            assert "-r" in flags or "-e" in flags or all("==" in s for s in specs), command
            for spec in (s for s in specs if "==" in s):
                name, version = spec.split("==")
                name = name.split("[")[0].lower()
                if name in PINS:
                    assert PINS[name] == version, f"{spec}: requirements/gpu.txt pins {name}=={PINS[name]}"


def test_apt_installs_are_lean_and_cleaned_in_the_same_layer() -> None:
    runs = [a for op, a in instructions() if op == "RUN" and "apt-get install" in a]
    assert runs
    for arg in runs:
        assert "--no-install-recommends" in arg and "rm -rf /var/lib/apt/lists" in arg, arg


def test_copies_exist_and_nothing_is_fetched_or_secret() -> None:
    for op, arg in instructions():
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert op != "ADD" or "://" not in arg, "ADD from a URL: fetch in a RUN with a checksum instead"
        if op == "ENV":
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\w*=", arg), f"a secret in the image: ENV {arg}"


def test_smoke_check_loads_transformer_engines_torch_extension() -> None:
    smoke = " ".join(a for op, a in instructions() if op == "RUN" and "import" in a)
    assert "transformer_engine.pytorch" in smoke and "vllm" in smoke and "megatron.core" in smoke


# ---- issue 25: what a first build and import need, read from the pinned packages' sources ----------

def commands() -> list[str]:
    """Every RUN's shell commands in Dockerfile order (split at &&)."""
    return [c.strip() for op, a in instructions() if op == "RUN" for c in a.split("&&")]


def te_build() -> str:
    builds = [c for c in commands() if "pip install" in c and "transformer_engine[pytorch]" in c]
    assert len(builds) == 1, builds
    return builds[0]


def env_instructions() -> list[dict[str, str]]:
    return [dict(w.split("=", 1) for w in shlex.split(a)) for op, a in instructions() if op == "ENV"]


def test_te_extension_build_finds_cudnn_h_and_builds_from_source() -> None:
    """transformer_engine_torch 2.20.2's extension is a torch CppExtension that includes <cudnn.h>; torch
    adds CUDNN_HOME/include only to CUDA extensions, and the devel image has no system cuDNN."""
    words = dict(w.split("=", 1) for w in shlex.split(te_build()) if "=" in w and not w.startswith("-"))
    assert words.get("CPATH", "").split(":")[0] in ("$CUDNN_PATH/include", "${CUDNN_PATH}/include"), words
    assert words.get("NVTE_PYTORCH_FORCE_BUILD") == "TRUE", "its setup.py would fetch a prebuilt wheel from GitHub"


def test_te_build_tools_are_pinned_and_installed_first() -> None:
    """transformer_engine_torch's setup.py imports wheel.bdist_wheel (--no-build-isolation: from the image's venv)."""
    assert "setuptools" in PINS and "wheel" in PINS, "pin setuptools and wheel in requirements/gpu.txt"
    order = commands()
    installs = [i for i, c in enumerate(order) if "-r requirements/gpu.txt" in c]
    assert installs and installs[0] < order.index(te_build()), "requirements/gpu.txt must be installed before TE"


def test_loader_finds_cudnn_sub_libraries() -> None:
    """libtransformer_engine.so NEEDs libcudnn_graph.so.9 & co. without a RUNPATH; torch and TE preload
    only libcudnn.so.9. Docker expands ${CUDNN_PATH} with the values from before the ENV instruction."""
    envs = env_instructions()
    setting = [i for i, e in enumerate(envs) if "LD_LIBRARY_PATH" in e]
    assert setting, "no ENV LD_LIBRARY_PATH"
    value = envs[setting[-1]]["LD_LIBRARY_PATH"]
    first = re.match(r"\$\{?CUDNN_PATH\}?/lib(?=:|\$|$)", value)
    assert first, f"LD_LIBRARY_PATH={value}: put $CUDNN_PATH/lib first"
    assert "LD_LIBRARY_PATH" in value[first.end():], f"LD_LIBRARY_PATH={value}: the base image's value is dropped"
    assert any("CUDNN_PATH" in e for e in envs[:setting[-1]]), "CUDNN_PATH must be set by an earlier ENV instruction"


def test_image_selects_the_tested_vllm_runner() -> None:
    from nemo_qwenlong.backends.vllm.model_runner import RUNNER_VARIABLE, TESTED_RUNNER

    values = [e[RUNNER_VARIABLE] for e in env_instructions() if RUNNER_VARIABLE in e]
    assert values == [TESTED_RUNNER], f"ENV {RUNNER_VARIABLE}={TESTED_RUNNER} (vLLM's V1 model runner): {values}"


def test_gpu_checks_run_from_the_image() -> None:
    copied = {a.split()[0] for op, a in instructions() if op == "COPY"}
    assert {"tests", "benchmarks"} <= copied, copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"benchmarks/out", "**/__pycache__"} <= set(ignored), "local outputs would be copied into the image"
    venv = next(e["VIRTUAL_ENV"] for e in env_instructions() if "VIRTUAL_ENV" in e)
    for script in ("tests/gpu_checks.sh", "benchmarks/gpu_figures.sh"):
        assert f"PY=${{PY:-{venv}/bin/python}}" in (ROOT / script).read_text(), script
