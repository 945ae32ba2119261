"""The top-level eval/ scripts (QwenLong-L1's names: `eval/<benchmark>.py` generates, `eval/<benchmark>_verify.py`
scores), run as a user runs them: `python eval/<script>.py ...` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_qwenlong.cli.eval_cmd import DEFAULT_BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "eval_data"
BENCHMARKS = DEFAULT_BENCHMARKS.split(",")
SCRIPTS = [f"{b}{suffix}.py" for b in BENCHMARKS for suffix in ("", "_verify")]


def _script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "eval" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_holds_one_generate_and_one_verify_script_per_benchmark() -> None:
    assert sorted(p.name for p in (ROOT / "eval").glob("*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help(name: str) -> None:
    res = _script(name, "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    benchmark = name.removesuffix(".py").removesuffix("_verify")
    assert res.stdout.startswith(f"usage: eval/{name}")
    if name.endswith("_verify.py"):
        assert f"Score the {benchmark} rows" in res.stdout and "--responses" in res.stdout and "--judge-url" in res.stdout
    else:
        assert f"Generate responses for the {benchmark} benchmark" in res.stdout and "--model" in res.stdout
        assert "--benchmarks LIST" not in res.stdout  # no such option: the script fixes the benchmark


ROWS = [  # two Frames rows and one DocMath row, written by hand
    {"id": "f1", "benchmark": "frames", "response": "<think>the text says Paris</think>Therefore, the answer is Paris.",
     "answers": ["Paris"], "question": "Capital of France?"},
    {"id": "f2", "benchmark": "frames", "response": "<think>hmm</think>Therefore, the answer is London.",
     "answers": ["Paris"], "question": "Capital of France?"},
    {"id": "d1", "benchmark": "docmath", "response": "<think>3*4</think>Therefore, the answer is 12.",
     "answers": ["12"], "question": "3 times 4?"},
]


def test_verify_scores_only_its_benchmark(tmp_path: Path) -> None:
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "frames"
    res = _script("frames_verify.py", "--responses", str(responses), "--output", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    scores = {s["id"]: s["scores"] for s in _jsonl(out / "scores.jsonl")}
    # f1: "Paris" after the last </think> and "the answer is" equals the gold -> 1; f2: "London" -> 0; d1 not scored
    assert set(scores) == {"f1", "f2"}
    assert (scores["f1"]["qwenlong"], scores["f1"]["strict"]) == (1.0, 1.0)
    assert (scores["f2"]["qwenlong"], scores["f2"]["strict"]) == (0.0, 0.0)
    summary = _jsonl(out / "results.jsonl")
    assert [(s["benchmark"], s["n"], s["qwenlong"]) for s in summary] == [("frames", 2, 50.0)]  # (1 + 0) / 2
    assert "frames       n=2     qwenlong 50.0  strict 50.0" in res.stdout and (out / "report.md").is_file()


def test_eval_score_benchmarks_option(tmp_path: Path) -> None:
    from nemo_qwenlong.cli.main import main

    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["eval", "score", "--benchmarks", "docmath", "--responses", str(responses), "--output",
                 str(tmp_path / "d"), "--no-progress"]) == 0
    # d1: "12" after "the answer is" equals the gold 12 under both protocols
    assert [(s["id"], s["scores"]["qwenlong"], s["scores"]["strict"]) for s in _jsonl(tmp_path / "d" / "scores.jsonl")] \
        == [("d1", 1.0, 1.0)]


def test_script_errors_follow_the_cli_convention(tmp_path: Path) -> None:
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    res = _script("qasper_verify.py", "--responses", str(responses), "--output", str(tmp_path / "q"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"eval/qasper_verify.py error: {responses}: no rows of qasper to score; "
                                 "it holds docmath, frames")
    res = _script("frames.py")
    assert res.returncode == 2 and res.stderr.startswith("eval/frames.py error: missing --model, --output")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    res = _script("frames.py", "--model", str(model), "--data-dir", str(tmp_path / "none"), "--output", str(tmp_path / "g"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"eval/frames.py error: frames: {tmp_path / 'none' / 'frames' / 'test.jsonl'} not found")
    assert not (tmp_path / "g").exists()
    res = _script("docmath.py", "--samples", "0")  # argparse's own refusal: exit 2, the option named
    assert res.returncode == 2 and "eval/docmath.py: error: argument --samples: must be >= 1, got 0" in res.stderr


def test_frames_generate_then_verify_through_a_vllm_server(judge_server, tmp_path: Path) -> None:  # noqa: ANN001
    """The released two-step flow on the fixture's two Frames items, against the real vLLM server (the
    scripted tiny model answers every prompt "The answers agree. [[YES]]") and the real judge."""
    out = tmp_path / "frames"
    res = _script("frames.py", "--data-dir", str(DATA), "--model", str(judge_server.model_dir), "--server-url",
                  judge_server.base_url, "--served-model-name", "judge", "--output", str(out), "--max-new-tokens", "16",
                  "--max-input-tokens", "48", "--temperature", "0", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _jsonl(out / "responses.jsonl")
    assert [r["benchmark"] for r in rows] == ["frames", "frames"]
    assert all(r["response"] == "The answers agree. [[YES]]" for r in rows)
    res = _script("frames_verify.py", "--responses", str(out / "responses.jsonl"), "--output", str(out),
                  "--judge-url", judge_server.base_url, "--judge-model", "judge", "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    scores = _jsonl(out / "scores.jsonl")
    # the released protocol asks the judge for every item (YES: 1); ours only when an answer was extracted (none: 0)
    assert [(s["scores"]["qwenlong"], s["scores"]["strict"]) for s in scores] == [(1.0, 0.0), (1.0, 0.0)]
