"""The errors a newcomer met (issue 24, item 3): each is `<command> error: …`, exit 2, no traceback, and
names what is wrong and what is accepted; the recipe goes first or after --recipe/-c on every command."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers_cli import assert_named_error, cli

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "conf" / "tiny-cpu.yaml")
CLUSTER_RECIPE = str(ROOT / "conf" / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml")
CLOSED_JUDGE = "http://127.0.0.1:9/v1"  # the discard port: nobody listens


# ---- data validate --tokenizer on a folder without a chat template ---------------------------------

def test_data_validate_names_a_tokenizer_without_chat_template(tmp_path: Path) -> None:
    from nemo_qwenlong.backends.hf.tiny import build_tiny_tokenizer

    tok = tmp_path / "tok"
    build_tiny_tokenizer(tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in tok.glob("*.jinja"):
        extra.unlink()
    assert cli("data", "synth", "--out", str(tmp_path), "--n", "2", "--min-tokens", "50", "--max-tokens", "200")[0] == 0
    assert_named_error(cli("data", "validate", str(tmp_path / "train.parquet"), "--tokenizer", str(tok)),
                       f"data validate error: --tokenizer {tok}", "no chat template", "no --tokenizer")


# ---- eval score: an unreachable judge, and the report's model name ---------------------------------

def _responses(path: Path) -> Path:
    rows = [{"id": str(i), "benchmark": "hotpotqa", "response": f"</think>Therefore, the answer is {a}.",
             "answers": ["Paris"], "question": "Capital of France?"} for i, a in enumerate(["Paris", "Lyon"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_score_refuses_an_unreachable_judge_before_scoring(tmp_path: Path) -> None:
    responses, out = _responses(tmp_path / "responses.jsonl"), tmp_path / "out"
    assert_named_error(cli("eval", "score", "--responses", str(responses), "--output", str(out), "--no-progress",
                           "--judge-url", CLOSED_JUDGE),
                       f"eval score error: --judge-url {CLOSED_JUDGE}", "/v1/models", "--judge-failures ok")
    assert not out.exists()  # refused before anything was written
    # `eval` (generate + score) asks before the generation
    assert_named_error(cli("eval", "--model", str(tmp_path), "--output", str(out), "--judge-url", CLOSED_JUDGE),
                       f"eval error: --judge-url {CLOSED_JUDGE}")
    assert not out.exists()


class _Models(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"data": []}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def models_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Models)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        _Models.status, _Models.seen = 200, []


def test_the_judge_probe_is_one_get_of_models_with_the_key(models_server: str, monkeypatch) -> None:  # noqa: ANN001
    from nemo_qwenlong.rewards.judge_probe import judge_problem

    monkeypatch.setenv("MY_JUDGE_KEY", "k-123")
    assert judge_problem(models_server + "/", "MY_JUDGE_KEY") is None
    assert _Models.seen == [("/v1/models", "Bearer k-123")]
    _Models.status = 401
    assert "HTTP 401 ($MY_JUDGE_KEY holds a key the server refused)" in judge_problem(models_server, "MY_JUDGE_KEY")
    monkeypatch.delenv("MY_JUDGE_KEY")
    assert "$MY_JUDGE_KEY is unset" in judge_problem(models_server, "MY_JUDGE_KEY")
    for status in (404, 501):  # a live server that lists no models: the judge calls say more
        _Models.status = status
        assert judge_problem(models_server, "MY_JUDGE_KEY") is None
    _Models.status = 503  # a gateway with nothing behind it
    assert "answered HTTP 503" in judge_problem(models_server, "MY_JUDGE_KEY")
    assert "not an http(s) URL" in judge_problem("localhost:8000/v1", "MY_JUDGE_KEY")


def test_bare_responses_file_name_gives_the_folder_as_model_name(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    folder = tmp_path / "my-model-eval"
    _responses(folder / "responses.jsonl")
    monkeypatch.chdir(folder)
    code, _, err = cli("eval", "score", "--responses", "responses.jsonl", "--output", "out", "--no-progress")
    assert code == 0, err
    assert (folder / "out" / "report.md").read_text().startswith("# Evaluation: my-model-eval\n")


# ---- one recipe argument: positional or --recipe/-c, on every command -------------------------------

RECIPE_COMMANDS = [["run"], ["config", "show"], ["plan"], ["launch", "run"]]


def _prefix(command: list[str]) -> str:
    return "launch" if command[0] == "launch" else " ".join(command)  # `launch error:` for every kind


@pytest.mark.parametrize("form", ["positional", "--recipe", "-c"])
@pytest.mark.parametrize("command", RECIPE_COMMANDS, ids=" ".join)
def test_every_command_reads_the_recipe_in_both_forms(command: list[str], form: str) -> None:
    """A bad override in the recipe's terms proves the recipe was read (nothing starts: the config is refused)."""
    recipe = [TINY] if form == "positional" else [form, TINY]
    assert_named_error(cli(*command, *recipe, "rl.clip_high=1.7"),
                       f"{_prefix(command)} error: {TINY}: 1 problem(s)", "rl.clip_high = 1.7")


@pytest.mark.parametrize("form", ["positional", "--recipe", "-c"])
def test_config_show_and_validate_take_the_recipe_either_way(form: str) -> None:
    recipe = [TINY] if form == "positional" else [form, TINY]
    code, out, err = cli("config", "show", *recipe, "seed=7")
    assert code == 0 and "seed: 7" in out and "source: tiny-random" in out, err
    code, out, err = cli("config", "validate", *recipe)
    assert code == 0 and f"ok    {TINY}" in out, err


@pytest.mark.parametrize("command", [*RECIPE_COMMANDS, ["config", "validate"]], ids=" ".join)
def test_a_missing_or_doubled_recipe_is_named(command: list[str]) -> None:
    name = _prefix(command)
    if command != ["config", "show"]:  # config show alone shows the schema defaults
        assert_named_error(cli(*command), f"{name} error: no recipe", "--recipe/-c")
    if command != ["config", "validate"]:  # validate takes several recipes
        assert_named_error(cli(*command, TINY, "-c", TINY), f"{name} error: two recipes")
        assert_named_error(cli(*command, TINY, "conf/other.yaml"), f"{name} error: 'conf/other.yaml' is not a "
                           "KEY=VALUE override")


def test_plan_reads_a_positional_recipe() -> None:
    code, out, err = cli("plan", CLUSTER_RECIPE, "--gpu", "h100")
    assert code == 0 and out.startswith("plan: dapo-r1distill32b-2stage"), err


# ---- launch: every missing site field at once -------------------------------------------------------

def test_launch_without_a_cluster_file_names_every_missing_site_field(tmp_path: Path) -> None:
    result = cli("launch", "rl", CLUSTER_RECIPE, "--dry-run", "--plan-dir", str(tmp_path))
    assert_named_error(result, "launch error: 3 site field(s) unset", "cluster.job_dir = None",
                       "runs_dir = 'runs' is relative", "cluster.judge.model_path is null",
                       "--cluster conf/cluster/<site>.yaml", "conf/cluster/example-slurm.yaml")
    assert not list(tmp_path.iterdir())


def test_launch_dry_run_prints_no_starlette_warning(cli_exe: str, tmp_path: Path) -> None:
    out = subprocess.run([cli_exe, "launch", "run", TINY, "--dry-run", "--plan-dir", str(tmp_path), "--run-name", "t",
                          "runs_dir=/runs-local"], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "StarletteDeprecationWarning" not in out.stderr and "starlette" not in out.stderr.lower(), out.stderr


# ---- convert megatron-to-hf --step N: the steps that exist -------------------------------------------

def test_convert_missing_step_lists_the_complete_steps(tmp_path: Path) -> None:
    root = tmp_path / "mg"
    for step, complete in ((0, True), (10, True), (20, False)):  # 20: cut short, no manifest
        folder = root / f"iter_{step:07d}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "nql_manifest.json").write_text("{}")
    assert_named_error(cli("convert", "megatron-to-hf", "--megatron", str(root), "--out", str(tmp_path / "hf"),
                           "--step", "5"),
                       "convert megatron-to-hf error:", "no complete checkpoint at step 5", "steps here, 0, 10 ")
    assert not (tmp_path / "hf").exists()


# ---- config fields: did you mean -----------------------------------------------------------------------

def test_config_fields_suggests_the_closest_keys() -> None:
    assert_named_error(cli("config", "fields", "rl.clip_hgh"), "config fields error: no config section or field "
                       "'rl.clip_hgh'; did you mean rl.clip_high")
    assert_named_error(cli("config", "fields", "rol"), "did you mean rl or rollout?")
    code, out, _ = cli("config", "fields", "rl.clip_high")  # a single field: its own line
    assert code == 0 and out.startswith("rl.clip_high ") and out.count("\n") == 1
