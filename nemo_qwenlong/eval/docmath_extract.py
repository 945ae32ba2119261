"""DocMath-Eval's answer extraction by a language model (its `extract_cot_answers`), asked of the configured
judge endpoint (any OpenAI-compatible server): the judge path of `docmath_official`.

What is asked, as DocMath-Eval asks it (yale-nlp/DocMath-Eval @ 5c9b9b44, `utils/evaluation_utils.py`
and `utils/openai_utils.py`): its instruction (below, its wording) as the *user* turn, then
`"Question: {question}\\nSolution:\\n{output}\\n"` as an *assistant* turn; temperature 1.0 and top_p 1.0
(its client's defaults), max_tokens 16. A reply that holds "none" (any case) is asked again, at most
twice, with max_tokens 8; the last reply stands (and still scores 0 if it says "none"). DocMath-Eval asks
gpt-3.5-turbo; here the judge model answers. The solution is the response's answer region.

Endpoint failures: every call has a timeout and is retried with exponential backoff on 429, 5xx,
connection errors and timeouts (`rewards.judge.RETRYABLE`; the judge config's tries and delays). A call
that still fails (or a 4xx, or a reply without content) gives no extraction: `Extraction.error` says
why and the caller falls back to the rule path and counts it. DocMath-Eval itself would score the text
"Invalid Message" there; an endpoint outage is ours, not the model's, so it is not scored as an answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import openai

from nemo_qwenlong.config.pipeline import JudgeConfig
from nemo_qwenlong.eval.docmath_eval import is_none_answer
from nemo_qwenlong.rewards.judge import RETRYABLE, backoff_delay

log = logging.getLogger(__name__)

# DocMath-Eval's extraction instruction, word for word (a prompt: its wording is the protocol)
EXTRACTION_INSTRUCTION = (
    "Extract the final answer of the question as a numeric value from the given solution. "
    'If you cannot extract an answer, return "None".\n\n'
    'You should either return "None" or a numeric value without any additional words.'
)
FIRST_MAX_TOKENS = 16
REASK_MAX_TOKENS = 8
NONE_REASKS = 2  # DocMath-Eval's `while count < 2`
TEMPERATURE = 1.0
TOP_P = 1.0


def extraction_messages(question: str, solution: str) -> list[dict[str, str]]:
    """The chat DocMath-Eval sends: instruction as the user turn, question and solution as an assistant turn."""
    return [{"role": "user", "content": EXTRACTION_INSTRUCTION},
            {"role": "assistant", "content": f"Question: {question}\nSolution:\n{solution}\n"}]


@dataclass(frozen=True)
class ExtractionRequest:
    question: str
    solution: str


@dataclass
class Extraction:
    text: str | None  # the last reply as sent; None: no extraction (see error)
    replies: int = 0  # completions received (1 + "none" re-asks)
    attempts: int = 0  # HTTP attempts, retries included
    error: str | None = None
    latency_s: float = 0.0


@dataclass
class ExtractorCounters:
    requested: int = 0
    http_requests: int = 0
    retries: int = 0
    none_reasks: int = 0
    failures: int = 0


class _CallFailed(Exception):
    pass


class AnswerExtractor:
    """Extracts final answers over the judge endpoint; `extract()` for sync callers, `extract_async()` in a loop."""

    def __init__(self, cfg: JudgeConfig, *, client_factory: Callable[[], openai.AsyncOpenAI] | None = None) -> None:
        self.cfg = cfg
        self.counters = ExtractorCounters()
        self._client_factory = client_factory or self._default_client

    def _default_client(self) -> openai.AsyncOpenAI:
        api_key = os.environ.get(self.cfg.api_key_env) or "EMPTY"
        return openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=api_key, timeout=self.cfg.timeout_s,
                                  max_retries=0)

    def extract(self, requests: Sequence[ExtractionRequest]) -> list[Extraction]:
        return asyncio.run(self.extract_async(requests))

    async def extract_async(self, requests: Sequence[ExtractionRequest]) -> list[Extraction]:
        if not requests:
            return []
        semaphore = asyncio.Semaphore(self.cfg.concurrency)
        client = self._client_factory()
        try:
            return list(await asyncio.gather(*(self._extract_one(client, semaphore, r) for r in requests)))
        finally:
            await client.close()

    async def _extract_one(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                           req: ExtractionRequest) -> Extraction:
        self.counters.requested += 1
        messages = extraction_messages(req.question, req.solution)
        out = Extraction(text=None)
        start = time.perf_counter()
        async with semaphore:
            try:
                for ask in range(1 + NONE_REASKS):
                    max_tokens = FIRST_MAX_TOKENS if ask == 0 else REASK_MAX_TOKENS
                    out.text = await self._call(client, messages, max_tokens, out)
                    out.replies += 1
                    if not is_none_answer(out.text):
                        break
                    if ask < NONE_REASKS:
                        self.counters.none_reasks += 1
            except _CallFailed as exc:
                out.text, out.error = None, str(exc)
        out.latency_s = time.perf_counter() - start
        if out.error is not None:
            self.counters.failures += 1
            log.debug("docmath extraction failed after %d attempt(s): %s", out.attempts, out.error)
        return out

    async def _call(self, client: openai.AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int,
                    out: Extraction) -> str:
        """One completion's text, retried with backoff on retryable errors; raises _CallFailed otherwise."""
        cfg = self.cfg
        for attempt in range(1, cfg.max_retries + 1):
            out.attempts += 1
            self.counters.http_requests += 1
            try:
                response = await asyncio.wait_for(client.chat.completions.create(
                    model=cfg.model, messages=messages, temperature=TEMPERATURE, top_p=TOP_P, max_tokens=max_tokens,
                ), timeout=cfg.timeout_s)
            except Exception as exc:  # noqa: BLE001 - sorted below
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
                if not isinstance(exc, RETRYABLE + (openai.APIError,)):
                    raise
                if not isinstance(exc, RETRYABLE) or attempt == cfg.max_retries:
                    raise _CallFailed(f"{error} (after {attempt} attempt(s))") from None
                self.counters.retries += 1
                await asyncio.sleep(backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s))
                continue
            content = response.choices[0].message.content if response.choices else None
            if content is None:
                raise _CallFailed("no content in the extractor's reply")
            return content
        raise _CallFailed("no attempt made")  # max_retries >= 1 in the schema
