"""Which rollout tensor-parallel sizes T a vLLM engine layout accepts (pure): the rules the config checks
when it loads (the cluster's ranks, the model's heads) and `run` checks again for the actual launch.

- Replicas: W ranks hold R = W / T engine replicas; replica r is the T consecutive ranks rank // T = r.
  So T divides W, and T divides the ranks of a node (a replica's TP group never spans nodes).
- Heads: vLLM splits the query heads over its T ranks (config/model.py
  `ModelConfig.verify_with_parallel_config`) and splits the KV heads, or replicates them when there are
  fewer than T (model_executor/models/qwen2.py `Qwen2Attention`): heads % T == 0, and
  kv_heads % T == 0 or T % kv_heads == 0.
- Workers: one process alone with T > 1 runs vLLM's T worker processes, each on its own GPU, or on CPU
  bound to its own cores (backends.vllm.engine.cpu_binding): T is at most the devices or cores.
"""

from __future__ import annotations

from dataclasses import dataclass

FIELD = "rollout.tensor_parallel"
MAX_TP = 64  # the field's upper bound (config.pipeline.RolloutConfig)


@dataclass(frozen=True)
class EngineShape:
    """What T must fit; None where unknown (then that rule is not checked). The names say where each
    number came from in a message (a config field, or the launch)."""

    heads: int | None = None
    kv_heads: int | None = None
    ranks: int | None = None  # ranks the replicas share: W
    ranks_per_node: int | None = None
    workers: int | None = None  # GPUs or cores a single-process engine's T workers may take
    ranks_name: str = "cluster.nodes×cluster.gpus_per_node"
    node_name: str = "cluster.gpus_per_node"
    workers_name: str = "devices"


def heads_allow(tp: int, heads: int, kv_heads: int) -> bool:
    """vLLM's rule for splitting a model's attention over `tp` ranks."""
    return heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0)


def broken_rules(tp: int, shape: EngineShape) -> list[str]:
    """Each rule of `shape` that `tp` breaks, as a phrase."""
    s, out = shape, []
    if s.ranks is not None and s.ranks % tp:
        out.append(f"does not divide the {s.ranks} ranks ({s.ranks_name}) into replicas of T ranks")
    if s.ranks_per_node is not None and s.ranks_per_node % tp:
        out.append(f"does not divide the {s.ranks_per_node} ranks of a node ({s.node_name}): a replica's T "
                   "consecutive ranks must stay on one node")
    if s.workers is not None and tp > s.workers:
        out.append(f"needs {tp} {s.workers_name} for its worker processes (one each, in a one-rank launch) and "
                   f"there are {s.workers}")
    if s.heads is not None and s.kv_heads is not None and not heads_allow(tp, s.heads, s.kv_heads):
        out.append(f"does not split the model's {s.heads} attention heads and {s.kv_heads} KV heads (vLLM: T "
                   "divides the heads, and divides the KV heads or is a multiple of them)")
    return out


def accepted(shape: EngineShape) -> list[int]:
    """Every T from 1 to MAX_TP that breaks no rule of `shape` (1 always does)."""
    return [t for t in range(1, MAX_TP + 1) if not broken_rules(t, shape)]


def tp_problem(tp: int, shape: EngineShape) -> str | None:
    """The refusal for `tp` naming the field, the value, the rules broken and the accepted values; None if fine."""
    broken = broken_rules(tp, shape)
    if not broken:
        return None
    return f"{FIELD}={tp} " + "; ".join(broken) + "; accepted: " + ", ".join(map(str, accepted(shape)))
