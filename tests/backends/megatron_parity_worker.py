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
    print("PARITY " + json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
