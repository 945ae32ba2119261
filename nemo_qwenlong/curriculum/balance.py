"""Task-balanced sampling (QwenLong-L1.5, arXiv 2512.12967: every generation batch holds an equal share of
each task). Pure Python; `RetrospectiveSampler` uses it when `curriculum.task_balance.enabled`.

A task is the route kind of an item's `data_source` (qa, math, choice: `data.kind.route`) or, with
`key: source`, the `data_source` itself without the released length-bucket suffix (`docmath_0_20000` and
`docmath_20000_40000` are one task, `docmath`). Weights are relative (a task not named weighs 1).

Shares (choice, deterministic): slots go one at a time to the task whose count / weight is lowest, ties to
the higher weight, then the task name. With equal weights that is floor(n / tasks) each and the remainder
one each to the first tasks by name; the retrospective items a batch already holds count towards their
task, so the batch as a whole is as balanced as the hard items allow (the hard items themselves are
picked by difficulty, not by task).

Each task's own-band items come from its own stream: pass p over the task's items (in pool order) is a
seeded permutation per (stage, task, pass); a batch takes a task's share from one pass only (the pass's
leftover that cannot fill it is skipped), so no item appears twice in a batch. Smaller tasks are passed
over more often than larger ones; that is what balancing means, and the stage-start line says how often.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

def check_weights(weights: Mapping[str, float], tasks: Sequence[str]) -> None:
    """ValueError naming every weighted task the data does not have."""
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ValueError(f"curriculum.task_balance.weights names {unknown}, which no training item has; "
                         f"the tasks are {sorted(set(tasks))}")


def apportion(n: int, weights: Mapping[str, float], held: Mapping[str, int] | None = None) -> dict[str, int]:
    """Split n slots among the tasks of `weights` so that held[t] + share[t] stays proportional to the
    weights: each slot goes to the lowest (held + share) / weight, ties to the higher weight, then the name."""
    held = held or {}
    share = dict.fromkeys(weights, 0)
    order = sorted(weights, key=lambda t: (-weights[t], t))
    for _ in range(n):
        task = min(order, key=lambda t: (held.get(t, 0) + share[t]) / weights[t])  # min keeps the first of ties
        share[task] += 1
    return share


def task_needs(weights: Mapping[str, float], batch_size: int) -> dict[str, int]:
    """The most own-band items a batch of up to `batch_size` items can ask of each task (no hard items held)."""
    need = dict.fromkeys(weights, 0)
    for n in range(1, batch_size + 1):
        for t, c in apportion(n, weights).items():
            need[t] = max(need[t], c)
    return need


def shortfalls(stage: str, pool_tasks: Mapping[str, Sequence[str]], weights: Mapping[str, float],
               batch_size: int) -> list[str]:
    """One message per task of a stage whose items cannot fill its share of one batch without repeats."""
    need = task_needs(weights, batch_size)
    return [f"curriculum stage '{stage}': task '{t}' has {len(pool_tasks[t])} items, fewer than the {need[t]} its "
            f"share of a batch of {batch_size} (rl.gen_batch_size) takes" for t in sorted(need)
            if len(pool_tasks[t]) < need[t]]


class TaskStreams:
    """Per-task own-band item streams of one stage (see the module docstring); cursors are the state."""

    def __init__(self, pool_tasks: Mapping[str, Sequence[str]], *, seed: int, stage: int) -> None:
        self.items = {t: list(v) for t, v in pool_tasks.items() if v}
        self.seed, self.stage = seed, stage
        self.cursors = dict.fromkeys(self.items, 0)
        self._perms: dict[tuple[str, int], list[str]] = {}

    def take(self, task: str, n: int) -> list[str]:
        """The task's next n items, from one pass (n <= the task's items, checked at stage start)."""
        size = len(self.items[task])
        if n > size:
            raise ValueError(f"task '{task}' has {size} items in curriculum stage {self.stage}, a batch asks {n}")
        p, offset = divmod(self.cursors[task], size)
        if size - offset < n:
            p, offset = p + 1, 0
        perm = self._perm(task, p)
        self.cursors[task] = p * size + offset + n
        return perm[offset:offset + n]

    def passes(self, task: str) -> float:
        return self.cursors[task] / len(self.items[task])

    def _perm(self, task: str, p: int) -> list[str]:
        if (task, p) not in self._perms:
            perm = list(self.items[task])
            random.Random(f"{self.seed}-task-{self.stage}-{task}-{p}").shuffle(perm)
            self._perms = {k: v for k, v in self._perms.items() if k[0] != task}
            self._perms[(task, p)] = perm
        return self._perms[(task, p)]


def stage_tasks(pool: Sequence[str], tasks: Mapping[str, str]) -> dict[str, list[str]]:
    """A stage pool's items by task (pool order kept); only the tasks the pool has."""
    out: dict[str, list[str]] = {}
    for item in pool:
        out.setdefault(tasks[item], []).append(item)
    return out


def stage_weights(pool_tasks: Mapping[str, Sequence[str]], weights: Mapping[str, float]) -> dict[str, float]:
    """The weights of the tasks a stage has (a task with no item in the stage's band takes no share)."""
    return {t: float(weights.get(t, 1.0)) for t in sorted(pool_tasks)}


def balance_problems(pools: Sequence[Sequence[str]], stage_names: Sequence[str], tasks: Mapping[str, str],
                     weights: Mapping[str, float], batch_size: int) -> list[str]:
    """Every reason the task-balanced sampler cannot run: weights for unknown tasks, tasks too small for
    their share of a batch in some stage (named with their item count and need)."""
    try:
        check_weights(weights, list(tasks.values()))
    except ValueError as exc:
        return [str(exc)]
    problems: list[str] = []
    for name, pool in zip(stage_names, pools):
        by_task = stage_tasks(pool, tasks)
        problems += shortfalls(name, by_task, stage_weights(by_task, weights), batch_size)
    return problems
