"""Run in its own process (megatron's global parallel state must not leak into other tests).

For tied and untied embeddings: a random tiny HF Qwen2 -> megatron-core GPTModel (local spec, TP=1,
gloo) with mapped weights; prints JSON with the max |logits| difference and the mapping round trip.
"""

from __future__ import annotations

import json
import sys

import torch


def main() -> None:
    from transformers import Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.backends.megatron import cpu_compat
    from nemo_qwenlong.backends.megatron.model import build_gpt_model
    from nemo_qwenlong.backends.megatron.parallel import init_parallel
    from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, hf_to_megatron, megatron_to_hf
    from nemo_qwenlong.config.training import TinyArch

    init_parallel(tensor_parallel=1)
    report = {}
    for tied in (False, True):
        torch.manual_seed(7)
        arch = TinyArch(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                        num_key_value_heads=2, tie_word_embeddings=tied)
        hf_model = Qwen2ForCausalLM(tiny_qwen2_config(arch, 256, eos_token_id=0)).float().eval()
        with torch.no_grad():  # non-trivial norms and biases, so a mapping slip cannot hide
            for name, p in hf_model.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    p.uniform_(0.5, 1.5) if "norm" in name else p.normal_(0, 0.1)
        hf_cfg = hf_model.config.to_dict()
        shape = Qwen2Shape.from_hf_config(hf_cfg)
        hf_sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
        mg_sd = hf_to_megatron(hf_sd, shape)
        back = megatron_to_hf(mg_sd, shape)
        exact = all(torch.equal(back[k], hf_sd[k]) for k in hf_sd) and set(back) == set(hf_sd)

        model = build_gpt_model(hf_cfg, transformer_impl="local").float().eval()
        missing, unexpected = model.load_state_dict(mg_sd, strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
        pos = torch.arange(24).unsqueeze(0).expand(2, -1)
        with torch.no_grad():
            ref = hf_model(input_ids=ids).logits
            out = model(ids, pos, cpu_compat.causal_mask(24))
        report["tied" if tied else "untied"] = {
            "max_abs_diff": float((ref - out).abs().max()), "ref_scale": float(ref.abs().max()),
            "roundtrip_exact": exact, "missing": missing, "unexpected": list(unexpected),
            "shape": list(out.shape),
        }
    report["yarn"] = yarn_case()
    print("PARITY " + json.dumps(report))
    sys.stdout.flush()


def yarn_case() -> dict:
    """YaRN ×4 over 16 original positions, 48 tokens (beyond 16 the scaled frequencies matter): megatron's
    YarnRotaryEmbedding + attention factor against transformers' Qwen2 with the same rope_scaling."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nemo_qwenlong.backends.hf.checkpoint import export_config
    from nemo_qwenlong.backends.hf.tiny import tiny_qwen2_config
    from nemo_qwenlong.backends.megatron import cpu_compat
    from nemo_qwenlong.backends.megatron.model import build_gpt_model
    from nemo_qwenlong.backends.megatron.qwen2_mapping import Qwen2Shape, hf_to_megatron
    from nemo_qwenlong.backends.megatron.sdpa_attention import rope_at_positions
    from nemo_qwenlong.config.training import TinyArch

    torch.manual_seed(11)
    arch = TinyArch(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=16, rope_theta=10000.0)
    plain = tiny_qwen2_config(arch, 256, eos_token_id=0).to_dict()
    hf_cfg = export_config(plain, yarn_factor=4.0, yarn_original_max=16)  # what model.yarn gives the policy
    hf_model = Qwen2ForCausalLM(Qwen2Config.from_dict(hf_cfg)).float().eval()
    plain_model = Qwen2ForCausalLM(Qwen2Config.from_dict(plain)).float().eval()
    plain_model.load_state_dict(hf_model.state_dict())
    model = build_gpt_model(hf_cfg, transformer_impl="local").float().eval()
    model.load_state_dict(hf_to_megatron(hf_model.state_dict(), Qwen2Shape.from_hf_config(hf_cfg)), strict=False)
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf_model(input_ids=ids).logits
        out = model(ids, torch.arange(48).unsqueeze(0), cpu_compat.causal_mask(48))
        without = plain_model(input_ids=ids).logits
        plain_table, factor = model.rotary_pos_emb(48)
        with rope_at_positions(model, torch.arange(48)):  # the packed / shared-prompt layouts' position table
            table, packed_factor = model.rotary_pos_emb(48, packed_seq=True)
    return {"max_abs_diff": float((ref - out).abs().max()), "plain_rope_diff": float((ref - without).abs().max()),
            "rope_type": type(model.rotary_pos_emb).__name__,
            "positions_table_equal": bool(torch.equal(table, plain_table)) and packed_factor == factor}


if __name__ == "__main__":
    main()
