"""Capacity planning: per-GPU memory and step-time estimates of a layout (pure arithmetic, no torch).

memory (per-item bytes), steptime (FLOPs and seconds), hardware (GPUs, known models, assumptions),
layout (the two colocation phases and the config's check), report (`nemo-qwenlong plan`). docs/plan.md.
"""
