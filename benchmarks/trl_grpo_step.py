"""TRL's GRPOTrainer on bench_rl_step.py's workload; run in the TRL environment (.venv-trl, see
bench_rl_step.py) by `bench_rl_step.py --compare-trl`, never imported by the project.

The same random Qwen2 (hidden 128, 2 layers, 4 heads / 2 KV, vocab 512, untied, fp32, seed 0),
8 prompts of N random token ids × 8 samples, 64 new tokens (EOS never sampled: min_new_tokens),
temperature 0.7, AdamW lr 1e-4 constant, DAPO loss, no KL, one update per generation batch,
micro-batches of 8 completions, transformers generate with sdpa attention. The tokenizer is a
word-level map "t<id>" ↔ id, so each prompt text is exactly its N ids. Reward: share of even ids.
Prints "TRL <json>" with the median step seconds over steps 2..N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

VOCAB, PROMPTS, GROUP, NEW = 512, 8, 8, 64


def word_tokenizer():  # noqa: ANN201
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t2", unk_token="t1")


def even_share(completion_ids: list[list[int]], **_: object) -> list[float]:
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    import trl
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1_000_000.0, tie_word_embeddings=False,
        eos_token_id=0, pad_token_id=2, attn_implementation="sdpa")).float()
    g = torch.Generator().manual_seed(args.prompt_tokens)
    prompts = [" ".join(f"t{t}" for t in torch.randint(3, VOCAB, (args.prompt_tokens,), generator=g).tolist())
               for _ in range(PROMPTS)]
    data = Dataset.from_dict({"prompt": prompts * args.steps})
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):  # noqa: ANN002, ANN003, ANN202
            times.append(time.perf_counter() - self.t0)
            print(f"  TRL prompt {args.prompt_tokens}: step {len(times)}/{args.steps} {times[-1]:.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=str(Path(tmp) / "out"), use_cpu=True, bf16=False, max_steps=args.steps, learning_rate=1e-4,
            lr_scheduler_type="constant", weight_decay=0.0, warmup_steps=0, per_device_train_batch_size=GROUP,
            gradient_accumulation_steps=PROMPTS * GROUP // GROUP, num_generations=GROUP,
            max_completion_length=NEW, temperature=0.7, top_p=1.0, beta=0.0, loss_type="dapo", epsilon_high=0.28,
            num_iterations=1, generation_kwargs={"min_new_tokens": NEW}, logging_steps=1, report_to=[],
            save_strategy="no", seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=even_share, args=cfg, train_dataset=data,
                              processing_class=word_tokenizer(), callbacks=[StepTimer()])
        trainer.train()
    timed = times[1:] or times
    print("TRL " + json.dumps({"prompt_tokens": args.prompt_tokens, "trl_version": trl.__version__,
                               "step_s": statistics.median(timed), "steps": len(times)}), flush=True)


if __name__ == "__main__":
    main()
