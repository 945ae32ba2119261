"""Rollout generation: the Generator interface, refit bucketing and the trainer–engine agreement check."""
