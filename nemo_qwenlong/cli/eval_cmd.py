"""`nemo-qwenlong eval [generate|score]`: the seven-benchmark DocQA evaluation (docs/eval.md).

`eval generate` writes responses, `eval score` scores a responses file, and `eval` alone does both
(generate into OUTPUT, score and report into the same folder). Everything resumes: re-run the same
command after a kill. `script_main` runs the top-level `eval/<benchmark>.py` and
`eval/<benchmark>_verify.py` scripts (QwenLong-L1's names) over the same steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_qwenlong.cli.common import above, at_least, positive_int
from nemo_qwenlong.cli.errors import run_command
from nemo_qwenlong.config.pipeline import JudgeConfig

DEFAULT_BENCHMARKS = "docmath,frames,2wikimqa,hotpotqa,musique,narrativeqa,qasper"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="DocQA evaluation: generate responses, score them (released protocol and ours), report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="verb", metavar="[generate|score]")
    g = steps.add_parser("generate", help="responses for the benchmarks' items (responses.jsonl)")
    _generate_args(g)
    g.set_defaults(handler=_generate, anticipated=_anticipated())
    s = steps.add_parser("score", help="score a responses file (scores.jsonl, report.md, results.jsonl, plots)")
    s.add_argument("--benchmarks", metavar="LIST", type=_names, dest="score_benchmarks",
                   help="comma-separated benchmark names: score only their rows (default: every row)")
    _score_args(s)
    s.set_defaults(handler=_score, anticipated=_anticipated())
    _generate_args(p)
    _judge_args(p)
    p.set_defaults(handler=_both, anticipated=_anticipated())


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _names(text: str) -> list[str]:
    """An argparse `type=` for `a,b,c` (benchmark names as the responses' `benchmark` field spells them)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated benchmark names, e.g. docmath,frames; got {text!r}")
    return names


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--responses", required=True, metavar="FILE.jsonl",
                   help='rows {"id", "benchmark", "response", "answers": [...], "question"} (eval generate writes them)')
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for scores.jsonl and the report")
    p.add_argument("--model-name", default=None, help="model name for the report (default: the responses' folder name)")
    _judge_args(p)
    _common_args(p)


def _generate_args(p: argparse.ArgumentParser, *, benchmarks: bool = True) -> None:
    if benchmarks:  # the per-benchmark scripts (eval/<benchmark>.py) fix it
        p.add_argument("--benchmarks", default=DEFAULT_BENCHMARKS, metavar="LIST",
                       help=f"comma-separated: {DEFAULT_BENCHMARKS} (default: all seven), NAME=PATH.jsonl or "
                       "PATH.jsonl (LongBench record layout)")
    p.add_argument("--model", metavar="HF_DIR", help="HF model folder (tokenizer and, unless --server-url, the model to serve)")
    p.add_argument("--data-dir", metavar="DIR", help="the released eval data (docmath/, frames/, longbench/data/)")
    p.add_argument("--output", "-o", metavar="DIR", help="output folder (responses.jsonl, then scores and report)")
    p.add_argument("--engine", choices=("server", "inprocess"), default="server",
                   help="server: an OpenAI-compatible server (--server-url, or a `vllm serve` started here); "
                   "inprocess: vLLM in this process")
    p.add_argument("--server-url", metavar="URL", help="a running OpenAI-compatible server, e.g. http://host:8000/v1")
    p.add_argument("--served-model-name", metavar="NAME", help="model name on that server (default: --model)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer for the input cap (default: --model)")
    p.add_argument("--max-input-tokens", type=at_least(2), default=120_000, metavar="N",
                   help="middle-truncate prompts above N tokens (released: 120000)")
    p.add_argument("--max-new-tokens", type=positive_int, default=10_000, metavar="N", help="released: 10000")
    p.add_argument("--temperature", type=at_least(0.0, float), default=0.7, help="released: 0.7")
    p.add_argument("--top-p", type=above(0.0), default=0.95, help="released: 0.95")
    p.add_argument("--samples", type=positive_int, default=1, metavar="K", help="responses per item (avg@K)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N items of each benchmark")
    p.add_argument("--concurrency", type=positive_int, default=16, metavar="N", help="requests in flight (server)")
    p.add_argument("--timeout-s", type=above(0.0), default=1800.0, help="per request (released: 1800)")
    p.add_argument("--tries", type=positive_int, default=5, help="attempts per request (released: 5)")
    p.add_argument("--seed", type=int, help="sampling seed (+ sample index); default none, as released")
    p.add_argument("--max-model-len", type=positive_int, metavar="N", help="engine context (default: input cap + output cap)")
    p.add_argument("--yarn-factor", type=above(1.0), metavar="F",
                   help="serve with YaRN ×F over the model's max_position_embeddings (e.g. 4 for 128K on a 32K model)")
    p.add_argument("--dtype", default="auto", help="engine dtype (auto, bfloat16, float32)")
    p.add_argument("--tensor-parallel", type=positive_int, default=1, metavar="N", help="engine tensor parallel size")
    _common_args(p)


def _judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-url", metavar="URL", help="OpenAI-compatible judge endpoint (released: DeepSeek-V3); none: rule scores only")
    p.add_argument("--judge-model", default="deepseek-chat", metavar="NAME", help="judge model name (released: deepseek-chat)")
    p.add_argument("--judge-api-key-env", default=None, metavar="VAR",
                   help="environment variable holding the judge's API key; default: the schema's "
                   f"reward.judge.api_key_env, {JudgeConfig.model_fields['api_key_env'].default} "
                   "(the released scripts read VERIFIER_API)")
    p.add_argument("--judge-concurrency", type=positive_int, default=20, metavar="N", help="judge calls in flight (released: 20)")
    p.add_argument("--judge-timeout-s", type=above(0.0), default=600.0,
                   help="per judge call (released: the OpenAI client's default, 600)")
    p.add_argument("--docmath-extractor", choices=("rule", "judge"), default=None,
                   help="how docmath_official finds the final answer: rule (the phrase after the last 'the answer "
                   "is', as written) or judge (DocMath-Eval's extraction prompt asked of --judge-url); default: "
                   "the schema's evaluation.docmath_extractor")
    p.add_argument("--judge-failures", choices=("stop", "ok"), default="stop",
                   help="stop (default): refuse to start when --judge-url does not answer a GET <url>/models; ok: "
                   "score anyway, every failed judge call counted at the top of report.md")


class EvalError(Exception):
    """An anticipated failure of `eval` (bad argument, unreachable server); cli.errors prints it, exit 2."""


def _anticipated() -> tuple[type[Exception], ...]:
    from nemo_qwenlong.eval.results import EvalInputError

    return (EvalError, EvalInputError)


def _progress(enabled: bool, what: str):  # noqa: ANN202
    def start(total: int, skipped: int = 0):  # noqa: ANN202
        if skipped:
            print(f"{what}: {skipped} already done, {total} to go", flush=True)
        if not enabled or not total:
            return lambda *a: None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=what, unit="item")
        return lambda n=1: bar.update(n)
    return start


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise EvalError(f"missing {', '.join(missing)}")


def _run_generate(args: argparse.Namespace) -> Path:
    from nemo_qwenlong.eval.generate import RESPONSES_FILE, GenerateOptions, generate

    from nemo_qwenlong.eval.benchmarks import parse_benchmarks

    parse_benchmarks(args.benchmarks)  # names first: a typo fails before anything loads
    _need(args, "model", "output")
    model = Path(args.model)
    if not (model / "config.json").is_file() and not args.tokenizer:
        raise EvalError(f"--model {model}: not an HF model folder (no config.json); give --tokenizer with --server-url")
    if args.engine == "inprocess" and args.server_url:
        raise EvalError("--server-url is for --engine server")
    out = Path(args.output)
    if out.is_file():
        raise EvalError(f"--output {out} is a file, not a folder")
    from nemo_qwenlong.eval.benchmarks import load_all

    items = load_all(args.benchmarks, Path(args.data_dir) if args.data_dir else None, limit=args.limit)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(Path(args.tokenizer) if args.tokenizer else model)
    opts = GenerateOptions(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                           max_input_tokens=args.max_input_tokens, samples=args.samples, concurrency=args.concurrency,
                           timeout_s=args.timeout_s, tries=args.tries, seed=args.seed)
    with _engine(args, model, tokenizer, out) as engine:
        counts = generate(items, out, engine, tokenizer, opts, progress=_progress(not args.no_progress, "generate"))
    print(f"eval generate: {counts['written']} response(s) written ({counts['failed']} failed, "
          f"{counts['truncated']} input(s) middle-truncated above {args.max_input_tokens} tokens, "
          f"{counts['skipped']} already done) -> {out / RESPONSES_FILE}", flush=True)
    return out / RESPONSES_FILE


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot load a tokenizer from {folder}: {str(exc).splitlines()[0]}") from None


class _engine:
    """The generation engine as a context manager (a server we start is stopped on exit)."""

    def __init__(self, args: argparse.Namespace, model: Path, tokenizer: Any, out: Path) -> None:
        self.args, self.model, self.tokenizer, self.out = args, model, tokenizer, out
        self.server = None
        config = model / "config.json"  # read once: the context limit and YaRN both come from it
        self.model_config: dict = json.loads(config.read_text()) if config.is_file() else {}
        self.yarn = self._yarn()

    def __enter__(self) -> Any:
        from nemo_qwenlong.eval.generate import InProcessEngine, ServerEngine

        a = self.args
        max_len = self._max_len()
        if a.engine == "inprocess":
            from nemo_qwenlong.backends.vllm.engine import VLLMGenerator

            try:
                engine = VLLMGenerator(self.model, dtype=a.dtype, max_model_len=max_len,
                                       tensor_parallel=a.tensor_parallel, seed=a.seed or 0, hf_overrides=self.yarn)
            except Exception as exc:  # noqa: BLE001 - vLLM reports a bad model/context as assorted errors
                lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
                reason = next((x for x in lines if x.startswith("Value error")), lines[0] if lines else "")
                raise EvalError(f"the in-process vLLM engine did not start for {self.model} "
                                f"(max_model_len {max_len}): {type(exc).__name__}: {reason[:600]}") from None
            return InProcessEngine(engine, self.tokenizer)
        if a.server_url:
            return ServerEngine(a.server_url, a.served_model_name or str(self.model))
        from nemo_qwenlong.backends.vllm.server import VLLMServer

        extra = ["--tensor-parallel-size", str(a.tensor_parallel)]
        if self.yarn:
            extra += ["--hf-overrides", json.dumps(self.yarn)]
        print(f"eval generate: starting `vllm serve {self.model}` (log: {self.out / 'vllm-server.log'})", flush=True)
        try:
            self.server = VLLMServer(self.model, self.out / "vllm-server.log", served_name="eval-model",
                                     max_model_len=max_len, dtype=a.dtype, extra_args=tuple(extra)).start()
        except RuntimeError as exc:
            raise EvalError(f"the vLLM server did not start: {str(exc)[:2000]}") from None
        return ServerEngine(self.server.base_url, "eval-model")

    def _max_len(self) -> int:
        """--max-model-len, else input cap + output cap, limited to what the model (with YaRN) covers."""
        a = self.args
        if a.max_model_len:
            return a.max_model_len
        wanted = a.max_input_tokens + a.max_new_tokens + 64
        if not self.model_config:
            return wanted
        limit = int(self.model_config.get("max_position_embeddings", wanted) * (a.yarn_factor or 1))
        if limit < wanted:
            print(f"eval generate: engine context {limit} tokens (the model's max_position_embeddings"
                  f"{' × YaRN' if a.yarn_factor else ''}), below input cap + output cap = {wanted}; "
                  "prompts above it fail (pass --yarn-factor or a lower --max-input-tokens)", flush=True)
        return min(wanted, limit)

    def _yarn(self) -> dict | None:
        if not self.args.yarn_factor:
            return None
        from nemo_qwenlong.backends.hf.checkpoint import rope_theta
        from nemo_qwenlong.backends.vllm.server import yarn_overrides

        cfg = self.model_config
        if "max_position_embeddings" not in cfg:
            raise EvalError(f"--yarn-factor: {self.model / 'config.json'} has no max_position_embeddings to scale")
        return yarn_overrides(self.args.yarn_factor, int(cfg["max_position_embeddings"]), rope_theta(cfg))

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()


def _judge_cfg(args: argparse.Namespace) -> Any:
    if not args.judge_url:
        return None
    key_env = {"api_key_env": args.judge_api_key_env} if args.judge_api_key_env else {}  # else the schema's default
    return JudgeConfig(base_url=args.judge_url, model=args.judge_model, concurrency=args.judge_concurrency,
                       timeout_s=args.judge_timeout_s, **key_env)


def _run_score(responses: Path, out: Path, args: argparse.Namespace, model_name: str,
               benchmarks: list[str] | None = None) -> None:
    from nemo_qwenlong.eval.run import score_and_report

    if not responses.is_file():
        raise EvalError(f"--responses {responses}: file not found")
    if out.is_file():
        raise EvalError(f"--output {out} is a file, not a folder")
    summary = score_and_report(responses, out, judge=_judge_cfg(args), model_name=model_name, benchmarks=benchmarks,
                               docmath_extractor=args.docmath_extractor or _schema_docmath_extractor(),
                               progress=_progress(not args.no_progress, "score"))
    failed = sum(s["judge_failures"] for s in summary)
    if failed:
        print(f"eval score: judge failures: {failed} of {sum(s['n'] for s in summary)} row(s) got no judge verdict "
              "(rule scores only for them; counted at the top of report.md)", flush=True)
    for s in summary:
        line = f"  {s['benchmark']:<12} n={s['n']:<5} qwenlong {s['qwenlong']:.1f}  strict {s['strict']:.1f}"
        line += f"  docmath_official {s['docmath_official']:.1f}" if s.get("docmath_official") is not None else ""
        line += f" ({s['docmath_extractor_failures']} extraction(s) failed)" if s.get("docmath_extractor_failures") else ""
        print(line + (f"  failures {s['failures']}" if s["failures"] else ""), flush=True)
    print(f"eval score: {out / 'report.md'}" + ("" if args.judge_url else " (no judge: rule scores only)"), flush=True)


def _check_judge(args: argparse.Namespace) -> None:
    """Ask --judge-url once, cheaply, before any work: an unusable judge stops here (exit 2) unless
    --judge-failures ok, which scores anyway (each failed call is counted in the report)."""
    if not args.judge_url:
        return
    from nemo_qwenlong.redact import redact_text
    from nemo_qwenlong.rewards.judge_probe import PROBE_TIMEOUT_S, judge_problem

    key_env = args.judge_api_key_env or JudgeConfig.model_fields["api_key_env"].default
    problem = judge_problem(args.judge_url, key_env, min(PROBE_TIMEOUT_S, args.judge_timeout_s))
    if problem is None:
        return
    if args.judge_failures == "stop":
        raise EvalError(f"--judge-url {args.judge_url}: the judge is not reachable: {problem}; accepted: a running "
                        "OpenAI-compatible judge at that URL (key in $" + key_env + "), no --judge-url "
                        "for rule scores only, or --judge-failures ok to score anyway with the failures counted")
    print(redact_text(f"eval: warning: --judge-url {args.judge_url}: {problem}; scoring anyway (--judge-failures ok): "
                      "failed judge calls are counted at the top of report.md"), file=sys.stderr, flush=True)


def _folder_name(folder: Path) -> str:
    """A report's default model name: the folder's name, resolved first (`responses.jsonl` alone lies in `.`)."""
    return folder.resolve().name or str(folder)


def _schema_docmath_extractor() -> str:
    from nemo_qwenlong.config.pipeline import EvaluationConfig

    return EvaluationConfig().docmath_extractor


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

def _generate(args: argparse.Namespace) -> None:
    _logging()
    _run_generate(args)


def _check_extractor(args: argparse.Namespace) -> None:
    if args.docmath_extractor == "judge" and not args.judge_url:
        raise EvalError("--docmath-extractor judge asks the judge endpoint: give --judge-url (or use rule)")


def _score(args: argparse.Namespace) -> None:
    _logging()
    _check_extractor(args)
    _check_judge(args)
    responses = Path(args.responses)
    _run_score(responses, Path(args.output), args, args.model_name or _folder_name(responses.parent), args.score_benchmarks)


def _both(args: argparse.Namespace) -> None:
    _logging()
    _check_extractor(args)
    _check_judge(args)  # before the generation: a dead judge should not cost a generation run first
    responses = _run_generate(args)
    _run_score(responses, Path(args.output), args, _folder_name(Path(args.model)))


# ---- the released script layout: eval/<benchmark>.py (generate) and eval/<benchmark>_verify.py (score) --

SCRIPT_STEPS = ("generate", "verify")


def script_parser(benchmark: str, step: str) -> argparse.ArgumentParser:
    """The parser of the top-level `eval/<benchmark>.py` (step "generate") or `eval/<benchmark>_verify.py`
    (step "verify"): QwenLong-L1's script names over `eval generate` / `eval score` for one benchmark."""
    names = DEFAULT_BENCHMARKS.split(",")
    if benchmark not in names or step not in SCRIPT_STEPS:
        raise ValueError(f"no eval script for benchmark {benchmark!r}, step {step!r}: benchmarks are "
                         f"{', '.join(names)}; steps are {', '.join(SCRIPT_STEPS)}")
    if step == "generate":
        prog = f"eval/{benchmark}.py"
        p = argparse.ArgumentParser(prog=prog, description=(
            f"Generate responses for the {benchmark} benchmark into OUTPUT/responses.jsonl (resumable: re-run after "
            f"a kill). The same as `nemo-qwenlong eval generate --benchmarks {benchmark}`; score the responses "
            f"with eval/{benchmark}_verify.py. See docs/eval.md."))
        _generate_args(p, benchmarks=False)
        p.set_defaults(handler=_generate, benchmarks=benchmark)
    else:
        prog = f"eval/{benchmark}_verify.py"
        p = argparse.ArgumentParser(prog=prog, description=(
            f"Score the {benchmark} rows of a responses file (eval/{benchmark}.py writes OUTPUT/responses.jsonl): "
            "the rule metrics and, with --judge-url, the LLM judge, under the released protocol and ours; writes "
            "scores.jsonl, report.md and results.jsonl into --output (resumable). The same as "
            f"`nemo-qwenlong eval score --benchmarks {benchmark}`. See docs/eval.md."))
        _score_args(p)
        p.set_defaults(handler=_score, score_benchmarks=[benchmark])
    p.set_defaults(command=prog, anticipated=_anticipated())
    return p


def script_main(benchmark: str, step: str, argv: Sequence[str] | None = None) -> int:
    """Run one `eval/` script under the CLI's error convention (`eval/<script>.py error: ...`, exit 2)."""
    return run_command(script_parser(benchmark, step).parse_args(argv))
