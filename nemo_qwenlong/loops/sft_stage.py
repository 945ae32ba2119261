"""The `sft` stage of `run` (`loops.pipeline.Run`): warm-up SFT (`loops.sft.run_sft`) from the starting
weights, or from its newest checkpoint on resume; ends with the SFT checkpoint as an HF folder
(`NN-sft/hf`, the eval's SFT model) and `stage.json`."""

from __future__ import annotations

from typing import Any

from nemo_qwenlong.loops import dist, state
from nemo_qwenlong.loops.run_dir import mark_done, stage_done


def run_sft_stage(run: Any) -> None:
    from nemo_qwenlong.backends.megatron import checkpoint as ckpt
    from nemo_qwenlong.data.sft import load_sft
    from nemo_qwenlong.loops import sft
    from nemo_qwenlong.loops.backend import build_policy, export_hf, load_weights
    from nemo_qwenlong.loops.encode import prompt_ids, response_ids

    folder = run.dirs["sft"]
    if stage_done(folder):
        return
    cfg = run.cfg
    enc = lambda exs: [(prompt_ids(run.tokenizer, e.messages), response_ids(run.tokenizer, e.response))  # noqa: E731
                       for e in exs]
    val = enc(load_sft(cfg.sft.val_path)) if cfg.sft.val_path else None
    data = sft.split_examples(enc(load_sft(run.data.sft_path)), max_seq_len=cfg.sft.max_seq_len,
                              val_fraction=cfg.sft.val_fraction, seed=cfg.seed, val=val)
    steps = sft.total_steps(len(data.train), cfg.sft)
    run.policy = build_policy(cfg, run.files, phase="sft", phase_steps=steps)
    root = run.checkpoints["sft"]
    start = ckpt.latest_step(root) or 0
    if start:
        load_weights(run.policy, root, optimizer=True, config_hash=run.hash)
        state.set_rng_state(state.load(root / ckpt.iter_dirname(start))["rng"])
    else:
        load_weights(run.policy, run.files.megatron_dir, optimizer=False)
    if dist.is_rank0():
        run.metrics.truncate_after("sft", start)
    run.console.line(f"sft: {len(data.train)} examples ({len(data.val)} for validation, "
                      f"{data.dropped_too_long} over sft.max_seq_len dropped), {steps} steps"
                      + (f", resuming after step {start}" if start else ""))
    dp_rank, dp_size = run.dp()

    def show(step: int, total: int, row: dict) -> None:
        if step % run.cfg.logging.log_every_steps == 0 or step == total or "val_loss" in row:
            val = f"  val loss {row['val_loss']:.4f}" if "val_loss" in row else ""
            run.console.line(f"sft step {step}/{total}: loss {row['loss']:.4f}  lr {row['lr']:.2e}{val}")

    sft.run_sft(run.policy, data, cfg.sft, seed=cfg.seed, start_step=start, dp_rank=dp_rank, dp_size=dp_size,
                log_row=run.log_row, save=lambda s: run.save(root, s, {"phase": "sft", "step": s}),
                should_stop=run.flag.requested, save_every=cfg.checkpoint.save_every_steps, progress=show)
    export_hf(cfg, run.policy, run.files.hf_dir, folder / "hf")
    mark_done(folder, {"steps": steps, "checkpoint": str(root / ckpt.iter_dirname(steps)), "hf": str(folder / "hf")})
    run.drop_policy()
