"""transformers generation on the Generator interface: the reference for tests and for machines
without vLLM (slow: no paged KV cache, no continuous batching; one prompt at a time).

Log-probs of sampled tokens follow vLLM's "processed" definition: log-softmax of the scores after
the logits processors (temperature, top-k, top-p masking) — `output_scores` of `generate`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.packing import tensor_bytes
from nemo_qwenlong.rollout.generator import RefitStats, Sample, SamplingSettings, in_prompt_order, sample_seed
from nemo_qwenlong.rollout.refit import buckets


class HFGenerator:
    def __init__(self, model_dir: str | Path, *, dtype: str = "float32", device: str = "cpu",
                 config_overrides: dict | None = None) -> None:
        """`config_overrides`: config fields to replace (YaRN's, as vLLM's `hf_overrides` takes them)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        config = AutoConfig.from_pretrained(model_dir, **(config_overrides or {}))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=getattr(torch, dtype),
                                                          trust_remote_code=False).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir) if (Path(model_dir) / "tokenizer_config.json").exists() else None
        self.device = device
        self.eos = self.model.generation_config.eos_token_id

    def generate_iter(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> Iterator[tuple[int, list[Sample]]]:
        """Sample k of prompt i is drawn after torch.manual_seed(seed + i·n + k) (`sample_seed`, the
        vLLM engine's rule), so it equals a lone request for that prompt seeded that way."""
        s = settings
        for i, prompt in enumerate(prompts):
            seeds = [None if s.seed is None else sample_seed(s.seed, i, s.n, k) for k in range(s.n)]
            yield i, [self._one(prompt, s, seed) for seed in seeds]

    def generate(self, prompts: Sequence[Sequence[int]], settings: SamplingSettings) -> list[list[Sample]]:
        return in_prompt_order(self.generate_iter(prompts, settings), len(prompts))

    @torch.no_grad()
    def _one(self, prompt: Sequence[int], s: SamplingSettings, seed: int | None) -> Sample:
        if seed is not None:
            torch.manual_seed(seed)
        greedy = s.temperature == 0
        model_eos = [] if s.ignore_eos or self.eos is None else self.eos if isinstance(self.eos, list) else [self.eos]
        eos = [*model_eos, *s.stop_token_ids]
        kwargs = dict(max_new_tokens=s.max_tokens, do_sample=not greedy, eos_token_id=eos or None, pad_token_id=0,
                      output_scores=True, return_dict_in_generate=True)
        if not greedy:
            kwargs |= dict(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k if s.top_k > 0 else 0)
        if s.stop:
            kwargs |= dict(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        ids = torch.tensor([list(prompt)], device=self.device)
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        tokens = out.sequences[0, len(prompt):].tolist()
        logprobs = [float(torch.log_softmax(step[0].float(), -1)[t]) for step, t in zip(out.scores, tokens)]
        stopped = bool(tokens) and (tokens[-1] in eos or len(tokens) < s.max_tokens)
        return Sample(tuple(tokens), tuple(logprobs), "stop" if stopped else "length")

    @torch.no_grad()
    def score(self, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]]) -> list[list[float]]:
        scores = []
        for prompt, cont in zip(prompts, continuations):
            ids = torch.tensor([list(prompt) + list(cont)], device=self.device)
            logsm = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), -1)
            start = len(prompt)
            scores.append([float(logsm[start - 1 + j, t]) for j, t in enumerate(cont)])
        return scores

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, Tensor]], *, bucket_bytes: int) -> RefitStats:
        started = time.perf_counter()
        params = dict(self.model.named_parameters())
        count = n = total = 0
        for bucket in buckets(named_tensors, bucket_bytes):
            for name, tensor in bucket:
                if name not in params:
                    if name == "lm_head.weight" and self.model.config.tie_word_embeddings:
                        continue
                    raise KeyError(f"refit tensor {name!r} is not a parameter of {type(self.model).__name__}")
                params[name].copy_(tensor)
                total += tensor_bytes((name, tensor))
                count += 1
            n += 1
        return RefitStats(count, n, total, time.perf_counter() - started)
