"""A real RL run of the algorithm core on a toy document-QA task, small enough for 2 CPU cores.

This is what `make run` runs until the Megatron/vLLM loop exists: every algorithm piece is real
(sampling, rule reward, overlong shaping, dynamic sampling, GRPO advantages, the DAPO token-level
loss over token-budgeted micro-batches, curriculum stages by input length with the retrospective
sampler and difficulty ledger); the policy is a tiny
GRU instead of an LLM and the "documents" are random token sequences.
"""
