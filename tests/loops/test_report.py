"""The run's console step line and its end-of-run report, without a model: the held-out accuracy after
each stage by band, the median kept-group fraction per RL stage, and the line of a step that found no
mixed group (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from nemo_qwenlong.config.loader import load_config
from nemo_qwenlong.data.schema import DocQAItem
from nemo_qwenlong.loops.evaluation import accuracy_by_band
from nemo_qwenlong.loops.pipeline import Run, RunOptions
from nemo_qwenlong.loops.rl_stages import show_rl
from nemo_qwenlong.loops.report import _after_stage, _kept_median, _markdown

REPO = Path(__file__).resolve().parents[2]


def _item(item_id: str) -> DocQAItem:
    return DocQAItem(item_id, "tiny_qa_0_20000", ({"role": "user", "content": "q"},), "q", "a", ("a",))


def test_accuracy_by_band_groups_tiny_items_by_their_band() -> None:
    items = [_item("tiny_heldout_stage1-short_1_00000"), _item("tiny_heldout_stage1-short_1_00001"),
             _item("tiny_heldout_stage2-long_1_00000"), _item("tiny_heldout_stage2-long_1_00001"),
             _item("tiny_heldout_stage2-long_1_00002"), _item("other")]
    acc = accuracy_by_band(items, [True, False, True, True, False, True])
    # short 1/2, long 2/3, the non-tiny item under its data_source, all 4/6
    assert acc == {"heldout-stage1-short": 0.5, "heldout-stage2-long": 2 / 3, "tiny_qa_0_20000": 1.0, "all": 4 / 6}


def _skipped_row() -> dict:
    """An on_exhausted=partial step with no mixed group, as metrics.jsonl reads it back (nan -> null)."""
    return {"phase": "rl", "stage": "stage2-long", "step": 70, "loss": 0.0, "accuracy": 0.0, "reward_mean": None,
            "update_skipped": 1, "dynamic_sampling/kept_fraction": 0.0, "dynamic_sampling/rounds": 4.0,
            "time/step_s": 1.25}


def test_a_step_without_a_mixed_group_prints_no_nan(capsys) -> None:  # noqa: ANN001
    run = Run(load_config(REPO / "conf" / "tiny-cpu.yaml"), RunOptions(progress=False))
    row = _skipped_row() | {"reward_mean": float("nan")}  # what rl_step returns
    show_rl(run, row, last=120)
    line = capsys.readouterr().out.strip()
    assert line == ("rl step 70/120 [stage2-long]: no mixed group (update skipped)  acc 0.000  kept 0.00 in "
                    "4 round(s)  1.2 s")
    assert "nan" not in line.lower()


def test_a_step_where_aepo_kept_no_sample_says_so(capsys) -> None:  # noqa: ANN001
    run = Run(load_config(REPO / "conf" / "tiny-cpu.yaml"), RunOptions(progress=False))
    row = _skipped_row() | {"reward_mean": -0.5, "aepo/masking": 1.0, "aepo/kept": 0.0}
    show_rl(run, row, last=120)
    assert "AEPO kept no sample (update skipped)" in capsys.readouterr().out
    show_rl(run, row | {"reward_mean": float("nan")}, last=120)  # no mixed group, whatever AEPO's state
    assert "no mixed group (update skipped)" in capsys.readouterr().out


def _fake_run(tmp_path: Path) -> SimpleNamespace:
    """A stand-in for `Run` holding only what the report reads: the config's stages and the stage folders."""
    cfg = load_config(REPO / "conf" / "tiny-cpu.yaml")
    dirs = {f"rl-{s.name}": tmp_path / f"0{2 + i}-rl-{s.name}" for i, s in enumerate(cfg.curriculum.stages)}
    probes = [{"heldout-stage1-short": 0.6, "heldout-stage2-long": 0.3, "all": 0.45},
              {"heldout-stage1-short": 0.7, "heldout-stage2-long": 0.5, "all": 0.6}]
    for path, acc in zip(dirs.values(), probes):
        path.mkdir()
        (path / "stage.json").write_text(json.dumps({"done": True, "heldout_probe": {"items": 200, "accuracy": acc}}))
    return SimpleNamespace(cfg=cfg, dirs=dirs)


def test_report_has_accuracy_after_each_stage_and_kept_medians(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    result = {"heldout_accuracy": {"sft": 0.1, "rl": 0.6},
              "by_band": {"sft": {"heldout-stage2-long": 0.05, "heldout-stage1-short": 0.15}}}
    after = _after_stage(run, result)
    assert after == {"sft": {"heldout-stage1-short": 0.15, "heldout-stage2-long": 0.05, "all": 0.1},
                     "stage1-short": {"heldout-stage1-short": 0.6, "heldout-stage2-long": 0.3, "all": 0.45},
                     "stage2-long": {"heldout-stage1-short": 0.7, "heldout-stage2-long": 0.5, "all": 0.6}}
    rows = [{"stage": "stage1-short", "dynamic_sampling/kept_fraction": v} for v in (0.5, 0.25, 0.125)]
    rows += [{"stage": "stage2-long", "dynamic_sampling/kept_fraction": v} for v in (0.0, 0.5, 0.25, 0.375)]
    kept = _kept_median(run, rows)
    assert kept == {"stage1-short": 0.25, "stage2-long": 0.3125}  # medians of 3 and of 4 values
    md = _markdown({"run_dir": "r", "steps": {"sft": 1, "rl": 7}, "wall_seconds": 1.0, "sessions": 1,
                    "heldout_accuracy": {}, "reward_first_last": None, "export": None, "plots": [],
                    "heldout_after_stage": after, "kept_fraction_median": kept})
    assert "- median kept-group fraction (dynamic sampling) per RL stage: stage1-short 0.25, stage2-long 0.31" in md
    assert "| after | heldout-stage1-short | heldout-stage2-long | all |" in md
    assert "| sft | 0.150 | 0.050 | 0.100 |" in md
    assert "| stage1-short | 0.600 | 0.300 | 0.450 |" in md
    assert "| stage2-long | 0.700 | 0.500 | 0.600 |" in md
