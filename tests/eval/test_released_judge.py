"""The released judge call's failure semantics against a real local HTTP server that answers 429/500:
3 tries retried only when the error says 429, each try with the OpenAI SDK's own 2 retries; other
errors score 0 (kept); three failed tries lose the item."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nemo_qwenlong.config.pipeline import JudgeConfig
from nemo_qwenlong.eval.released import judge_protocol
from nemo_qwenlong.rewards.judge import JudgeClient, JudgeRequest


class Scripted(BaseHTTPRequestHandler):
    """Replies with the next status of `script` (the last one repeats); 200 is a chat completion saying YES."""

    script: list[int] = []
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Scripted.seen.append(body)
        status = Scripted.script[min(len(Scripted.seen) - 1, len(Scripted.script) - 1)]
        payload = {"error": {"message": f"status {status}"}} if status != 200 else {
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "YES"}}]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("retry-after-ms", "5")  # the SDK's own retries wait this long
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Scripted.seen = []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()


def _judge(url: str, script: list[int]) -> tuple[object, int]:
    Scripted.script = script
    cfg = JudgeConfig(base_url=url, model="m", cache_path=None, backoff_initial_s=0.01, backoff_max_s=0.02, timeout_s=10)
    client = JudgeClient(cfg, protocol=judge_protocol())
    outcome = client.judge([JudgeRequest("Q?", None, "Paris")])[0]
    return outcome, len(Scripted.seen)


def test_429s_are_retried_inside_and_across_tries(server: str) -> None:
    outcome, requests = _judge(server, [429, 429, 429, 429, 200])
    assert outcome.verdict is True and requests == 5  # try 1: 3 requests (SDK retries), try 2: 2
    body = Scripted.seen[-1]
    assert body["temperature"] == 0.0 and body["seed"] == 42 and "max_tokens" not in body
    assert body["messages"][1]["content"] == "\nProblem: Q?\nAnswer 1: None\nAnswer 2: Paris\n"


def test_three_failed_tries_lose_the_item(server: str) -> None:
    outcome, requests = _judge(server, [429])
    assert outcome.verdict is None and requests == 9 and "RateLimitError" in outcome.error


def test_other_errors_score_zero_and_keep_the_item(server: str) -> None:
    outcome, requests = _judge(server, [500])
    assert outcome.verdict is False and requests == 3 and "InternalServerError" in outcome.error
