"""Engine replicas (`rollout.replicas`): the layout, the dealing and merging of prompt blocks, the
worst-replica agreement, and `EngineReplicas` itself over a real gloo world of 2 and 4 processes.
The engine inside is a named test double (`SeededEcho`: samples a pure function of prompt and seed),
so the plumbing is checked in seconds; real vLLM replicas run in tests/loops/test_run_ranks.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from nemo_qwenlong.rollout.generator import RefitStats, Sample, SamplingSettings, prompt_seed
from nemo_qwenlong.rollout.replicas import EngineReplicas, ReplicaLayout, deal, merge_agreement, merge_blocks


def test_layout_of_consecutive_ranks() -> None:
    layouts = [ReplicaLayout(8, r, 4) for r in range(8)]
    assert [x.replica for x in layouts] == [0, 0, 0, 0, 1, 1, 1, 1] and layouts[0].replicas == 2
    assert [x.leader for x in layouts] == [True, False, False, False, True, False, False, False]
    assert layouts[5].ranks_of(1) == [4, 5, 6, 7]
    with pytest.raises(ValueError, match=r"rollout.tensor_parallel=3 does not divide the 8 ranks \(this launch\).*accepted: 1, 2, 4, 8"):
        ReplicaLayout(8, 0, 3)


@pytest.mark.parametrize("count, replicas", [(7, 3), (2, 3), (0, 2), (8, 1), (9, 4)])
def test_deal_covers_every_prompt_once_in_order(count: int, replicas: int) -> None:
    blocks = [deal(count, replicas, r) for r in range(replicas)]
    assert blocks[0][0] == 0 and blocks[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # contiguous, in replica order
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_merge_blocks_refuses_gaps_and_overlaps() -> None:
    assert merge_blocks([(0, ["a", "b"]), None, (2, ["c"])], 3) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match=r"no replica returned prompts \[2\]"):
        merge_blocks([(0, ["a", "b"])], 3)
    with pytest.raises(RuntimeError, match="overlap"):
        merge_blocks([(0, ["a", "b"]), (1, ["b"])], 3)


def test_merge_agreement_keeps_the_worst_replica() -> None:
    good = {"logprob_abs_diff_mean": 1e-7, "logprob_abs_diff_max": 9e-7, "prob_ratio_mean": 1.0, "probe_tokens": 8.0,
            "refit_seconds": 0.1}
    stale = {"logprob_abs_diff_mean": 0.2, "logprob_abs_diff_max": 0.9, "prob_ratio_mean": 0.7, "probe_tokens": 8.0,
             "refit_seconds": 0.3}
    merged = merge_agreement([good, stale])
    assert merged["logprob_abs_diff_mean"] == 0.2 and merged["logprob_abs_diff_max"] == 0.9
    assert merged["prob_ratio_mean"] == 0.7 and merged["refit_seconds"] == 0.3
    assert merge_agreement([good]) == good


class SeededEcho:
    """Test double for one engine share: sample j of a prompt is (seed of that sample, prompt sum, rank's
    weights version), so where and with which seed every sample was drawn is visible."""

    def __init__(self) -> None:
        self.version = 0
        self.calls = 0

    def generate_iter(self, prompts, settings):  # noqa: ANN001, ANN201
        self.calls += 1
        for i in reversed(range(len(prompts))):  # finish out of order, as long tails do
            seeds = [prompt_seed(settings.seed, i, settings.n) + j for j in range(settings.n)]
            yield i, [Sample((s, sum(prompts[i]), self.version), (), "stop") for s in seeds]

    def score(self, prompts, continuations):  # noqa: ANN001, ANN201
        return [[float(self.version)] * len(c) for c in continuations]

    def load_weights(self, named, *, bucket_bytes):  # noqa: ANN001, ANN201
        self.version = sum(1 for _ in named)
        return RefitStats(self.version, 1, 0, 0.0)


PROMPTS = [[1, 2], [3], [4, 5, 6], [7], [8, 9], [10]]


def _worker(rank: int, world: int, tp: int, port: int, out: str) -> None:
    import json

    import torch.distributed as dist

    from nemo_qwenlong.loops import dist as comm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    engine = EngineReplicas(SeededEcho(), ReplicaLayout(world, rank, tp), comm)
    settings = SamplingSettings(n=2, max_tokens=4, seed=1000)
    merged = engine.generate(PROMPTS, settings)
    one_prompt = engine.generate(PROMPTS[:1], settings)  # fewer prompts than replicas: empty blocks finish
    engine.load_weights(iter([("w", None)] * (rank + 1)), bucket_bytes=1)  # each rank refits its own share
    scores = engine.score(PROMPTS, [[0] * 2] * len(PROMPTS))
    led = []
    if rank == 0:  # rank 0 leads (the eval stage); the others follow its calls
        with engine.lead():
            led = engine.generate(PROMPTS[:3], settings)
    else:
        assert engine.follow() == 1
    def tokens(groups):  # noqa: ANN001, ANN202
        return [[list(s.token_ids) for s in g] for g in groups]

    result = {"merged": tokens(merged), "one": tokens(one_prompt), "scores": scores, "led": tokens(led),
              "replica_seconds": len(engine.replica_seconds), "calls": engine.local.calls}
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.parametrize("world, tp", [(2, 1), (2, 2), (4, 2)], ids=["W2-T1", "W2-T2", "W4-T2"])
def test_engine_replicas_over_a_gloo_world(tmp_path: Path, world: int, tp: int) -> None:
    import json

    from nemo_qwenlong.ports import free_port

    mp.start_processes(_worker, args=(world, tp, free_port(), str(tmp_path)), nprocs=world, start_method="spawn")
    parts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    one = [[[prompt_seed(1000, i, 2) + j, sum(p), 0] for j in range(2)] for i, p in enumerate(PROMPTS)]
    for part in parts:  # every rank: every prompt, in order, seeded as on one engine
        assert part["merged"] == one
        assert part["one"] == one[:1]
        assert part["replica_seconds"] == world // tp
        assert part["calls"] == 3 or part["calls"] == 2  # a replica with an empty block skips its engine
    led_blocks = [deal(3, world // tp, r) for r in range(world // tp)]  # after the refit: each replica's version
    assert parts[0]["led"] == [[[*x[:2], r * tp + 1] for x in one[i]] for r, (a, b) in enumerate(led_blocks)
                               for i in range(a, b)]
    # every replica scored its own block with its own weights (the replica leader's refit version)
    blocks = [deal(len(PROMPTS), world // tp, r) for r in range(world // tp)]
    expected = [float(r * tp + 1) for r, (a, b) in enumerate(blocks) for _ in range(a, b)]
    assert [row[0] for row in parts[0]["scores"]] == expected
