"""The docs stay true: their cheap commands run against the real CLI, and every command, config key, metric name
and run-directory file they name exists. The rules: tests/docs_scan.py (what counts as what) and
tests/docs_commands.py (which commands run, placeholders); the exceptions: `ALLOWED_*` below, each with its reason.

All runnable commands go through one process (`tests/docs_commands.py`, imports paid once) in a temporary folder
that links the repository's conf/, eval/, converters/ and launcher/: 20-40 s on the 2-core machine, most of it
imports. Whether a name exists: tests/docs_names.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_commands import LINKED, RUN_RULES, decide, drop_optional, substitute
from tests.docs_names import cli_problems, code, code_has, parser, run_dir_problems, schema_has, script_problems
from tests.docs_scan import (
    Found,
    config_keys,
    doc_files,
    dotted_keys,
    fenced_blocks,
    fenced_commands,
    inline_commands,
    metric_names,
    run_dir_files,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = doc_files(ROOT)
COMMANDS = [c for doc in DOCS for c in fenced_commands(doc, ROOT)]
MENTIONS = [c for doc in DOCS for c in inline_commands(doc, ROOT)]

# Output blocks that must equal what their command prints now: (doc, the block's first line, command, stream).
GOLDEN = (
    ("docs/plan.md", "plan: dapo-r1distill32b-stage2-60k,",
     "nemo-qwenlong plan --recipe conf/qwenlong-l1/dapo-r1distill32b-stage2-60k-4n8g-tp8cp4.yaml", "stdout"),
    ("docs/launch.md", "launch rl: dry run:",
     "nemo-qwenlong launch rl --recipe conf/qwenlong-l1/dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml "
     "--cluster conf/cluster/example-slurm.yaml --run-name r1 --dry-run", "stdout"),
    ("README.md", "config show error:", "nemo-qwenlong config show -c conf/tiny-cpu.yaml rl.clip_high=1.7", "stderr"),
)
# Every kind of cheap command must keep at least one runnable example in the docs (else the rules lost it).
MUST_RUN = ("--help", "config show", "config validate", "config fields", "plan", "launch", "data synth",
            "data validate", "convert hf-to-megatron", "convert megatron-to-hf", "eval score", "_verify.py")
# Dotted names in code spans that start like a config section but are something else.
ALLOWED_KEYS = {"model.load_weights": "vLLM's model method (docs/rollouts.md), not a config key"}
# Metric names in a metrics table that no code writes as one literal.
ALLOWED_METRICS: dict[str, str] = {}


def _id(found: Found) -> str:
    return found.where


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every runnable documented command and every GOLDEN command, run once in one process."""
    work = tmp_path_factory.mktemp("docs-commands")
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    todo = [{"id": c.where, "command": d.text} for c in COMMANDS if (d := decide(c.text)) and d.run]
    todo.sort(key=lambda c: not re.search(r"data synth|hf-to-megatron", c["command"]))  # producers first
    todo += [{"id": f"golden:{doc}", "command": cmd} for doc, _, cmd, _ in GOLDEN
             if not any(t["command"] == cmd for t in todo)]  # a documented command already runs: one run
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "docs_commands.py")], input=json.dumps(todo),
                          capture_output=True, text=True, cwd=work, timeout=300)
    assert "@@RESULTS@@" in proc.stdout, proc.stderr[-4000:]
    results = json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])
    by_command = {t["command"]: results[t["id"]] for t in todo}
    return results | {f"golden:{doc}": by_command[cmd] for doc, _, cmd, _ in GOLDEN}


def test_every_documented_command_is_run_or_skipped_by_a_rule() -> None:
    unclassified = [f"{c.where}: {c.text}" for c in COMMANDS if decide(c.text) is None]
    assert not unclassified, "add a RUN_RULES or SKIP_RULES entry (tests/docs_commands.py) for:\n" + "\n".join(
        unclassified)


@pytest.mark.parametrize("command", COMMANDS, ids=_id)
def test_documented_command_runs(command: Found, results: dict[str, dict]) -> None:
    decision = decide(command.text)
    assert decision is not None
    if not decision.run:
        pytest.skip(f"{command.where}: {decision.text}")
    res = results[command.where]
    assert res["rc"] == 0, f"{command.where}: `{decision.text}` exit {res['rc']}\n{res['stderr']}"


def test_each_kind_of_cheap_command_is_still_documented() -> None:
    ran = [d.text for c in COMMANDS if (d := decide(c.text)) and d.run]
    missing = [k for k in MUST_RUN if not any(k in r for r in ran)]
    assert not missing, f"no runnable documented command left for {missing}: check PLACEHOLDERS / RUN_RULES"


@pytest.mark.parametrize("doc,first,command,stream", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_output_shown_in_the_docs_is_what_the_command_prints(doc: str, first: str, command: str, stream: str,
                                                            results: dict[str, dict]) -> None:
    blocks = [body for _, _, body in fenced_blocks((ROOT / doc).read_text()) if body and body[0].startswith(first)]
    assert len(blocks) == 1, f"{doc}: expected one block starting with {first!r}"
    printed = [line.rstrip() for line in results[f"golden:{doc}"][stream].strip("\n").splitlines()]
    assert [line.rstrip() for line in blocks[0]] == printed, f"{doc}: the block differs from `{command}`"


# ---- names the docs use must exist -------------------------------------------------------------------

def test_every_command_mention_names_real_subcommands_options_and_files() -> None:
    problems = []
    for c in COMMANDS + MENTIONS:
        text = c.text.removeprefix(".venv/bin/")
        found = cli_problems(text) if text.startswith("nemo-qwenlong") else script_problems(c.text)
        problems += [f"{c.where}: {p}" for p in found]
    assert not problems, "\n".join(problems)


def test_every_config_key_in_the_docs_exists() -> None:
    from nemo_qwenlong.config import RunConfig

    sections = set(RunConfig.model_fields)
    missing = [f"{k.where}: {k.text}" for doc in DOCS for k in config_keys(doc, ROOT, sections)
               if k.text not in ALLOWED_KEYS and not schema_has(k.text) and not code_has(k.text)]
    assert not missing, "not in the schema (nemo-qwenlong config fields) nor a module path:\n" + "\n".join(missing)


def test_every_metric_in_the_metrics_tables_is_written() -> None:
    names = [m for doc in ("docs/run.md", "docs/rollouts.md") for m in metric_names(ROOT / doc, ROOT)]
    assert len(names) >= 15, f"the metrics tables were not found: {names}"
    missing = [f"{m.where}: {m.text}" for m in names if m.text not in ALLOWED_METRICS and not code().written(m.text)]
    assert not missing, "no code writes these metrics:\n" + "\n".join(missing)


def test_every_namespaced_metric_in_the_docs_is_written() -> None:
    """`time/refit_s`, `dynamic_sampling/kept_fraction`, ...: any code span `<ns>/<name>` whose namespace the
    metrics rows use, in any doc."""
    namespaces = {s.split("/")[0] for s in code().literals if re.fullmatch(r"[a-z_]+/[a-z0-9_]+", s)
                  and not (ROOT / "nemo_qwenlong" / s.split("/")[0]).is_dir()}
    missing = []
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for m in re.finditer(r"`([a-z_]+)/([a-z0-9_]+)`", line):
                if m.group(1) in namespaces and not code().written(f"{m.group(1)}/{m.group(2)}"):
                    missing.append(f"{doc.relative_to(ROOT)}:{n}: {m.group(1)}/{m.group(2)}")
    assert not missing, "no code writes these metrics:\n" + "\n".join(missing)


def test_every_run_directory_file_in_the_docs_is_written() -> None:
    files = [f for doc in DOCS for f in run_dir_files(doc, ROOT)]
    assert len(files) >= 10, f"the run-directory sections were not found: {files}"
    problems = [f"{f.where}: {p}" for f in files for p in run_dir_problems(f.text)]
    assert not problems, "\n".join(problems)


# ---- the rules themselves ----------------------------------------------------------------------------

def test_the_extraction_rules() -> None:
    assert drop_optional("plan --recipe R [KEY=VALUE ...] [--gpu h100 [--gpu h200]] x") == "plan --recipe R x"
    assert substitute("nemo-qwenlong data validate DIR/train.parquet") == (
        "nemo-qwenlong data validate synth/train.parquet", None)
    assert substitute("nemo-qwenlong eval score --responses FILE --output OUT")[1] == "placeholder FILE"
    assert substitute("nemo-qwenlong convert hf-to-megatron --hf /models/other")[1] == "a cluster path (/models/other)"
    sections = {"cluster", "rl", "rollout"}
    assert dotted_keys("`cluster.judge.launch / model_path / gpus` and rl.clip_high=0.3", sections) == [
        "cluster.judge.launch", "cluster.judge.model_path", "cluster.judge.gpus", "rl.clip_high"]
    assert dotted_keys("loops/rl.py loops.rl.round_seed rl.png rollout.tensor_parallel: 2", sections) == [
        "rollout.tensor_parallel"]
    decision = decide("nemo-qwenlong run conf/tiny-cpu.yaml --output runs/x [--max-steps N]")
    assert decision is not None and not decision.run
    assert decide("nemo-qwenlong launch rl --recipe R --dry-run") is not None
    assert decide("nemo-qwenlong frobnicate --x") is None  # neither list: the test fails and asks for a rule
    skipped = decide("docker build -t img .")
    assert skipped is not None and not skipped.run
    assert all(re.compile(p) for p in RUN_RULES)


# ---- names the docs and the code must share -------------------------------------------------------------

def test_the_judge_key_variable_has_one_name() -> None:
    """`eval` reads the schema's `reward.judge.api_key_env` by default, as `run` and `launch` do, and the docs
    name only that variable (the released scripts' `VERIFIER_API` only where they say "released")."""
    from nemo_qwenlong.cli import eval_cmd
    from nemo_qwenlong.config.pipeline import JudgeConfig

    default = JudgeConfig.model_fields["api_key_env"].default
    args = parser().parse_args(["eval", "score", "--responses", "r.jsonl", "--output", "o",
                                 "--judge-url", "http://127.0.0.1:9/v1"])
    assert eval_cmd._judge_cfg(args).api_key_env == default
    wrong = [f"{doc.relative_to(ROOT)}:{n}: {name}" for doc in DOCS for n, line in enumerate(doc.read_text().splitlines(), 1)
             for name in re.findall(r"VERIFIER_API\w*", line) if name != default and "released" not in line]
    assert not wrong, f"the judge's key variable is {default}:\n" + "\n".join(wrong)


def test_the_example_cluster_file_names_the_job_folder_launch_renders(results: dict[str, dict]) -> None:
    """Its job_dir comment (`<job_dir>/<run name>/<kind>/ (e.g. ...)`) is the folder `launch` prints."""
    text = (ROOT / "conf/cluster/example-slurm.yaml").read_text()
    template = re.search(r"#\s*(<job_dir>/.*?/)(?=[\s,(])", text)
    job_dir = re.search(r"^\s*job_dir:\s*(\S+)", text, re.M)
    assert template and job_dir, "conf/cluster/example-slurm.yaml: no job_dir or no comment naming its layout"
    folder = template.group(1).replace("<job_dir>", job_dir.group(1)).replace("<run name>", "r1").replace("<kind>", "rl")
    printed = results["golden:docs/launch.md"]["stdout"]  # run name r1, kind rl
    assert f"on the cluster: {folder.rstrip('/')} (logs;" in printed, f"{folder}\n{printed}"
    example = re.search(r"<job_dir>/.*?\(e\.g\. (\S+?)\)", text)
    assert example is None or example.group(1) == folder
