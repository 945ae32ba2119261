"""`docmath_official`, judge path: DocMath-Eval's answer extraction asked of the judge endpoint, against a
scripted OpenAI-compatible HTTP server (test double, tests/fixtures/chat_server.py): the exact request,
DocMath-Eval's "none" handling (asked again twice with max_tokens 8, then 0), retries with backoff, an
unreachable endpoint counted and the rule path kept. Also the phrase extractor's edges."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from nemo_qwenlong.cli.main import main
from nemo_qwenlong.config.pipeline import EvaluationConfig, JudgeConfig
from nemo_qwenlong.eval.docmath_eval import final_answer_phrase, official_cot_acc
from nemo_qwenlong.eval.docmath_extract import EXTRACTION_INSTRUCTION, AnswerExtractor, ExtractionRequest
from nemo_qwenlong.eval.run import score_and_report
from tests.fixtures.chat_server import scripted_chat_server


def _cfg(url: str, **kw: object) -> JudgeConfig:
    return JudgeConfig(**{"base_url": url, "model": "m", "cache_path": None, "backoff_initial_s": 0.01,
                          "backoff_max_s": 0.02, "timeout_s": 5, **kw})


def _replies(*script: object):  # noqa: ANN202 - the next scripted reply per request, the last one repeats
    state = {"n": 0}

    def reply(body: dict) -> tuple[int, str | None]:
        item = script[min(state["n"], len(script) - 1)]
        state["n"] += 1
        return (item, None) if isinstance(item, int) else (200, item)
    return reply


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


def test_phrase_edges() -> None:
    assert final_answer_phrase("so THE ANSWER IS $1.5 million. Next.") == "$1.5 million"
    assert final_answer_phrase("the answer is 3.14159") == "3.14159"  # no sentence end: to the end
    assert final_answer_phrase("the answer is 12.5..") == "12.5."  # get_acc's rstrip('.') handles the rest
    assert final_answer_phrase("the answer is\n  42 units\nmore") == "42 units"
    assert final_answer_phrase("the answer is 1! Really? the answer is 2? yes") == "2"
    assert final_answer_phrase("no phrase here") is None
    assert final_answer_phrase("the answer is .") == ""


def test_extractor_asks_what_docmath_eval_asks() -> None:
    with scripted_chat_server(_replies("500")) as server:
        out = AnswerExtractor(_cfg(server.url)).extract([ExtractionRequest("How much?", "It is RMB 500.")])
    assert out[0].text == "500" and out[0].error is None and out[0].replies == 1
    body = server.seen[0]
    assert body["messages"] == [
        {"role": "user", "content": EXTRACTION_INSTRUCTION},
        {"role": "assistant", "content": "Question: How much?\nSolution:\nIt is RMB 500.\n"}]
    assert body["model"] == "m" and body["temperature"] == 1.0 and body["top_p"] == 1.0 and body["max_tokens"] == 16
    assert EXTRACTION_INSTRUCTION.startswith("Extract the final answer of the question as a numeric value")
    assert EXTRACTION_INSTRUCTION.endswith('return "None" or a numeric value without any additional words.')


def test_none_is_asked_twice_more_then_scores_zero() -> None:
    with scripted_chat_server(_replies("None")) as server:
        extractor = AnswerExtractor(_cfg(server.url))
        out = extractor.extract([ExtractionRequest("Q?", "I cannot tell.")])[0]
    assert [b["max_tokens"] for b in server.seen] == [16, 8, 8]
    assert out.text == "None" and out.error is None and out.replies == 3
    assert extractor.counters.none_reasks == 2 and extractor.counters.failures == 0
    assert official_cot_acc(out.text, 0.0) == 0  # "none" scores 0 even where get_acc would pass (0 vs 0)


def test_none_then_a_number() -> None:
    with scripted_chat_server(_replies("none", "42")) as server:
        out = AnswerExtractor(_cfg(server.url)).extract([ExtractionRequest("Q?", "about 42")])[0]
    assert out.text == "42" and out.replies == 2 and [b["max_tokens"] for b in server.seen] == [16, 8]


def test_server_errors_are_retried_with_backoff() -> None:
    with scripted_chat_server(_replies(500, 429, "7")) as server:
        extractor = AnswerExtractor(_cfg(server.url, max_retries=3))
        out = extractor.extract([ExtractionRequest("Q?", "7")])[0]
    assert out.text == "7" and out.attempts == 3 and extractor.counters.retries == 2


def test_unreachable_endpoint_fails_visibly() -> None:
    extractor = AnswerExtractor(_cfg(_closed_port_url(), max_retries=3))
    out = extractor.extract([ExtractionRequest("Q?", "7")])[0]
    assert out.text is None and "APIConnectionError" in out.error and "after 3 attempt(s)" in out.error
    assert extractor.counters.failures == 1 and extractor.counters.retries == 2


def test_a_slow_endpoint_times_out() -> None:
    import time

    def slow(body: dict) -> tuple[int, str]:
        time.sleep(1.0)
        return 200, "7"
    with scripted_chat_server(slow) as server:
        out = AnswerExtractor(_cfg(server.url, timeout_s=0.2, max_retries=2)).extract([ExtractionRequest("Q?", "7")])[0]
    assert out.text is None and "Timeout" in out.error and "after 2 attempt(s)" in out.error


def _responses(path: Path) -> Path:
    rows = [("million", "Therefore, the answer is 42 million dollars.", "42000000.0"),
            ("none", "Therefore, the answer is none of the above.", "0.0"),
            ("fraction", "Therefore, the answer is 2/3.", "0.6667")]
    path.write_text("".join(json.dumps({"id": i, "benchmark": "docmath", "response": f"<think>x</think>{r}",
                                        "answers": [g], "question": f"question {i}"}) + "\n" for i, r, g in rows))
    return path


def _extractor_or_judge(body: dict) -> tuple[int, str]:
    """Extraction requests: what an LLM extractor answers for each solution; judge requests: NO."""
    if body["messages"][0]["content"] != EXTRACTION_INSTRUCTION:
        return 200, "NO [[NO]]"
    solution = body["messages"][1]["content"]
    return 200, "42000000" if "million" in solution else ("None" if "none" in solution else "0.6667")


def test_eval_score_judge_path_end_to_end(tmp_path: Path) -> None:
    with scripted_chat_server(_extractor_or_judge) as server:
        argv = ["eval", "score", "--responses", str(_responses(tmp_path / "r.jsonl")), "--output", str(tmp_path / "o"),
                "--no-progress", "--judge-url", server.url, "--judge-model", "m", "--docmath-extractor", "judge"]
        assert main(argv) == 0
    scored = {s["id"]: s for s in map(json.loads, (tmp_path / "o" / "scores.jsonl").read_text().splitlines())}
    # 42000000 -> 1 (the rule path scores "42 million dollars" 0); "None" -> 0; 0.6667 -> 1
    assert {k: s["scores"]["docmath_official"] for k, s in scored.items()} == {"million": 1.0, "none": 0.0, "fraction": 1.0}
    assert scored["million"]["docmath_official"] == {"extractor": "judge", "answer": "42000000", "replies": 1,
                                                     "rule_answer": "42 million dollars", "rule_score": 0.0}
    assert scored["none"]["docmath_official"]["replies"] == 3 and scored["none"]["failure"] is None
    summary = json.loads((tmp_path / "o" / "results.jsonl").read_text().splitlines()[0])
    assert summary["docmath_judge_extracted"] == 3 and summary["docmath_extractor_failures"] == 0
    assert summary["docmath_official"] == pytest.approx(200 / 3)
    assert "3 answer(s) extracted by the judge endpoint" in (tmp_path / "o" / "report.md").read_text()


def test_unreachable_extractor_keeps_the_rule_path_and_is_counted(tmp_path: Path) -> None:
    cfg = _cfg(_closed_port_url(), max_retries=2, timeout_s=2)
    summary = score_and_report(_responses(tmp_path / "r.jsonl"), tmp_path / "o", judge=cfg, model_name="m",
                               docmath_extractor="judge")
    assert summary[0]["docmath_extractor_failures"] == 3 and summary[0]["docmath_judge_extracted"] == 0
    assert summary[0]["docmath_official"] == pytest.approx(100 / 3)  # the rule path: 0, 0, 1
    scored = [json.loads(line) for line in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    assert all("docmath extractor: APIConnectionError" in s["failure"] for s in scored)
    assert all(s["docmath_official"]["extractor"] == "rule" for s in scored)
    assert "**3 extraction(s) failed** (those rows use the rule path)" in (tmp_path / "o" / "report.md").read_text()


def test_judge_path_needs_a_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "score", "--responses", str(_responses(tmp_path / "r.jsonl")), "--output", str(tmp_path / "o"),
            "--docmath-extractor", "judge"]
    assert main(argv) == 2
    assert "--docmath-extractor judge asks the judge endpoint: give --judge-url" in capsys.readouterr().err
    with pytest.raises(ValueError, match="(?s)docmath_extractor.*'rule' or 'judge'"):
        EvaluationConfig(docmath_extractor="llm")


def test_run_config_refuses_the_judge_path_without_a_judge() -> None:
    from nemo_qwenlong.config.schema import RunConfig

    with pytest.raises(ValueError, match="docmath_extractor='judge' asks reward.judge, but reward.judge_when='never'"):
        RunConfig(evaluation={"docmath_extractor": "judge"}, reward={"judge_when": "never"})
    assert RunConfig().evaluation.docmath_extractor == "rule"
