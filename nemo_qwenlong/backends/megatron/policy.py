"""The Megatron policy the RL and SFT loops drive: log-probs, train steps, lifecycle, refit export.

One optimiser step (`train_step` / `sft_step`) over a batch of rows held by this data-parallel rank:
1. rows are grouped into micro-batches by a token budget (`algorithms.packing`);
   `parallelism.sequence_layout` lays it out padded (rows × the longest), packed (one THD row,
   `algorithms.packed`: valid tokens plus what the padding rules need) or shared_prompt (each
   prompt group's prompt once, its responses branching off it, `algorithms.shared_prompt`);
2. the loss denominator — valid response tokens (or non-empty rows) over *every* micro-batch on
   *every* data-parallel rank — is all-reduced once and passed to each micro-batch's loss
   (`algorithms.losses`), so the gradient does not depend on how rows are split;
3. each micro-batch: rows joined into the sequence layout (`algorithms.sequences`), this
   context-parallel rank's part of it, forward, chunked vocab-parallel log-probs
   (`algorithms.logprobs`: by default fused with the output layer, so no [tokens × vocab/TP]
   logits are held), loss, backward (gradients accumulate);
4. the optimiser sums gradients over DP×CP, clips, sets the scheduled LR and updates (`optim`).

Pipeline parallelism is not supported by this policy (the recipes use TP×CP×DP; design.md §5);
`pipeline_parallel > 1` is refused with that message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from nemo_qwenlong.algorithms.batch import RolloutBatch, TokenRows
from nemo_qwenlong.algorithms.logprobs import fused_token_logprobs, token_logprobs
from nemo_qwenlong.algorithms.losses import (
    count_sequences,
    count_tokens,
    metric_totals,
    metrics_from_totals,
    policy_loss,
)
from nemo_qwenlong.algorithms.packed import PackedLayout, cp_merge_packed, cp_split_packed, pack_rows, row_multiple
from nemo_qwenlong.algorithms.packing import micro_batches_by_tokens, micro_batches_packed, micro_batches_shared_prompt
from nemo_qwenlong.algorithms.sequences import (
    SequenceLayout,
    cp_merge,
    cp_split,
    join_rows,
    padding_multiple,
    to_response_layout,
    to_sequence_layout,
)
from nemo_qwenlong.algorithms.shared_prompt import (
    SharedPromptLayout,
    fitting_groups,
    prompt_groups,
    shared_prompt_rows,
    tree_tokens,
)
from nemo_qwenlong.backends.megatron import cpu_compat
from nemo_qwenlong.backends.megatron.model import build_gpt_model
from nemo_qwenlong.backends.megatron.qwen2_mapping import (
    Qwen2Shape,
    hf_to_megatron,
    iter_megatron_to_hf,
    local_spec_name,
    shard_for_tp,
    unshard_tp,
)
from nemo_qwenlong.config.training import OptimConfig, ParallelismConfig, RLConfig


Rows = RolloutBatch | TokenRows
Layout = SequenceLayout | PackedLayout | SharedPromptLayout


class MegatronPolicy:
    """A Qwen2 GPTModel on this rank (after `parallel.init_parallel`), with its optimiser."""

    def __init__(self, hf_config: dict, parallel: ParallelismConfig, optim: OptimConfig, *, dtype: str = "bfloat16",
                 micro_batch_tokens: int = 80_000, logprob_chunk_tokens: int = 4096, temperature: float = 1.0,
                 total_steps: int | None = None, padded_vocab_size: int | None = None,
                 logprob_impl: Literal["fused", "logits"] = "fused") -> None:
        from megatron.core import parallel_state as ps

        if parallel.pipeline_parallel > 1:
            raise ValueError(f"parallelism.pipeline_parallel={parallel.pipeline_parallel}: the Megatron policy "
                             "supports TP×CP×DP only (pipeline_parallel must be 1)")
        from nemo_qwenlong.backends.megatron.parallel import check_layout_matches, initialised_layout

        check_layout_matches({"tensor_parallel": parallel.tensor_parallel, "context_parallel": parallel.context_parallel},
                             initialised_layout())
        self.hf_config, self.parallel, self.dtype = hf_config, parallel, dtype
        self.micro_batch_tokens, self.chunk, self.temperature = micro_batch_tokens, logprob_chunk_tokens, temperature
        if logprob_impl not in ("fused", "logits"):
            raise ValueError(f"logprob_impl={logprob_impl!r} is not one of ('fused', 'logits')")
        self.logprob_impl = logprob_impl
        self.shape = Qwen2Shape.from_hf_config(hf_config, padded_vocab_size=padded_vocab_size)
        self.tp_group = ps.get_tensor_model_parallel_group()
        self.tp_rank, self.tp_size = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_world_size()
        self.cp_rank, self.cp_size = ps.get_context_parallel_rank(), ps.get_context_parallel_world_size()
        self.dp_group = ps.get_data_parallel_group()  # rows differ across these ranks
        self.grad_group = ps.get_data_parallel_group(with_context_parallel=True)  # gradients summed here
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        module = build_gpt_model(
            hf_config, transformer_impl=parallel.transformer_impl, local_attention=parallel.local_attention,
            tensor_parallel=parallel.tensor_parallel,
            context_parallel=parallel.context_parallel, sequence_parallel=parallel.sequence_parallel, dtype=dtype,
            fp8=parallel.fp8, recompute=parallel.recompute, cp_comm_type=parallel.cp_comm_type,
            padded_vocab_size=padded_vocab_size,
        ).to(self.device)
        from nemo_qwenlong.backends.megatron.optim import choose_optimizer_kind

        if choose_optimizer_kind(parallel.distributed_optimizer, torch.cuda.is_available()) == "distributed":
            from nemo_qwenlong.backends.megatron.optim import MegatronDistributedAdam

            self.optimizer = MegatronDistributedAdam(module, optim, total_steps=total_steps, bf16=dtype == "bfloat16")
            self.model = self.optimizer.model
        else:
            from nemo_qwenlong.backends.megatron.optim import LocalAdamW

            self.optimizer = LocalAdamW(module, optim, total_steps=total_steps, grad_group=self.grad_group,
                                        tp_group=self.tp_group)
            self.model = module
        self.module = module
        self.multiple = padding_multiple(context_parallel=self.cp_size, tensor_parallel=self.tp_size,
                                         sequence_parallel=parallel.sequence_parallel, fp8=parallel.fp8)
        self.sequence_layout, self.row_multiple = parallel.sequence_layout, row_multiple(self.cp_size)
        self.mode: Literal["training", "generation"] = "training"

    @classmethod
    def from_run_config(cls, cfg: Any, hf_config: dict, *, phase: Literal["rl", "sft"] = "rl",
                        total_steps: int | None = None, padded_vocab_size: int | None = None) -> "MegatronPolicy":
        """The policy a `RunConfig` describes: layout, dtype, the phase's optimiser and micro-batch
        budget; RL log-probs at the rollout temperature (the sampling distribution). `total_steps`:
        the optimiser steps the LR schedule spans (not RL steps: `loops.backend.schedule_steps`)."""
        section = cfg.rl if phase == "rl" else cfg.sft
        return cls(hf_config, cfg.parallelism, section.optim, dtype=cfg.model.dtype,
                   micro_batch_tokens=section.micro_batch_tokens, logprob_chunk_tokens=cfg.rl.logprob_chunk_tokens,
                   temperature=cfg.rollout.temperature if phase == "rl" and cfg.rollout.temperature > 0 else 1.0,
                   total_steps=total_steps, padded_vocab_size=padded_vocab_size, logprob_impl=cfg.rl.logprob_impl)

    # ---- weights -------------------------------------------------------------------------------
    def load_hf_state_dict(self, hf: dict[str, Tensor]) -> None:
        """Load full HF-named tensors (every rank passes the same dict; each keeps its shards)."""
        full = hf_to_megatron(hf, self.shape)
        names = {local_spec_name(k): k for k in self.module.state_dict() if not k.endswith("_extra_state")}
        missing = sorted(set(names) - set(full))
        if missing:
            raise KeyError(f"the HF state dict lacks the tensors for {missing[:5]} ({len(missing)} in all)")
        shards = {names[n]: shard_for_tp(n, full[n], self.tp_rank, self.tp_size, self.shape) for n in names}
        self.module.load_state_dict(shards, strict=False)
        self.optimizer.weights_loaded()

    def local_state(self) -> dict[str, Tensor]:
        """This rank's tensors under local-spec names (TE norm names translated)."""
        return {local_spec_name(k): v.detach() for k, v in self.module.state_dict().items()
                if not k.endswith("_extra_state")}

    def full_megatron_tensor(self, name: str, local: dict[str, Tensor]) -> Tensor:
        """One full Megatron tensor, gathered over the tensor-parallel group."""
        shard = local[name].contiguous()
        if self.tp_size == 1:
            return shard
        parts = [torch.empty_like(shard) for _ in range(self.tp_size)]
        dist.all_gather(parts, shard, group=self.tp_group)
        return unshard_tp(name, parts, self.shape)

    @torch.no_grad()
    def state_dict_for_refit(self) -> Iterator[tuple[str, Tensor]]:
        """HF-named full tensors, one at a time (every rank of a TP group must iterate together)."""
        local = self.local_state()
        yield from iter_megatron_to_hf(lambda name: self.full_megatron_tensor(name, local), self.shape)

    # ---- lifecycle -----------------------------------------------------------------------------
    def prepare_for_generation(self) -> None:
        """Before rollouts: eval mode, gradients freed; on GPU optimiser state goes to host memory."""
        self.model.eval()
        self.optimizer.zero_grad()
        if self.device.type == "cuda":
            self.optimizer.move_state("cpu")
            torch.cuda.empty_cache()
        self.mode = "generation"

    def prepare_for_training(self) -> None:
        if self.device.type == "cuda":
            self.optimizer.move_state(self.device)
        self.model.train()
        self.mode = "training"

    # ---- forward -------------------------------------------------------------------------------
    def _layout(self, rows: Rows) -> Layout:
        args = (rows.prompt_ids, rows.prompt_lengths, rows.response_ids, rows.response_mask)
        if self.sequence_layout == "packed":
            return pack_rows(*args, row_mult=self.row_multiple, total_mult=self.multiple)
        if self.sequence_layout == "shared_prompt":
            return shared_prompt_rows(*args)
        return join_rows(*args, multiple=self.multiple)

    def _split(self, t: Tensor, layout: Layout) -> Tensor:
        """This CP rank's share of token-shaped values: the zigzag split of S, or of every packed row."""
        if isinstance(layout, PackedLayout):
            return cp_split_packed(t, layout, self.cp_rank, self.cp_size).to(self.device)
        if isinstance(layout, SharedPromptLayout):  # local spec only: no context parallelism
            return t.to(self.device)
        return cp_split(t, self.cp_rank, self.cp_size).to(self.device)

    def _packed_seq_params(self, layout: PackedLayout):
        """megatron's THD parameters: rows end at the valid lengths, start at the padded offsets."""
        from megatron.core.packed_seq_params import PackedSeqParams

        valid, padded = (c.to(self.device) for c in (layout.cu_seqlens, layout.cu_seqlens_padded))
        return PackedSeqParams(qkv_format="thd", cu_seqlens_q=valid, cu_seqlens_kv=valid, cu_seqlens_q_padded=padded,
                               cu_seqlens_kv_padded=padded, max_seqlen_q=layout.max_seqlen,
                               max_seqlen_kv=layout.max_seqlen,
                               pad_between_seqs=not torch.equal(layout.cu_seqlens, layout.cu_seqlens_padded))

    def _sequence_logprobs(self, layout: Layout, with_entropy: bool,
                           temperature: float | None = None) -> tuple[Tensor, Tensor | None]:
        """[B, S/CP] (packed: [1, T/CP]) log-probs (and entropy) of each position's next token on this CP rank."""
        tokens, positions, targets = (self._split(t, layout) for t in (layout.tokens, layout.position_ids, layout.targets))
        # only megatron's own local attention reads the mask; SDPA and TE attention know they are causal
        needs_mask = self.parallel.transformer_impl == "local" and self.parallel.local_attention == "dot_product"
        mask = cpu_compat.causal_mask(tokens.shape[1], self.device) if needs_mask else None
        kw = dict(group=self.tp_group, chunk_size=self.chunk, temperature=temperature or self.temperature,
                  with_entropy=with_entropy, vocab_size=self.shape.vocab_size)
        with self._packing(layout, positions) as packed:
            if self.logprob_impl == "fused":
                lp, ent = self.model(tokens, positions, mask, packed_seq_params=packed,
                                     output_processor=self._fused_output,
                                     output_processor_context=(targets.T, kw))  # [S/CP, B] each
                return lp.T, (ent.T if ent is not None else None)
            logits = self.model(tokens, positions, mask, packed_seq_params=packed)  # [B, S/CP, V/TP]
        return token_logprobs(logits, targets, vocab_start=self.tp_rank * logits.shape[-1], **kw)

    @contextmanager
    def _packing(self, layout: Layout, positions: Tensor) -> Iterator[Any]:
        """The layout's `packed_seq_params` (None when padded); a shared-prompt pack also takes RoPE at
        its own position ids for the forward."""
        if isinstance(layout, PackedLayout):
            yield self._packed_seq_params(layout)
        elif isinstance(layout, SharedPromptLayout):
            from nemo_qwenlong.backends.megatron.sdpa_attention import SharedPromptParams, rope_at_positions

            with rope_at_positions(self.module, positions[0]):
                yield SharedPromptParams.for_layout(layout, self.device)
        else:
            yield None

    def _fused_output(self, *, hidden_states: Tensor, output_layer: Any, output_weight: Tensor | None,
                      context: tuple[Tensor, dict], **_: Any) -> tuple[Tensor, Tensor | None]:
        """GPTModel output processor: log-probs (and entropy) from the final hidden states [S, B, h]
        and the vocab-parallel output weight, in place of the output layer. The hidden states enter
        the tensor-parallel region the way ColumnParallelLinear's input does (sequence-parallel
        gather, or copy whose backward all-reduces this rank's share of the gradient)."""
        from megatron.core.tensor_parallel.mappings import (
            copy_to_tensor_model_parallel_region,
            gather_from_sequence_parallel_region,
        )

        targets, kw = context  # [S/CP, B]
        if output_layer.sequence_parallel:
            hidden = gather_from_sequence_parallel_region(hidden_states, group=self.tp_group)
        else:
            hidden = copy_to_tensor_model_parallel_region(hidden_states, group=self.tp_group)
        weight = output_layer.weight if output_weight is None else output_weight  # [V/TP, h]
        return fused_token_logprobs(hidden, weight, targets, vocab_start=self.tp_rank * weight.shape[0], **kw)

    @torch.no_grad()
    def compute_logprobs(self, rows: Rows, *, temperature: float | None = None) -> Tensor:
        """[N, R] float32 response-token log-probs (0 on padding), micro-batched; for old/ref log-probs
        (at the policy's temperature) and the engine agreement probe (temperature=1)."""
        out = torch.zeros(rows.response_ids.shape, dtype=torch.float32)
        for idx, _, layout in self._micro_batches(rows):
            lp, _ = self._sequence_logprobs(layout, with_entropy=False, temperature=temperature)
            out[idx] = to_response_layout(self._cp_gather(lp, layout).cpu(), layout)
        return out

    @torch.no_grad()
    def logprobs_and_entropy(self, rows: Rows) -> tuple[Tensor, float]:
        """`compute_logprobs(rows)` and, from the same forward, the token-mean entropy over the valid response
        tokens of every DP×CP rank's rows (AEPO's batch entropy; the `entropy` metric's definition)."""
        out = torch.zeros(rows.response_ids.shape, dtype=torch.float32)
        total = torch.zeros(2, dtype=torch.float64)  # [Σ entropy, valid tokens] on this rank
        for idx, mb, layout in self._micro_batches(rows):
            lp, ent = self._sequence_logprobs(layout, with_entropy=True)
            out[idx] = to_response_layout(self._cp_gather(lp, layout).cpu(), layout)
            mask = self._split(to_sequence_layout(mb.response_mask, layout, False), layout)
            total += torch.stack([(ent.double() * mask).sum(), mask.sum().double()]).cpu()
        if dist.get_world_size(self.grad_group) > 1:
            total = total.to("cpu" if dist.get_backend() == "gloo" else self.device)
            dist.all_reduce(total, group=self.grad_group)
        tokens = float(total[1])
        return out, float(total[0]) / tokens if tokens else 0.0

    def _cp_gather(self, local: Tensor, layout: Layout) -> Tensor:
        if self.cp_size == 1:
            return local
        from megatron.core import parallel_state as ps

        parts = [torch.empty_like(local) for _ in range(self.cp_size)]
        dist.all_gather(parts, local.contiguous(), group=ps.get_context_parallel_group())
        return cp_merge_packed(parts, layout) if isinstance(layout, PackedLayout) else cp_merge(parts)

    def _micro_batches(self, rows: Rows) -> Iterator[tuple[list[int], Rows, Layout]]:
        """(row indices, rows, their layout) per micro-batch; the budget counts the tokens the layout
        builds: padded rows × S (S rounded up to `self.multiple`), longest rows first; packed rows'
        padded lengths, first-fit by decreasing length; or whole prompt groups' trees, likewise."""
        lengths = (rows.prompt_lengths + rows.response_lengths).tolist()
        if self.sequence_layout == "packed":
            plan = micro_batches_packed(lengths, self.micro_batch_tokens, row_multiple=self.row_multiple,
                                        total_multiple=self.multiple)
        elif self.sequence_layout == "shared_prompt":
            prompt, resp = rows.prompt_lengths.tolist(), rows.response_lengths.tolist()
            groups = fitting_groups(prompt_groups(rows.prompt_ids, rows.prompt_lengths), prompt, resp,
                                    self.micro_batch_tokens)
            sizes = [tree_tokens(prompt[g[0]], [resp[i] for i in g]) for g in groups]
            plan = micro_batches_shared_prompt(groups, sizes, self.micro_batch_tokens)
        else:
            plan = micro_batches_by_tokens(lengths, self.micro_batch_tokens, multiple=self.multiple)
        for idx in plan:
            mb = rows.select(idx)
            yield idx, mb, self._layout(mb)

    # ---- train ---------------------------------------------------------------------------------
    def _sum(self, value: float, group: dist.ProcessGroup) -> float:
        """`value` summed over `group` (float64, exact for counts)."""
        if dist.get_world_size(group) == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device="cpu" if dist.get_backend() == "gloo" else self.device)
        dist.all_reduce(t, group=group)
        return float(t.item())

    def _global_count(self, value: int) -> int:
        """Over data-parallel ranks only: context-parallel ranks hold parts of the same rows."""
        return int(self._sum(value, self.dp_group))

    def accumulate_gradients(self, rows: Rows, loss_fn: Any, count: int) -> list[dict[str, float]]:
        """Forward/backward every micro-batch of `rows` with the global denominator `count`."""
        if self.mode != "training":
            raise RuntimeError("train step while the policy is prepared for generation: call prepare_for_training()")
        metrics = []
        for _, mb, layout in self._micro_batches(rows):
            loss, m = loss_fn(mb, layout, count)
            loss.backward()
            metrics.append(m | {"loss": float(loss.detach())})
        return metrics

    def _finish(self, metrics: list[dict[str, float]]) -> dict[str, float]:
        """Optimiser step; the step's metrics over every micro-batch on every DP×CP rank (`reduce_metrics`)."""
        out = self.reduce_metrics(metrics) | self.optimizer.step()
        self.optimizer.zero_grad()
        return out

    def reduce_metrics(self, metrics: list[dict[str, float]]) -> dict[str, float]:
        """This rank's micro-batch metrics reduced over the DP×CP ranks (each holds its own tokens; TP ranks
        hold the same ones): token-weighted means over the global valid tokens, extrema over all ranks,
        `num_tokens` and the (globally normalised) `loss` summed (`losses.metric_totals`)."""
        sums, maxima = metric_totals(metrics)
        if dist.get_world_size(self.grad_group) > 1:
            device = "cpu" if dist.get_backend() == "gloo" else self.device
            sums, maxima = sums.to(device), maxima.to(device)
            dist.all_reduce(sums, group=self.grad_group)
            dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=self.grad_group)
        return metrics_from_totals(sums.cpu(), maxima.cpu())

    def rl_loss(self, rl: RLConfig):
        """Loss callable for `accumulate_gradients` from the RL settings (DAPO/GRPO, spec §4.3)."""
        def loss(mb: RolloutBatch, layout: Layout, count: int) -> tuple[Tensor, dict[str, float]]:
            if mb.advantages is None:
                raise ValueError("RolloutBatch.advantages is required for the RL loss")
            # entropy is always logged; with entropy_coef 0 it is detached (its chunks add one dot product
            # per token in forward and nothing in backward, `algorithms.logprobs`)
            lp, ent = self._sequence_logprobs(layout, with_entropy=True)
            ent = ent if rl.entropy_coef > 0 else ent.detach()
            seq = lambda t, fill=0.0: self._split(to_sequence_layout(t, layout, fill), layout)  # noqa: E731
            ref = seq(mb.ref_logprobs) if rl.kl_coef > 0 else None
            # No old log-probs: one update per rollout batch, so the behaviour policy *is* the current
            # one and the ratio is exactly 1 (its gradient is the policy gradient; loops.rl skips the pass).
            old = lp.detach() if mb.old_logprobs is None else seq(mb.old_logprobs)
            # per-row values go per token: a packed row holds several sequences
            per_token = lambda v: seq(v.unsqueeze(1).expand_as(mb.response_mask).float())  # noqa: E731
            return policy_loss(
                lp, old, per_token(mb.advantages), seq(mb.response_mask, False),
                clip_low=rl.clip_low, clip_high=rl.clip_high, level=rl.loss_level, dual_clip=rl.dual_clip,
                num_global_tokens=count, num_global_sequences=count, ref_logprobs=ref, kl_coef=rl.kl_coef,
                kl_estimator=rl.kl_estimator, entropy=ent, entropy_coef=rl.entropy_coef,
                row_lengths=per_token(mb.response_lengths),
            )
        return loss

    def rl_count(self, rows: RolloutBatch, rl: RLConfig) -> int:
        local = count_tokens(rows.response_mask) if rl.loss_level == "token" else count_sequences(rows.response_mask)
        return self._global_count(local)

    def train_step(self, batch: RolloutBatch, rl: RLConfig) -> dict[str, float]:
        """One optimiser step of the RL loss over this rank's rows; returns merged metrics + lr, grad_norm."""
        metrics = self.accumulate_gradients(batch, self.rl_loss(rl), self.rl_count(batch, rl))
        return self._finish(metrics)

    def sft_loss(self, mb: TokenRows, layout: Layout, count: int) -> tuple[Tensor, dict[str, float]]:
        """Response-token NLL of the model itself (temperature 1, whatever the rollout temperature)."""
        lp, _ = self._sequence_logprobs(layout, with_entropy=False, temperature=1.0)
        mask = self._split(to_sequence_layout(mb.response_mask, layout, False), layout)
        return -(lp * mask).sum() / count, {"num_tokens": float(mask.sum())}

    def sft_step(self, batch: TokenRows) -> dict[str, float]:
        """One optimiser step of the SFT loss: response-token NLL over the global token count."""
        count = self._global_count(count_tokens(batch.response_mask))
        return self._finish(self.accumulate_gradients(batch, self.sft_loss, count))
