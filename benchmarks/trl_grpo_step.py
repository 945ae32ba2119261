"""TRL's GRPOTrainer on bench_rl_step.py's workload; run in the TRL environment (.venv-trl, see
bench_rl_step.py) by `bench_rl_step.py --compare-trl`, never imported by the project.

The configuration is the one ../shared/docs/megatron-on-cpu.md §7 measured for TRL 1.16: transformers
`generate` (no vLLM; KV cache on: TRL switches gradient checkpointing off around `generate`), sdpa
attention, gradient checkpointing for training (TRL's default), fp32, one generation batch of
8 prompts × 8 samples per optimizer step (`per_device_train_batch_size` 8 × gradient accumulation 8,
so micro-batches of 8 completions), 64 new tokens (EOS never sampled: `min_new_tokens`), temperature
0.7, AdamW lr 1e-4 constant, DAPO loss, no KL (no reference model), one update per generation batch
(no old-log-prob pass), the given number of torch threads.

The workload is our side's, exactly: `--model-dir` is the HF folder bench_rl_step.py built and trains
from (same random weights), and the prompts are the same 8 × N random token ids (ids 3..511, seeded
by N). The tokenizer is a word-level map "<id>" ↔ id, so each prompt text is exactly its N ids (checked);
EOS is the model's. Reward: share of even ids.
Prints "TRL <json>" with medians over steps 2..N of the whole step, of `generate`, and of the rest
(scoring + forward/backward + optimizer), the prompt + completion tokens per sample TRL counted, and
the torch thread count in effect during training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

VOCAB, PROMPTS, GROUP, NEW = 512, 8, 8, 64


def word(i: int) -> str:
    return f"<{i}>"


def word_tokenizer(eos: int):  # noqa: ANN201
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if not 0 <= eos < 3:
        raise SystemExit(f"the model's EOS id {eos} is not one of 0..2, which the prompts never use")
    pad, unk = (i for i in range(3) if i != eos)
    # "<id>", not "t<id>": transformers splits special tokens out of the text first, so with "t1" a special
    # token "t17" became two tokens (t1, unk), so 512-id prompts were ~733 tokens, unequal, left-padded.
    tok = Tokenizer(models.WordLevel({word(i): i for i in range(VOCAB)}, unk_token=word(unk)))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=word(eos), pad_token=word(pad),
                                   unk_token=word(unk))


def even_share(completion_ids: list[list[int]], **_: object) -> list[float]:
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="HF folder of the random Qwen2 that bench_rl_step.py trains")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    import trl
    from datasets import Dataset
    from transformers import Qwen2ForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    model = Qwen2ForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="sdpa")
    if model.config.vocab_size != VOCAB:
        raise SystemExit(f"expected vocabulary {VOCAB}, the model has {model.config.vocab_size}")
    tokenizer = word_tokenizer(int(model.config.eos_token_id))
    g = torch.Generator().manual_seed(args.prompt_tokens)  # the same ids as bench_rl_step.py's prompts
    ids = [torch.randint(3, VOCAB, (args.prompt_tokens,), generator=g).tolist() for _ in range(PROMPTS)]
    prompts = [" ".join(word(t) for t in p) for p in ids]
    if [tokenizer(p)["input_ids"] for p in prompts] != ids:
        raise SystemExit("the word-level tokenizer does not give back the prompt ids")
    data = Dataset.from_dict({"prompt": prompts * args.steps})
    times: list[float] = []
    gen_times: list[float] = []
    threads_in_training: list[int] = []

    generate = model.generate

    def timed_generate(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        out = generate(*a, **k)
        gen_times.append(time.perf_counter() - t0)
        return out

    model.generate = timed_generate  # TRL unwraps to this very object on one CPU process

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            threads_in_training.append(torch.get_num_threads())
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            times.append(time.perf_counter() - self.t0)
            print(f"  TRL prompt {args.prompt_tokens}: step {len(times)}/{args.steps} {times[-1]:.2f} s "
                  f"(generate {gen_times[-1]:.2f})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=str(Path(tmp) / "out"), use_cpu=True, bf16=False, fp16=False, max_steps=args.steps,
            learning_rate=1e-4, lr_scheduler_type="constant", weight_decay=0.0, warmup_steps=0,
            per_device_train_batch_size=GROUP, gradient_accumulation_steps=PROMPTS * GROUP // GROUP,
            num_generations=GROUP, max_completion_length=NEW, temperature=0.7, top_p=1.0, top_k=0,
            beta=0.0, loss_type="dapo", epsilon_high=0.28, num_iterations=1, use_vllm=False,
            gradient_checkpointing=True, generation_kwargs={"min_new_tokens": NEW}, logging_steps=1,
            report_to=[], save_strategy="no", seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=even_share, args=cfg, train_dataset=data,
                              processing_class=tokenizer, callbacks=[StepTimer()])
        trainer.train()
        tokens_seen = trainer.state.num_input_tokens_seen
    if len(gen_times) != len(times):
        raise SystemExit(f"{len(gen_times)} generate calls for {len(times)} steps, not one per step")
    timed = slice(1, None) if len(times) > 1 else slice(None)
    rest = [s - g_ for s, g_ in zip(times, gen_times, strict=True)]
    print("TRL " + json.dumps({
        "prompt_tokens": args.prompt_tokens, "trl_version": trl.__version__, "steps": len(times),
        "step_s": statistics.median(times[timed]), "generate_s": statistics.median(gen_times[timed]),
        "train_s": statistics.median(rest[timed]), "all_step_s": [round(t, 3) for t in times],
        "tokens_per_sample": tokens_seen / (len(times) * PROMPTS * GROUP),
        "threads": sorted(set(threads_in_training))}), flush=True)


if __name__ == "__main__":
    main()
