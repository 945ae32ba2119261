"""Shared-prompt layout: the G rollouts of one prompt run that prompt once. Pure torch.

GRPO/DAPO samples G responses per prompt, and the padded or packed layouts run the prompt G times
(a 20K-token document × 8 samples is 160K prompt tokens for one group). Causal attention makes
the prompt's hidden states independent of what follows, so a group can be laid out as a *tree*:
the trunk is the prompt without its last token, and each response is a branch
[last prompt token, response tokens]. A branch token attends to the whole trunk and causally to
its own branch, never to a sibling; its position ids continue the prompt's (P−1, P, ...), so
every token sees exactly what it sees in the padded layout. The last prompt token is repeated in
each branch because it scores the branch's *first* response token (its target differs per
branch). Several trees are packed end to end in one [1, T] row.

Cost per group: P − 1 + Σ (R_j + 1) tokens instead of Σ (P + R_j). Rows are grouped by identical
prompt tokens (not by group id: a probe or SFT batch has none), in first-appearance order; a group
whose tree exceeds the micro-batch budget is planned as sub-groups that fit (`fitting_groups`),
each with its own copy of the trunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemo_qwenlong.algorithms.packing import budget_groups
from nemo_qwenlong.algorithms.sequences import PAD, OneRowLayout


@dataclass(frozen=True)
class Tree:
    """One prompt's tokens in the pack: the trunk [start, start + trunk), then each branch."""

    start: int
    trunk: int
    branches: tuple[tuple[int, int], ...]  # (start, length) per branch, in row order

    @property
    def end(self) -> int:
        return self.branches[-1][0] + self.branches[-1][1] if self.branches else self.start + self.trunk


@dataclass(frozen=True)
class SharedPromptLayout(OneRowLayout):
    tokens: Tensor  # [1, T] int64
    position_ids: Tensor  # [1, T] int64: trunk 0..P−2, each branch P−1..P−1+R_j
    targets: Tensor  # [1, T] int64: next token within the branch (PAD on the trunk and at branch ends)
    response_slots: Tensor  # [B, R] int64, pack position scoring response token j (clamped; use the mask)
    response_mask: Tensor  # [B, R] bool
    lengths: Tensor  # [B] int64, P_i + R_i (the row as the padded layout has it)
    trees: tuple[Tree, ...]


def prompt_groups(prompt_ids: Tensor, prompt_lengths: Tensor) -> list[list[int]]:
    """Row indices grouped by identical prompt tokens, groups and rows in first-appearance order."""
    groups: dict[bytes, list[int]] = {}
    for i, n in enumerate(prompt_lengths.tolist()):
        groups.setdefault(prompt_ids[i, :n].numpy().tobytes() + n.to_bytes(8, "little"), []).append(i)
    return list(groups.values())


def tree_tokens(prompt_length: int, response_lengths: list[int]) -> int:
    """Tokens a group's tree takes: the trunk (P − 1) plus each branch (R_j + 1)."""
    return max(prompt_length - 1, 0) + sum(r + 1 for r in response_lengths)


def fitting_groups(groups: list[list[int]], prompt_lengths: list[int], response_lengths: list[int],
                   budget: int) -> list[list[int]]:
    """`groups` with any group whose tree exceeds `budget` split into consecutive sub-groups that
    fit, each repeating the trunk (a single branch longer than the budget stays alone)."""
    out = []
    for rows in groups:
        trunk = max(prompt_lengths[rows[0]] - 1, 0)
        out += budget_groups(rows, lambda i: response_lengths[i] + 1, max(budget - trunk, 1))
    return out


def shared_prompt_rows(prompt_ids: Tensor, prompt_lengths: Tensor, response_ids: Tensor,
                       response_mask: Tensor) -> SharedPromptLayout:
    """The rows' trees end to end (see the module docstring). Every prompt needs >= 1 token."""
    if prompt_lengths.numel() and int(prompt_lengths.min()) < 1:
        raise ValueError("the shared-prompt layout needs every prompt to have at least one token")
    b, r = response_ids.shape
    resp_len = response_mask.sum(dim=1)
    tokens: list[Tensor] = []
    positions: list[Tensor] = []
    targets: list[Tensor] = []
    slots = torch.zeros((b, r), dtype=torch.int64)
    trees, at = [], 0
    for rows in prompt_groups(prompt_ids, prompt_lengths):
        p = int(prompt_lengths[rows[0]])
        prompt = prompt_ids[rows[0], :p]
        tokens.append(prompt[:-1])
        positions.append(torch.arange(p - 1))
        targets.append(torch.full((p - 1,), PAD, dtype=torch.int64))
        start, branches, at = at, [], at + p - 1
        for i in rows:
            n = int(resp_len[i])
            response = response_ids[i, :n]  # right-padded: the mask is a prefix (algorithms.batch)
            tokens.append(torch.cat([prompt[-1:], response]))
            positions.append(torch.arange(p - 1, p + n))
            targets.append(torch.cat([response, torch.tensor([PAD])]))
            slots[i] = at + torch.arange(r).clamp(max=n)  # masked slots point inside the branch
            branches.append((at, n + 1))
            at += n + 1
        trees.append(Tree(start, p - 1, tuple(branches)))
    cat = (lambda parts: torch.cat(parts).unsqueeze(0)) if tokens else (lambda _: torch.zeros((1, 0), dtype=torch.int64))
    return SharedPromptLayout(cat(tokens), cat(positions), cat(targets), slots, response_mask.clone(),
                              prompt_lengths + resp_len, tuple(trees))
