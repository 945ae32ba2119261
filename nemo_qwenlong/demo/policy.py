"""A tiny autoregressive GRU policy: sampling with log-probs, and token log-probs/entropy for training."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from nemo_qwenlong.demo.task import EOS, PAD


class GRUPolicy(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size, padding_idx=PAD)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def encode(self, prompt_ids: Tensor, prompt_lengths: Tensor) -> Tensor:
        """Final hidden state after each right-padded prompt, [1, N, H]."""
        packed = pack_padded_sequence(self.embed(prompt_ids), prompt_lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, h = self.gru(packed)
        return h

    def token_logprobs(
        self, prompt_ids: Tensor, prompt_lengths: Tensor, response_ids: Tensor  # [N, P], [N], [N, R]
    ) -> tuple[Tensor, Tensor]:
        """Log-prob and entropy of every response token under teacher forcing, both [N, R] float32."""
        h = self.encode(prompt_ids, prompt_lengths)
        outputs = [h.transpose(0, 1)]  # the state after the prompt predicts response token 0
        if response_ids.shape[1] > 1:
            out, _ = self.gru(self.embed(response_ids[:, :-1]), h)
            outputs.append(out)
        logits = self.head(torch.cat(outputs, dim=1)).float()
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy

    @torch.no_grad()
    def sample(
        self, prompt_ids: Tensor, prompt_lengths: Tensor, *, max_new_tokens: int, temperature: float,
        top_k: int, top_p: float, generator: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample until EOS or the cap: (response_ids [N, R], response_mask [N, R], truncated [N])."""
        n = prompt_ids.shape[0]
        h = self.encode(prompt_ids, prompt_lengths)
        out = h.transpose(0, 1)
        tokens = torch.full((n, max_new_tokens), PAD, dtype=torch.int64)
        mask = torch.zeros((n, max_new_tokens), dtype=torch.bool)
        alive = torch.ones(n, dtype=torch.bool)
        for t in range(max_new_tokens):
            logits = self.head(out[:, -1]).float()
            nxt = _pick(logits, temperature, top_k, top_p, generator)
            tokens[alive, t] = nxt[alive]
            mask[:, t] = alive
            alive = alive & (nxt != EOS)
            if not alive.any():
                break
            out, h = self.gru(self.embed(nxt.unsqueeze(1)), h)
        return tokens, mask, alive  # rows still alive after the cap were truncated


def _pick(logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix with mass >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
