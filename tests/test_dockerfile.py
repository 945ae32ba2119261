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
