"""`nemo-qwenlong data ...`: synthesise and validate DocQA data."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from nemo_qwenlong.cli.common import file_stem, positive_int
from nemo_qwenlong.cli.errors import CommandError

LAYOUTS = ("auto", "docqa_parquet", "jsonl", "docmath", "frames", "longbench")
BUCKETS = (2_000, 4_000, 8_000, 16_000, 32_000, 64_000)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="synthesise or validate DocQA data")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)

    synth = verbs.add_parser("synth", help="write a synthetic long-document QA set in the DocQA-RL-1.6K parquet layout")
    synth.add_argument("--out", required=True, type=Path, help="output folder (train.parquet is written there)")
    synth.add_argument("--n", required=True, type=positive_int, help="number of items (>= 1)")
    synth.add_argument("--min-tokens", required=True, type=positive_int, help="shortest document, estimated tokens")
    synth.add_argument("--max-tokens", required=True, type=positive_int,
                       help="longest document, estimated tokens (>= --min-tokens and >= 80, the facts a question needs)")
    synth.add_argument("--seed", type=int, default=1, help="item i depends only on (seed, i); default 1")
    synth.add_argument("--profile", choices=("uniform", "docqa"), default="uniform",
                       help="length distribution: uniform, or log-normal like DocQA-RL-1.6K (mean ~11K)")
    synth.add_argument("--split", default="train", type=file_stem,
                       help="file name stem (no folders: the file is written inside --out); default train")
    synth.set_defaults(handler=_synth)

    validate = verbs.add_parser("validate", help="check every row; summary when clean, one line per bad row otherwise")
    validate.add_argument("path", type=Path, help="a .parquet (DocQA layout) or .jsonl file")
    validate.add_argument("--format", choices=LAYOUTS, default="auto", help="layout; auto: by file extension")
    validate.add_argument("--tokenizer", type=Path, help="tokenizer folder: exact templated prompt lengths (cached beside the data)")
    validate.set_defaults(handler=_validate)


def _synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from nemo_qwenlong.data.loaders import write_docqa_parquet
    from nemo_qwenlong.data.synth import synth_items

    if args.min_tokens > args.max_tokens:
        raise CommandError(f"--min-tokens {args.min_tokens} is above --max-tokens {args.max_tokens}; "
                           "accepted: --min-tokens <= --max-tokens")
    items = list(tqdm(synth_items(args.n, min_tokens=args.min_tokens, max_tokens=args.max_tokens, seed=args.seed,
                                  profile=args.profile), total=args.n, desc="synth", unit="item", disable=args.n < 200))
    path = write_docqa_parquet(items, args.out / f"{args.split}.parquet")
    kinds = Counter(it.data_source for it in items)
    print(f"wrote {len(items)} items to {path}")
    for source, count in sorted(kinds.items()):
        print(f"  {source:<40} {count}")
    return 0


def _load(path: Path, layout: str):
    from nemo_qwenlong.data.loaders import load_docqa_parquet, load_eval, load_jsonl

    if layout == "auto":
        layout = "docqa_parquet" if path.suffix == ".parquet" else "jsonl"
    if layout == "docqa_parquet":
        return load_docqa_parquet(path, skip_invalid=True)
    if layout == "jsonl":
        return load_jsonl(path, skip_invalid=True)
    return load_eval(path, layout, name=path.stem, skip_invalid=True)


def _validate(args: argparse.Namespace) -> int:
    from nemo_qwenlong.data.schema import EmptyDataError

    if not args.path.is_file():
        raise CommandError(f"{args.path} is not a file; expected a .parquet (DocQA layout) or .jsonl file")
    if args.tokenizer is not None and not args.tokenizer.is_dir():
        raise CommandError(f"--tokenizer {args.tokenizer} is not a folder; expected a tokenizer folder "
                           "(tokenizer.json / tokenizer_config.json), e.g. a model's HF folder")
    try:
        items, report = _load(args.path, args.format)
    except EmptyDataError as err:
        print(f"data validate warning: {err}", file=sys.stderr)
        return 1
    for error in report.errors:
        print(str(error), file=sys.stderr)
    if report.errors:
        print(f"{report.skipped} of {report.rows} rows invalid", file=sys.stderr)
        return 1
    lengths, unit = _lengths(items, args)
    print(f"{args.path}: {report.rows} rows, all valid")
    for kind, count in sorted(Counter(it.kind for it in items).items()):
        print(f"  kind {kind:<8} {count}")
    for source, count in sorted(Counter(it.data_source for it in items).items()):
        print(f"  data_source {source:<36} {count}")
    print(histogram(list(lengths.values()), unit))
    return 0


def _lengths(items, args) -> tuple[dict[str, int], str]:
    if args.tokenizer is None:
        from nemo_qwenlong.data.synth import TOKENS_PER_WORD

        est = {it.item_id: int(len(it.prompt_text.split()) * TOKENS_PER_WORD) for it in items}
        return est, f"estimated tokens (words x {TOKENS_PER_WORD}; pass --tokenizer for exact)"
    from transformers import AutoTokenizer

    from nemo_qwenlong.data.prompt import cache_path_for, prompt_lengths

    try:
        tok = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--tokenizer {args.tokenizer}: no loadable tokenizer there ({exc})") from None
    if not getattr(tok, "chat_template", None):
        raise CommandError(f"--tokenizer {args.tokenizer}: the tokenizer has no chat template (no `chat_template` "
                           "in tokenizer_config.json, no chat_template.jinja), and prompt lengths are counted after "
                           "it; accepted: the policy model's HF folder (e.g. DeepSeek-R1-Distill-Qwen-*), or no "
                           "--tokenizer for estimated lengths")
    return prompt_lengths(items, tok, cache_path=cache_path_for(args.path), progress=True), "templated prompt tokens"


def histogram(values: list[int], unit: str, width: int = 40) -> str:
    """Text histogram over fixed token buckets."""
    edges = [0, *BUCKETS]
    labels = [f"{lo // 1000}K-{hi // 1000}K" for lo, hi in zip(edges, edges[1:])] + [f">{BUCKETS[-1] // 1000}K"]
    counts = [0] * len(labels)
    for v in values:
        counts[next((i for i, hi in enumerate(BUCKETS) if v <= hi), len(BUCKETS))] += 1
    peak = max(counts) or 1
    lines = [f"length histogram ({unit}): min {min(values, default=0)}, "
             f"mean {sum(values) / max(len(values), 1):.0f}, max {max(values, default=0)}"]
    lines += [f"  {lab:>8} {c:>6} {'#' * round(width * c / peak)}" for lab, c in zip(labels, counts)]
    return "\n".join(lines)
