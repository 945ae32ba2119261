"""`eval generate`: responses for evaluation items, appended to `responses.jsonl` as each finishes.

The released client (spec §8): one user message (the server applies the chat template), temperature
0.7, top-p 0.95, at most 10,000 new tokens, 5 tries, a 1,800 s timeout, and **middle truncation by
tokens** above 120,000: `tokenizer.encode(prompt)` (special tokens as the tokenizer adds them), keep
the first and last half, decode without special tokens. Ours adds bounded concurrency, backoff
between tries, and a row for every failure (`response: null`, `error`), which the report counts;
the released scripts dropped those items silently. A re-run skips rows with a response and retries
failed ones (the later line replaces the earlier).

Engines: an OpenAI-compatible server (`--server-url`, or a `vllm serve` we start), or vLLM in this
process (the prompt goes through the tokenizer's chat template, as the server would apply it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_qwenlong.eval.benchmarks import EvalItem
from nemo_qwenlong.eval.released import OPENAI_SDK_RETRIES
from nemo_qwenlong.eval.results import ResultsFile
from nemo_qwenlong.eval.score import row_key

log = logging.getLogger(__name__)
RESPONSES_FILE = "responses.jsonl"


@dataclass(frozen=True)
class GenerateOptions:
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 10_000
    max_input_tokens: int = 120_000
    samples: int = 1
    concurrency: int = 16
    timeout_s: float = 1800.0
    tries: int = 5
    seed: int | None = None  # None: no seed sent (the released client); else seed + sample index


@dataclass(frozen=True)
class Job:
    item: EvalItem
    sample: int
    prompt: str  # after truncation
    input_tokens: int
    truncated: bool

    @property
    def key(self) -> str:
        return row_key({"benchmark": self.item.benchmark, "id": self.item.id, "sample": self.sample})


def truncate_middle(tokenizer: Any, prompt: str, cap: int) -> tuple[str, int, bool]:
    """(prompt to send, its token count before truncation, truncated?): the released rule."""
    ids = tokenizer.encode(prompt)
    if len(ids) <= cap:
        return prompt, len(ids), False
    kept = ids[: cap // 2] + ids[(-cap) // 2:]
    return tokenizer.decode(kept, skip_special_tokens=True), len(ids), True


def plan_jobs(items: Sequence[EvalItem], tokenizer: Any, opts: GenerateOptions, done: set[str]) -> list[Job]:
    jobs = []
    for item in items:
        keys = [row_key({"benchmark": item.benchmark, "id": item.id, "sample": s}) for s in range(opts.samples)]
        if all(k in done for k in keys):
            continue
        prompt, n_tokens, truncated = truncate_middle(tokenizer, item.prompt, opts.max_input_tokens)
        jobs += [Job(item, s, prompt, n_tokens, truncated) for s, k in enumerate(keys) if k not in done]
    return jobs


def response_row(job: Job, text: str | None, *, output_tokens: int | None = None, finish_reason: str | None = None,
                 error: str | None = None, seconds: float | None = None) -> dict[str, Any]:
    """One line of responses.jsonl: the `eval score` input layout plus generation facts."""
    return {"key": job.key, "id": job.item.id, "benchmark": job.item.benchmark, "sample": job.sample,
            "response": None if text is None else text.strip(), "answers": list(job.item.answers),
            "question": job.item.question, "input_tokens": job.input_tokens, "truncated": job.truncated,
            "output_tokens": output_tokens, "finish_reason": finish_reason, "error": error, "seconds": seconds}


def _seed(opts: GenerateOptions, job: Job) -> int | None:
    return None if opts.seed is None else opts.seed + job.sample


class ServerEngine:
    """Chat completions against an OpenAI-compatible server, `concurrency` requests in flight."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "EVAL_API_KEY") -> None:
        self.base_url, self.model = base_url, model
        self.api_key = os.environ.get(api_key_env) or "EMPTY"

    def run(self, jobs: Sequence[Job], opts: GenerateOptions, sink: Callable[[dict[str, Any]], None]) -> None:
        asyncio.run(self._run(jobs, opts, sink))

    async def _run(self, jobs: Sequence[Job], opts: GenerateOptions, sink: Callable[[dict[str, Any]], None]) -> None:
        import openai

        # the released client kept the SDK's own 2 retries inside each of its tries
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=opts.timeout_s,
                                    max_retries=OPENAI_SDK_RETRIES)
        semaphore = asyncio.Semaphore(opts.concurrency)
        try:
            async def one(job: Job) -> None:
                async with semaphore:
                    sink(await self._complete(client, job, opts))

            await asyncio.gather(*(one(j) for j in jobs))
        finally:
            await client.close()

    async def _complete(self, client: Any, job: Job, opts: GenerateOptions) -> dict[str, Any]:
        from nemo_qwenlong.rewards.judge import backoff_delay

        extra = {} if opts.seed is None else {"seed": _seed(opts, job)}
        error, start = None, time.perf_counter()
        for attempt in range(1, opts.tries + 1):
            try:
                out = await client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": job.prompt}], temperature=opts.temperature,
                    top_p=opts.top_p, max_tokens=opts.max_new_tokens, **extra)
                choice = out.choices[0]
                tokens = out.usage.completion_tokens if out.usage is not None else None
                return response_row(job, choice.message.content or "", output_tokens=tokens,
                                    finish_reason=choice.finish_reason, seconds=time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then recorded
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.debug("generation %s try %d failed: %s", job.key, attempt, error)
                if attempt < opts.tries:
                    await asyncio.sleep(backoff_delay(attempt, 1.0, 30.0))
        return response_row(job, None, error=f"{opts.tries} tries failed; last: {error}", seconds=time.perf_counter() - start)


class InProcessEngine:
    """vLLM in this process (`backends.vllm.engine.VLLMGenerator`): chat template applied here."""

    def __init__(self, generator: Any, tokenizer: Any) -> None:
        self.generator, self.tokenizer = generator, tokenizer

    def run(self, jobs: Sequence[Job], opts: GenerateOptions, sink: Callable[[dict[str, Any]], None]) -> None:
        from nemo_qwenlong.rollout.generator import SamplingSettings

        by_sample: dict[int, list[Job]] = {}
        for job in jobs:
            by_sample.setdefault(job.sample, []).append(job)
        for sample, group in sorted(by_sample.items()):
            prompts = [self._ids(j.prompt) for j in group]
            settings = SamplingSettings(n=1, temperature=opts.temperature, top_p=opts.top_p,
                                        max_tokens=opts.max_new_tokens,
                                        seed=None if opts.seed is None else opts.seed + 1000 * sample)
            start = time.perf_counter()
            for index, samples in self.generator.generate_iter(prompts, settings):
                s = samples[0]
                text = self.tokenizer.decode(list(s.token_ids), skip_special_tokens=True)
                sink(response_row(group[index], text, output_tokens=len(s.token_ids), finish_reason=s.finish_reason,
                                  seconds=time.perf_counter() - start))

    def _ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def generate(items: Iterable[EvalItem], out_dir: Path, engine: Any, tokenizer: Any, opts: GenerateOptions, *,
             progress: Callable[[int, int], Callable[[], None]] | None = None) -> dict[str, int]:
    """Generate what `out_dir/responses.jsonl` lacks; returns counts (planned, written, failed, skipped)."""
    results = ResultsFile(out_dir / RESPONSES_FILE)
    done = {r["key"] for r in results.rows() if r.get("response") is not None}
    items = list(items)
    jobs = plan_jobs(items, tokenizer, opts, done)
    counts = {"planned": len(items) * opts.samples, "skipped": len(items) * opts.samples - len(jobs),
              "written": 0, "failed": 0, "truncated": sum(j.truncated for j in jobs)}
    tick = progress(len(jobs), counts["skipped"]) if progress else None

    def sink(row: dict[str, Any]) -> None:
        results.append([row])
        counts["written"] += 1
        counts["failed"] += row["response"] is None
        if tick:
            tick()

    if jobs:
        engine.run(jobs, opts, sink)
    return counts
