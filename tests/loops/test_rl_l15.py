"""The QwenLong-L1.5 options inside `loops.rl.rl_step` (`loops/rl_l15.py`): task labels from the batch's
items, AEPO across steps (decide → mask → skip emptied mini-batches → read the update's entropy), its
checkpointed state, and the default path calling exactly what it called before."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from nemo_qwenlong.algorithms.advantages import compute_advantages, task_std_advantages
from nemo_qwenlong.algorithms.aepo import AepoState
from nemo_qwenlong.algorithms.dynamic_sampling import DynamicSamplingStats
from nemo_qwenlong.config.pipeline import StageConfig, TaskBalanceConfig
from nemo_qwenlong.config.training import AepoConfig, RLConfig
from nemo_qwenlong.curriculum.sampler import RetrospectiveSampler
from nemo_qwenlong.loops import rl as rl_loop
from nemo_qwenlong.loops import state
from nemo_qwenlong.loops.rl_l15 import step_advantages
from tests.algorithms.helpers import make_batch

REWARDS = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])  # 4 groups of 2
SOURCES = {"item0": "hotpotqa", "item1": "docmath", "item2": "musique", "item3": "docmath"}  # qa, math, qa, math
ITEMS = {x: SimpleNamespace(data_source=s) for x, s in SOURCES.items()}


def _batch():
    batch = make_batch([0, 0, 1, 1, 2, 2, 3, 3], list(range(8)), [3] * 8, [bool(r) for r in REWARDS.tolist()])
    return batch.replace(rewards=REWARDS.clone())


def test_task_std_labels_rows_by_their_items_kind_and_logs_each_task_std() -> None:
    adv, log = step_advantages(RLConfig(group_size=2, advantage_std="task"), _batch(), ITEMS)
    tasks = ["qa", "qa", "math", "math", "qa", "qa", "math", "math"]
    torch.testing.assert_close(adv, task_std_advantages(REWARDS, 2, tasks), atol=0, rtol=0)
    assert log == pytest.approx({"adv/task_std/math": 0.5, "adv/task_std/qa": 0.577350}, abs=1e-6)


def test_group_std_default_is_exactly_the_old_call() -> None:
    adv, log = step_advantages(RLConfig(group_size=2), _batch(), ITEMS)
    assert torch.equal(adv, compute_advantages("grpo", REWARDS, 2, eps=1e-6, std_normalize=True)) and log == {}


def test_aepo_config_needs_ordered_thresholds_when_enabled() -> None:
    assert AepoConfig().enable is False  # off by default: QwenLong-L1 runs are unchanged
    with pytest.raises(ValueError, match="needs rl.aepo.entropy_low and rl.aepo.entropy_high"):
        AepoConfig(enable=True, entropy_high=0.6)
    with pytest.raises(ValueError, match="entropy_low=0.6 must be below rl.aepo.entropy_high=0.3"):
        AepoConfig(enable=True, entropy_low=0.6, entropy_high=0.3)


class FakePolicy:
    """Records each update's rows and each forward AEPO asks for; the batch entropy is `entropy`."""

    def __init__(self, entropy: float) -> None:
        self.entropy, self.updates, self.forwards = entropy, [], []

    def prepare_for_generation(self) -> None: ...

    def prepare_for_training(self) -> None: ...

    def compute_logprobs(self, rows):  # noqa: ANN001, ANN201
        self.forwards.append("logprobs")
        return torch.full(rows.response_ids.shape, -1.0)

    def logprobs_and_entropy(self, rows):  # noqa: ANN001, ANN201
        self.forwards.append(("entropy", rows.response_lengths.tolist()))  # every row: before any mask
        return torch.full(rows.response_ids.shape, -2.0), self.entropy

    def train_step(self, batch, rl):  # noqa: ANN001, ANN201
        old = None if batch.old_logprobs is None else float(batch.old_logprobs[0, 0])
        self.updates.append((batch.item_ids, batch.response_lengths.tolist(), old))
        return {"loss": 0.0, "num_tokens": float(batch.response_mask.sum()), "entropy": self.entropy}


def _env(monkeypatch: pytest.MonkeyPatch, aepo: AepoState | None, entropy: float, mini: int = 4,
         mode: str = "hysteresis", source: str = "batch"):
    rl = RLConfig(group_size=2, train_batch_size=4, mini_batch_size=mini, gen_batch_size=4,
                  aepo=AepoConfig(enable=aepo is not None, mode=mode, entropy=source, entropy_low=0.3,
                                  entropy_high=0.6))
    stages = [StageConfig(name="s1", max_input_tokens=100, steps=1)]
    cfg = SimpleNamespace(rl=rl, curriculum=SimpleNamespace(stages=stages, task_balance=TaskBalanceConfig()),
                          rollout=SimpleNamespace(logprob_probe_size=0))
    sampler = RetrospectiveSampler([["a", "b"]], cfg.curriculum.stages, batch_size=1, seed=0, drop_last=True)
    # rewards [1, 0 | 0, 0 | 0, 1 | 0, 0]: groups 1 and 3 have no positive sample (dynamic sampling off)
    batch = _batch().replace(rewards=torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    monkeypatch.setattr(rl_loop, "collect_groups", lambda *a, **k: (batch, DynamicSamplingStats()))
    monkeypatch.setattr(rl_loop, "refit", lambda env, rows: {})
    return rl_loop.RLEnv(cfg, FakePolicy(entropy), None, None, None, ITEMS, {}, sampler, aepo=aepo)


def _steps(env, entropies: list[float]) -> list[dict]:  # noqa: ANN001
    rows = []
    for step, h in enumerate(entropies, start=1):
        env.policy.entropy = h
        rows.append(rl_loop.rl_step(env, 0, step))
    return rows


def test_hysteresis_reads_each_batch_entropy_before_its_update_and_keeps_positive_samples(monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, AepoState(), entropy=0.0)
    rows = _steps(env, [0.5, 0.9, 0.4, 0.2])  # below high: off; above: on; inside the band: stays on; below low: off
    assert [r["aepo/masking"] for r in rows] == [0.0, 1.0, 1.0, 0.0]
    assert [r["aepo/entropy"] for r in rows] == [0.5, 0.9, 0.4, 0.2]
    assert [r["aepo/kept"] for r in rows] == [8.0, 2.0, 2.0, 8.0]
    assert env.policy.forwards[1] == ("entropy", [3] * 8)  # the entropy covers every sample, masked or not
    # one update (mini-batch = the batch): no old log-probs; masking keeps rows 0 and 5 (Â > 0 and R > 0)
    assert env.policy.updates[1] == (tuple(f"item{g}" for g in (0, 0, 1, 1, 2, 2, 3, 3)), [3, 0, 0, 0, 0, 3, 0, 0],
                                     None)
    assert env.policy.updates[3][1] == [3] * 8 and "logprobs" not in env.policy.forwards
    assert (env.aepo.masking, env.aepo.entropy, env.aepo.last_update) == (False, 0.2, pytest.approx(0.2))


def test_previous_update_reads_the_last_steps_update_entropy_without_a_forward(monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, AepoState(), entropy=0.0, source="previous_update")
    rows = _steps(env, [0.5, 0.9, 0.4, 0.2])  # each step's update reports these; the next step reads them
    assert [r["aepo/entropy"] for r in rows[1:]] == pytest.approx([0.5, 0.9, 0.4]) and rows[0]["aepo/entropy"] != rows[0]["aepo/entropy"]
    assert [r["aepo/masking"] for r in rows] == [0.0, 0.0, 1.0, 1.0]  # one step later than with `batch`
    assert env.policy.forwards == []  # one update per step: neither an entropy nor an old-log-prob forward
    assert env.aepo.last_update == pytest.approx(0.2)


def test_band_mode_masks_only_strictly_inside_the_band(monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, AepoState(), entropy=0.0, mode="band")
    rows = _steps(env, [0.4, 0.9, 0.3, 0.5])
    assert [r["aepo/masking"] for r in rows] == [1.0, 0.0, 0.0, 1.0]


def test_a_mini_batch_without_a_kept_sample_is_skipped_and_old_logprobs_come_from_the_same_forward(
        monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, AepoState(), entropy=0.9, mini=1)
    row = rl_loop.rl_step(env, 0, 1)  # 4 mini-batches of one group; groups 1 and 3 keep nothing
    assert [u[0][0] for u in env.policy.updates] == ["item0", "item2"] and row["optimizer_steps"] == 2
    assert [u[2] for u in env.policy.updates] == [-2.0, -2.0]  # the entropy forward's log-probs
    assert env.policy.forwards == [("entropy", [3] * 8)] and row["old_logprob_pass"]


def test_no_kept_sample_skips_the_update(monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, AepoState(), entropy=0.9)
    monkeypatch.setattr(rl_loop, "step_advantages", lambda rl, b, items, key: (-torch.ones(8), {}))
    row = rl_loop.rl_step(env, 0, 1)
    assert row["update_skipped"] == 1 and row["aepo/kept"] == 0.0 and env.policy.updates == []


def test_aepo_off_takes_the_old_path(monkeypatch) -> None:  # noqa: ANN001
    env = _env(monkeypatch, None, entropy=0.9, mini=2)
    row = rl_loop.rl_step(env, 0, 1)
    assert not any(k.startswith(("aepo/", "adv/")) for k in row)
    assert env.policy.forwards == ["logprobs"]  # two updates: the old log-prob pass, no entropy forward
    assert [u[1:] for u in env.policy.updates] == [([3, 3, 3, 3], -1.0), ([3, 3, 3, 3], -1.0)]


def test_aepo_state_survives_the_loop_state_json_exactly() -> None:
    s = AepoState(masking=True, entropy=0.1 + 0.2)  # a float with a long repr
    back = AepoState()
    back.load_state_dict(json.loads(state.dumps({"aepo": s.state_dict()}))["aepo"])
    assert back == s and AepoState().state_dict() == {"masking": False, "entropy": None,
                                                                          "last_update": None}
