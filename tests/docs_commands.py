"""Which documented commands tests/test_docs.py runs, how their placeholders are filled, and the runner that
executes them (`python tests/docs_commands.py < commands.json`, one process for all: the imports are paid once).

A command is decided in this order (`decide`):
1. optional parts `[...]` are dropped: the command without its options must work;
2. `SKIP_RULES`, first match: the expensive or unsafe ones, each with its reason;
3. `RUN_RULES` (the allow-list): a command that matches neither list fails the test, so a new kind of command
   in the docs is classified on purpose;
4. `PLACEHOLDERS` fill the simple placeholders (whole words, or a path's first part); a command that still
   holds one (`NAME`, `<x>`, `…`) or an absolute cluster path is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SKIP_RULES: tuple[tuple[str, str], ...] = (
    (r"^make (run|test|bench)\b", "trains or runs the test suite / benchmarks (minutes)"),
    (r"^make setup\b", "builds the environment (this test runs inside it)"),
    (r"^bash \.ci/run\b", "is CI itself"),
    (r"^(python3(\.\d+)? -m venv|pip |git )", "environment or lock maintenance, not the project's CLI"),
    (r"pytest\b", "runs tests"),
    (r"^flock |torch\.distributed\.run|--nproc-per-node", "starts several training processes"),
    (r"^nemo-qwenlong run\b", "trains: megatron and vLLM for minutes"),
    (r"^nemo-qwenlong eval(?! score)(?!.*--help)", "generates with a vLLM engine or server"),
    (r"^python eval/[a-z0-9]+\.py(?!.*--help)", "generates with a vLLM engine or server"),
    (r"^(nemo-qwenlong launch|python launcher/launch\.py)\b(?!.*(--dry-run|--help))",
     "submits the job, or runs it locally"),
    (r"https?://(?!127\.0\.0\.1|localhost)", "needs the network"),
    (r"\{[^}]*,[^}]*\}|\S\|\S", "a synopsis with alternatives"),
    (r"^python benchmarks/", "a benchmark (its numbers live in docs/benchmarks.md)"),
    (r"^(?!nemo-qwenlong |\.venv/bin/nemo-qwenlong |python (eval|converters|launcher)/|make )",
     "not this project's CLI (a shell, container or cluster tool)"),
)

RUN_RULES: tuple[str, ...] = (
    r"^nemo-qwenlong( \S+)* --help$",
    r"^nemo-qwenlong config (show|validate|fields)\b",
    r"^nemo-qwenlong plan\b",
    r"^nemo-qwenlong launch \w+ .*--dry-run",
    r"^nemo-qwenlong data (synth|validate)\b",
    r"^nemo-qwenlong convert (hf-to-megatron|megatron-to-hf)\b",
    r"^nemo-qwenlong eval score\b",
    r"^python eval/[a-z0-9]+_verify\.py\b",
    r"^python (converters|launcher|eval)/\S+\.py .*--help",
    r"^python converters/\S+\.py\b",
    r"^\.venv/bin/nemo-qwenlong --help$",
)

# Placeholder -> what stands in for it, inside the command's temporary working directory.
PLACEHOLDERS: dict[str, str] = {
    "HF_DIR": "models/tiny",  # a tiny Qwen2 HF folder with its tokenizer, built before the commands run
    "TOKENIZER_DIR": "models/tiny",
    "DIR": "synth",  # `data synth --out DIR`, read back by `data validate DIR/train.parquet`
    "OUT": "out",
    "FILE.jsonl": "responses.jsonl",  # a few eval rows are written before `eval score` reads them
    "RECIPE": "conf/tiny-cpu.yaml",
    "conf/cluster/<site>.yaml": "conf/cluster/example-slurm.yaml",
    # docs/checkpoints.md's cluster paths: a tiny model with 8 heads stands in for the 32B (its --tp 8)
    "/models/R1-Distill-Qwen-32B": "models/tiny8",
    "/ckpt/r1-32b": "ckpt",
    "/runs/x/02-rl-stage2-60k/checkpoints": "ckpt",  # a run's checkpoints: the converted one has the same layout
    "/serve/r1-32b-ql": "serve",
}
LINKED = ("conf", "eval", "converters", "launcher", "tests")  # repository folders the commands' working directory links to
MAX_SYNTH_ITEMS = 200


@dataclass(frozen=True)
class Decision:
    run: bool
    text: str  # the command as run (run) or the reason (skip)


def drop_optional(command: str) -> str:
    """`a [--b C [--d]] e` -> `a e`."""
    while True:
        reduced = re.sub(r"\s+\[[^\[\]]*\]", "", command)  # `[--opt X]` groups, not a value like `=[a,b]`
        if reduced == command:
            return " ".join(command.split())
        command = reduced


def substitute(command: str) -> tuple[str, str | None]:
    """(the command with placeholders filled, the first unresolved placeholder or cluster path or None)."""
    words = []
    for word in shlex.split(command):
        head, sep, rest = word.partition("/")
        if word in PLACEHOLDERS:
            word = PLACEHOLDERS[word]
        elif head in PLACEHOLDERS and sep:
            word = f"{PLACEHOLDERS[head]}/{rest}"
        words.append(word)
    for word in words[1:]:
        value = word.split("=", 1)[-1] if word.startswith("--") else word
        if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\w+)?", value) or re.search(r"<[^>]*>|…|\.\.\.", value):
            return shlex.join(words), f"placeholder {value}"
        if value.startswith("/"):
            return shlex.join(words), f"a cluster path ({value})"
    return shlex.join(words), None


def decide(command: str) -> Decision | None:
    """Run (with the command to run) or skip (with the reason); None: in neither list."""
    text = drop_optional(command)
    for pattern, reason in SKIP_RULES:
        if re.search(pattern, text):
            return Decision(False, reason)
    if not any(re.search(p, text) for p in RUN_RULES):
        return None
    filled, unresolved = substitute(text)
    if unresolved:
        return Decision(False, unresolved)
    n = re.search(r"--n (\d+)", filled)
    if n and int(n.group(1)) > MAX_SYNTH_ITEMS:
        return Decision(False, f"data synth of more than {MAX_SYNTH_ITEMS} items")
    return Decision(True, filled)


# ---- the runner: executed in its own process by tests/test_docs.py ------------------------------------

def _tiny_model(path: Path) -> None:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_qwen2
    from nemo_qwenlong.config.training import TinyArch

    heads = 8 if path.name.endswith("8") else 4
    build_tiny_qwen2(path, TinyArch(num_attention_heads=heads, num_key_value_heads=heads if heads == 8 else 2), seed=1)


def _eval_rows(path: Path, argv: list[str]) -> None:
    named = argv[argv.index("--benchmarks") + 1].split(",") if "--benchmarks" in argv else []
    script = re.match(r"eval/([a-z0-9]+)_verify\.py$", argv[0])
    benchmarks = named or ([script.group(1)] if script else ["docmath", "frames", "hotpotqa"])
    rows = []
    for b in benchmarks:
        gold = "12.5" if b == "docmath" else "Paris"
        for i, answer in enumerate((gold, "7", gold)):
            rows.append({"id": f"{b}-{i}", "benchmark": b, "question": "q?", "answers": [gold],
                         "response": f"<think>x</think>Therefore, the answer is {answer}."})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def prepare(argv: list[str]) -> None:
    """The inputs a documented command assumes: tiny models, eval rows."""
    for flag in ("--hf", "--model", "--tokenizer"):
        if flag in argv:
            path = Path(argv[argv.index(flag) + 1])
            if path.parts[:1] == ("models",) and not path.exists():
                _tiny_model(path)
    if "--responses" in argv:
        path = Path(argv[argv.index("--responses") + 1])
        if not path.exists():
            _eval_rows(path, argv)


def run_one(argv: list[str]) -> dict:
    from nemo_qwenlong.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            prepare(argv[1:] if argv[0] == "python" else argv)
            if argv[0] == "python":
                sys.argv = argv[1:]
                runpy.run_path(argv[1], run_name="__main__")
                rc = 0
            else:
                rc = main(argv[1:])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # noqa: BLE001 - reported to the test, which fails on it
            rc, err = 1, io.StringIO(err.getvalue() + f"\n{type(e).__name__}: {e}")
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()[-4000:],
            "seconds": round(time.perf_counter() - t0, 2)}


if __name__ == "__main__":
    commands = json.load(sys.stdin)
    results = {c["id"]: run_one(shlex.split(c["command"])) for c in commands}
    sys.__stdout__.write("\n@@RESULTS@@" + json.dumps(results))
