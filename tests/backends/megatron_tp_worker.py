"""torchrun --nproc-per-node 2: TP=2 over gloo. Each rank loads its shards of a tiny HF Qwen2's mapped
weights; rank 0 compares the gathered vocab-parallel logits with transformers and prints JSON."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist


def main() -> None:
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.backends.megatron import cpu_compat
    from nemo_qwenlong.backends.megatron.model import build_gpt_model
    from nemo_qwenlong.backends.megatron.parallel import destroy_parallel, init_parallel
    from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, hf_to_megatron, shard_for_tp
    from nemo_qwenlong.config.training import TinyArch

    init_parallel(tensor_parallel=2)
    rank, size = dist.get_rank(), dist.get_world_size()
    report = {}
    for tied in (False, True):
        torch.manual_seed(11)  # same weights on every rank
        arch = TinyArch(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                        num_key_value_heads=2, tie_word_embeddings=tied)
        hf_model = Qwen2ForCausalLM(tiny_qwen2_config(arch, 256, eos_token_id=0)).float().eval()
        hf_cfg = hf_model.config.to_dict()
        shape = Qwen2Shape.from_hf_config(hf_cfg)
        full = hf_to_megatron({k: v.detach() for k, v in hf_model.state_dict().items()}, shape)
        model = build_gpt_model(hf_cfg, tensor_parallel=size).float().eval()
        shards = {k: shard_for_tp(k, v, rank, size, shape) for k, v in full.items()}
        missing, unexpected = model.load_state_dict(shards, strict=False)
        assert not [k for k in missing if not k.endswith("_extra_state")] and not unexpected, (missing, unexpected)
        ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
        pos = torch.arange(20).unsqueeze(0).expand(2, -1)
        with torch.no_grad():
            local = model(ids, pos, cpu_compat.causal_mask(20))  # [b, s, vocab / tp]
            parts = [torch.empty_like(local) for _ in range(size)]
            dist.all_gather(parts, local.contiguous())
            logits = torch.cat(parts, dim=-1)
            ref = hf_model(input_ids=ids).logits
        report["tied" if tied else "untied"] = {"local_vocab": local.shape[-1], "max_abs_diff": float((logits - ref).abs().max())}
    if rank == 0:
        print("TP2 " + json.dumps(report), flush=True)
    destroy_parallel()


if __name__ == "__main__":
    main()
