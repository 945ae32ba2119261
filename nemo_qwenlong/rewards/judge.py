"""Async LLM-judge client over any OpenAI-compatible server (vLLM in production; spec §3.2).

Bounded concurrency (a semaphore), a per-request timeout, retries with exponential backoff on
HTTP 429 / 5xx / connection errors / timeouts, and a persistent SQLite verdict cache. The API key
is read from the environment variable named in the config and is never logged. Failures are
returned per request (`JudgeOutcome.error`), never raised: the caller decides (see rewards.hybrid).

What is asked and how the reply is read is a `JudgeProtocol`: `STRICT` (ours, the default: the
hardened prompt of `judge_prompt`, last `[[YES]]`/`[[NO]]` token) or the released evaluation's
(`eval.released`), which `eval` builds with `released_protocol()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import openai

from nemo_qwenlong.config.pipeline import JudgeConfig
from nemo_qwenlong.rewards.judge_cache import VerdictCache, cache_key
from nemo_qwenlong.rewards.judge_prompt import PROMPT_VERSION, build_messages, parse_verdict, sanitize_prediction

log = logging.getLogger(__name__)

RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError, asyncio.TimeoutError)


@dataclass(frozen=True)
class JudgeRequest:
    question: str
    prediction: str | None
    gold: str


@dataclass(frozen=True)
class JudgeProtocol:
    """How one judgement is asked and read. `tries`/`temperature` None: from the config; `max_tokens`
    False: none sent; `error_verdict`: the verdict a non-retryable error scores (None: no verdict);
    `any_error`: every exception of the call is such an error (else only API errors and timeouts, and
    anything else propagates); `sdk_retries`: the OpenAI client's own retries inside each try."""

    version: str  # part of the cache key
    prepare: Callable[[str | None, JudgeConfig], str]  # prediction -> Answer 1 text
    messages: Callable[[str, str, str], list[dict[str, str]]]  # (problem, answer 1, answer 2)
    parse: Callable[[str | None], bool | None]
    retryable: Callable[[BaseException], bool]
    tries: int | None = None
    temperature: float | None = None
    seed: int | None = None
    send_max_tokens: bool = True
    error_verdict: bool | None = None
    any_error: bool = False
    sdk_retries: int = 0


STRICT = JudgeProtocol(
    version=PROMPT_VERSION, prepare=lambda p, cfg: sanitize_prediction(p, cfg.max_prediction_chars),
    messages=build_messages, parse=parse_verdict, retryable=lambda exc: isinstance(exc, RETRYABLE),
)


@dataclass
class JudgeOutcome:
    verdict: bool | None  # None: no verdict (see error)
    cached: bool = False
    latency_s: float = 0.0
    attempts: int = 0
    error: str | None = None


@dataclass
class JudgeCounters:
    requested: int = 0
    cache_hits: int = 0
    http_requests: int = 0
    retries: int = 0
    failures: int = 0

    def add(self, other: "JudgeCounters") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Delay before retry `attempt` (1-based): initial · 2^(attempt−1), capped at max_s."""
    return min(initial_s * 2 ** (attempt - 1), max_s)


class JudgeClient:
    """Judges (question, prediction, gold) triples; `judge()` for sync callers, `judge_async()` inside a loop."""

    def __init__(
        self,
        cfg: JudgeConfig,
        *,
        run_dir: str | Path | None = None,
        client_factory: Callable[[], openai.AsyncOpenAI] | None = None,
        protocol: JudgeProtocol = STRICT,
    ) -> None:
        self.cfg = cfg
        self.protocol = protocol
        self.counters = JudgeCounters()
        self._client_factory = client_factory or self._default_client
        self.cache: VerdictCache | None = None
        if cfg.cache_path:
            path = Path(cfg.cache_path)
            self.cache = VerdictCache(path if path.is_absolute() else Path(run_dir or ".") / path)

    def _default_client(self) -> openai.AsyncOpenAI:
        api_key = os.environ.get(self.cfg.api_key_env) or "EMPTY"
        return openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=api_key, timeout=self.cfg.timeout_s,
                                  max_retries=self.protocol.sdk_retries)

    def judge(self, requests: Sequence[JudgeRequest]) -> list[JudgeOutcome]:
        return asyncio.run(self.judge_async(requests))

    async def judge_async(self, requests: Sequence[JudgeRequest]) -> list[JudgeOutcome]:
        semaphore = asyncio.Semaphore(self.cfg.concurrency)
        client = self._client_factory()
        try:
            return list(await asyncio.gather(*(self._judge_one(client, semaphore, r) for r in requests)))
        finally:
            await client.close()

    async def _judge_one(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, req: JudgeRequest) -> JudgeOutcome:
        cfg, proto = self.cfg, self.protocol
        prediction = proto.prepare(req.prediction, cfg)
        key = cache_key(proto.version, cfg.model, req.question, prediction, req.gold)
        self.counters.requested += 1
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.counters.cache_hits += 1
            return JudgeOutcome(verdict=hit, cached=True)
        messages = proto.messages(req.question, prediction, req.gold)
        tries = proto.tries or cfg.max_retries
        start = time.perf_counter()
        outcome = JudgeOutcome(verdict=None)
        async with semaphore:
            for attempt in range(1, tries + 1):
                outcome.attempts = attempt
                try:
                    self.counters.http_requests += 1
                    reply = await asyncio.wait_for(self._complete(client, messages), timeout=cfg.timeout_s)
                except Exception as exc:  # noqa: BLE001 - sorted below by the protocol
                    outcome.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    if proto.retryable(exc):
                        if attempt < tries:
                            self.counters.retries += 1
                            await asyncio.sleep(backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s))
                        continue
                    if not (proto.any_error or isinstance(exc, (openai.APIError, asyncio.TimeoutError))):
                        raise
                    outcome.verdict = proto.error_verdict  # not retried under this protocol
                    break
                outcome.verdict = proto.parse(reply)
                outcome.error = None if outcome.verdict is not None else "no verdict in the judge reply"
                if outcome.verdict is not None and self.cache is not None:
                    self.cache.put(key, model=cfg.model, question=req.question, prediction=prediction,
                                   gold=req.gold, verdict=outcome.verdict, reply=reply or "")
                break
        outcome.latency_s = time.perf_counter() - start
        if outcome.error is not None:
            self.counters.failures += 1
            log.debug("judge failed after %d attempt(s): %s", outcome.attempts, outcome.error)
        return outcome

    async def _complete(self, client: openai.AsyncOpenAI, messages: list[dict[str, str]]) -> str | None:
        proto = self.protocol
        extra: dict = {}
        if proto.send_max_tokens:
            extra["max_tokens"] = self.cfg.max_tokens
        if proto.seed is not None:
            extra["seed"] = proto.seed
        temperature = self.cfg.temperature if proto.temperature is None else proto.temperature
        response = await client.chat.completions.create(
            model=self.cfg.model, messages=messages, temperature=temperature, n=1, **extra,
        )
        return response.choices[0].message.content

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
