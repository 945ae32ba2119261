"""`nemo-qwenlong launch`: what the rendered plans must hold for a cluster (beyond the snapshots), bad input,
secrets by name only, requeue, the local executor, and the pieces the jobs run (wait_ready, mark_preempted)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from nemo_qwenlong.config import load_config
from nemo_qwenlong.launch import requeue, wait_ready
from nemo_qwenlong.launch.plan import LaunchOptions, build_plan
from nemo_qwenlong.loops.run_dir import config_differences
from tests.launch.snapshots import CLUSTER_FILE, CONF, LOCAL_RECIPE, main, no_stdin, render_case

RECIPE = CONF / "qwenlong-l1" / "dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml"


def _launch(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    with no_stdin():
        code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _dry(tmp_path: Path, kind: str, *extra: str) -> list[str]:
    return ["launch", kind, "--recipe", str(RECIPE), "--cluster", str(CLUSTER_FILE), "--dry-run",
            "--plan-dir", str(tmp_path / "plans"), "--run-name", "r1", *extra]


def test_rl_plan_is_a_multi_node_torchrun_with_the_judge_on_its_own_node(tmp_path: Path) -> None:
    code, printed, folder = render_case(RECIPE, "rl", tmp_path)
    assert code == 0, printed
    sbatch = (folder / "rl_sbatch.sh").read_text()
    trainer, judge = ((folder / "rl" / "scripts" / f"rl-{i}.sh").read_text() for i in (0, 1))
    assert "#SBATCH --nodes=4" in sbatch and "#SBATCH hetjob" in sbatch and "#SBATCH --gpus-per-node=1" in sbatch
    assert "#SBATCH --ntasks-per-node=1" in sbatch  # one torchrun per node starts the 8 ranks
    assert "--nnodes 4 --nproc-per-node 8 --rdzv-backend c10d" in trainer
    assert 'NQL_JUDGE_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_1"' in sbatch
    assert 'reward.judge.base_url=http://${NQL_JUDGE_HOST}:8000/v1' in trainer
    assert "wait_ready \"http://${NQL_JUDGE_HOST}:8000/health\"" in trainer
    assert "exec vllm serve /models/Qwen2.5-1.5B-Instruct --served-model-name Qwen/Qwen2.5-1.5B-Instruct" in judge
    assert "--host 0.0.0.0" in judge and "trap '' USR1" in judge


def test_the_script_carries_the_resolved_config(tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, "run", tmp_path)
    script = (folder / "run" / "scripts" / "run-0.sh").read_text()
    embedded = script.split("<<'NQL_CONFIG_EOF'\n")[1].split("NQL_CONFIG_EOF")[0]
    (tmp_path / "embedded.yaml").write_text(embedded)
    expected = load_config(RECIPE, overlays=[CLUSTER_FILE])
    assert load_config(tmp_path / "embedded.yaml").model_dump() == expected.model_dump()


def test_requeue_on_preemption_is_wired_end_to_end(tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, "run", tmp_path)
    sbatch = (folder / "run_sbatch.sh").read_text()
    trainer = (folder / "run" / "scripts" / "run-0.sh").read_text()
    job_folder = "/lustre/my-project/nemo-qwenlong/jobs/dapo-r1distill32b-2stage-4n8g-tp8cp4-run/run"
    assert f"{job_folder}:/nemo_run" in sbatch  # the container's /nemo_run/preempted is this host file
    assert f'if [ -f "{job_folder}/preempted" ]' in sbatch and "trap nql_requeue_if_preempted EXIT" in sbatch
    assert "#SBATCH --signal=USR1@1200" in sbatch and "sbatch --requeue" in sbatch
    assert '"${SLURM_RESTART_COUNT:-0}" -lt 20' in sbatch
    assert "export NQL_PREEMPTED_FILE=/nemo_run/preempted" in trainer
    assert "--signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout 1200" in trainer
    assert "#SBATCH --open-mode=append" in sbatch  # logs continue across requeues


@pytest.mark.parametrize("kind", ["eval", "judge"])
def test_servers_are_not_requeued(kind: str, tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, kind, tmp_path)
    sbatch = (folder / f"{kind}_sbatch.sh").read_text()
    assert "--signal=" not in sbatch and "nql_requeue_if_preempted" not in sbatch


def test_eval_runs_server_and_client_on_one_node_and_the_judge_on_another(tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, "eval", tmp_path)
    sbatch = (folder / "eval_sbatch.sh").read_text()
    server, client, judge = ((folder / "eval" / "scripts" / f"eval-{i}.sh").read_text() for i in range(3))
    assert sbatch.count("srun --het-group=0") == 2 and sbatch.count("srun --het-group=1") == 1
    assert sbatch.count("--overlap") == 2 and sbatch.count("#SBATCH hetjob") == 1
    assert "vllm serve /runs/dapo-r1distill32b-2stage-4n8g-tp8cp4-run/03-export/hf" in server
    assert "--tensor-parallel-size 8" in server
    assert "wait_ready http://127.0.0.1:8100/health" in client
    assert "--server-url http://127.0.0.1:8100/v1 --served-model-name eval-model" in client
    assert "--data-dir /data/qwenlong-eval" in client and '--judge-url "http://${NQL_JUDGE_HOST}:8000/v1"' in client
    assert "vllm serve" in judge


def test_standalone_judge_publishes_its_address(tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, "judge", tmp_path)
    (script,) = (folder / "judge" / "scripts").glob("*.sh")
    assert 'echo "http://$(hostname):8000/v1" > /nemo_run/judge_url' in script.read_text()


def test_sft_has_no_judge_and_an_external_judge_key_goes_by_name(tmp_path: Path) -> None:
    cfg = load_config(RECIPE, ["sft.train_path=/d.jsonl"], overlays=[CLUSTER_FILE])
    assert [t.name for t in build_plan("sft", cfg, LaunchOptions("x")).tasks] == ["trainer"]
    external = load_config(RECIPE, ["cluster.judge.launch=false", "reward.judge.base_url=https://api.example.com/v1"],
                           overlays=[CLUSTER_FILE])
    plan = build_plan("rl", external, LaunchOptions("x"))
    assert [t.name for t in plan.tasks] == ["trainer"]
    assert "VERIFIER_API_KEY" in plan.secret_env and "VERIFIER_API_KEY" not in plan.required_secrets


def test_secret_values_never_reach_the_plan(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    secret = "sk-" + "a1b2c3d4" * 4
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("VERIFIER_API_KEY", secret)
    code, _, err = _launch(capsys, *_dry(tmp_path, "rl", "cluster.secret_env=[HF_TOKEN]"))
    assert code == 0, err
    files = [p for p in (tmp_path / "plans").rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret in p.read_text(errors="replace")]
    sbatch = next(p for p in files if p.name == "rl_sbatch.sh").read_text()
    assert "--container-env HF_TOKEN,WANDB_API_KEY" in sbatch
    assert 'if [ -z "${HF_TOKEN+set}" ]' in sbatch  # checked without expanding the value under `set -x`


@pytest.mark.parametrize(("extra", "needle"), [
    (["reward.judge.base_url=https://user:hunter2@judge.example.com/v1"], "override reward.judge.base_url"),
    (["cluster.env_vars.EXTRA=Bearer abcdefgh12345678"], "cluster.env_vars"),
    (["cluster.job_dir=null"], "cluster.job_dir = None"),
    (["runs_dir=runs"], "runs_dir = 'runs' is relative"),
    (["cluster.judge.model_path=null"], "cluster.judge.model_path is null"),
    (["--run-name", "a/b"], "--run-name 'a/b'"),
    (["cluster.secret_env=[not-a-name]"], "cluster.secret_env"),
])
def test_bad_input_is_one_line_exit_2(extra: list[str], needle: str, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code, _, err = _launch(capsys, *_dry(tmp_path, "rl", *extra))
    assert code == 2, err
    assert err.startswith("launch error: ") and needle in err and "Traceback" not in err


def test_eval_needs_a_model_and_benchmarks(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stop:
        _launch(capsys, *_dry(tmp_path, "eval"))
    assert stop.value.code == 2 and "--model" in capsys.readouterr().err
    code, _, err = _launch(capsys, *_dry(tmp_path, "eval", "--model", "/m", "evaluation.benchmarks=null"))
    assert code == 2 and "evaluation.benchmarks is null" in err


def test_cluster_file_holds_only_site_fields(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    site = tmp_path / "site.yaml"
    site.write_text(CLUSTER_FILE.read_text() + "rl:\n  clip_high: 0.3\n")
    argv = _dry(tmp_path, "rl")
    argv[argv.index(str(CLUSTER_FILE))] = str(site)
    code, _, err = _launch(capsys, *argv)
    assert code == 2 and "top-level key(s) rl are not site fields" in err


def test_a_bad_cluster_field_names_the_cluster_file_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    site = tmp_path / "site.yaml"
    site.write_text("cluster:\n  executor: slurm\n  account: a\n  partition: p\n  time: soon\n")
    argv = _dry(tmp_path, "rl")
    argv[argv.index(str(CLUSTER_FILE))] = str(site)
    code, _, err = _launch(capsys, *argv)
    assert code == 2 and "cluster.time = 'soon'" in err and f"{site}:5" in err


def test_an_existing_plan_is_not_overwritten(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert _launch(capsys, *_dry(tmp_path, "judge"))[0] == 0
    code, _, err = _launch(capsys, *_dry(tmp_path, "judge"))
    assert code == 2 and "already holds a plan" in err


def test_submitting_off_a_login_node_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    argv = [a for a in _dry(tmp_path, "judge") if a != "--dry-run"]
    code, _, err = _launch(capsys, *argv)
    assert code == 2 and "sbatch is not on PATH" in err


def test_local_executor_refuses_server_kinds(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code, _, err = _launch(capsys, "launch", "judge", "--recipe", str(LOCAL_RECIPE), "--dry-run",
                           "--plan-dir", str(tmp_path))
    assert code == 2 and "launch judge runs on Slurm" in err


def test_help_lists_the_kinds(capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as stop:
        main(["launch", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert all(k in text for k in ("sft", "rl", "run", "eval", "judge", "--dry-run") if k != "--dry-run")


@pytest.mark.slow
def test_local_executor_runs_the_tiny_recipe(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    runs = tmp_path / "runs"
    code, out, err = _launch(capsys, "launch", "sft", "--recipe", str(LOCAL_RECIPE), "--plan-dir", str(tmp_path / "p"),
                             "--run-name", "t", f"runs_dir={runs}", "sft.max_steps=2")
    assert code == 0, err
    assert "launch sft: ran: tiny-cpu on local" in out
    assert (runs / "t" / "01-sft" / "stage.json").is_file() and (runs / "t" / "summary.json").is_file()


# ---- the pieces the jobs run -------------------------------------------------------------------------

def test_mark_preempted_is_rank_0s_and_only_when_asked(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    mark = tmp_path / "job" / "preempted"
    monkeypatch.delenv(requeue.PREEMPTED_FILE_ENV, raising=False)
    assert requeue.mark_preempted() is None
    monkeypatch.setenv(requeue.PREEMPTED_FILE_ENV, str(mark))
    monkeypatch.setenv("RANK", "1")
    assert requeue.mark_preempted() is None and not mark.exists()
    monkeypatch.setenv("RANK", "0")
    assert requeue.mark_preempted() == mark and mark.is_file()


def test_wait_ready_sees_a_server_and_times_out_without_one() -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/health"
    try:
        assert wait_ready.main([url, "--timeout-s", "5", "--poll-s", "0.1"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert wait_ready.main([url, "--timeout-s", "0.3", "--poll-s", "0.1"]) == 2


def test_a_requeued_job_resumes_despite_a_new_judge_address_or_cluster_fields() -> None:
    saved = {"cluster": {"time": "04:00:00"}, "reward": {"judge": {"base_url": "http://n1:8000/v1", "model": "j"}}}
    now = {"cluster": {"time": "12:00:00"}, "reward": {"judge": {"base_url": "http://n7:8000/v1", "model": "j"}}}
    assert config_differences(saved, now) == []
    now["reward"]["judge"]["model"] = "other"
    assert config_differences(saved, now) == ["reward.judge.model: checkpoint 'j', now 'other'"]


def test_trainer_scripts_state_the_rollout_replicas(tmp_path: Path) -> None:
    _, _, folder = render_case(RECIPE, "rl", tmp_path)
    trainer = (folder / "rl" / "scripts" / "rl-0.sh").read_text()
    assert "# rollout replicas: R = W/T = 32/4 = 8 vLLM engines inside the trainer ranks, replica r on ranks 4r..4r+3" \
        in trainer


ONE_NODE = CONF / "qwenlong-l1" / "dapo-r1distill7b-2stage-1n8g-tp4cp2.yaml"


def test_a_judge_on_the_trainer_node_is_a_step_of_the_same_job(tmp_path: Path) -> None:
    """cluster.judge.placement=trainer_node: no het job; the judge's srun shares the first node's GPUs (--overlap,
    relative node 0), pins GPU 0, takes its gpu_memory_utilization, and the trainer finds it at NQL_MASTER_ADDR."""
    code, printed, folder = render_case(ONE_NODE, "rl", tmp_path)
    assert code == 0, printed
    sbatch = (folder / "rl_sbatch.sh").read_text()
    trainer, judge = ((folder / "rl" / "scripts" / f"rl-{i}.sh").read_text() for i in (0, 1))
    assert "hetjob" not in sbatch and "--het-group" not in sbatch and "#SBATCH --nodes=1" in sbatch
    assert "#SBATCH --gpus-per-node=8" in sbatch
    assert 'export NQL_JUDGE_HOST="${NQL_MASTER_ADDR}"' in sbatch
    trainer_srun, judge_srun = (ln for ln in sbatch.splitlines() if ln.startswith("srun --output"))
    assert trainer_srun.endswith("--mpi=pmix --overlap bash /nemo_run/scripts/rl-0.sh & pids[0]=$!")
    assert "--mpi=pmix --nodes=1 --ntasks=1 --relative=0 --overlap bash /nemo_run/scripts/rl-1.sh" in judge_srun
    assert "export CUDA_VISIBLE_DEVICES=0  # GPU 0 of the job's first node" in judge
    assert judge.rstrip().endswith("--max-model-len 8192 --gpu-memory-utilization 0.1")
    assert 'wait_ready "http://${NQL_JUDGE_HOST}:8000/health"' in trainer
    assert "--nnodes 1 --nproc-per-node 8" in trainer and "R = W/T = 8/2 = 4" in trainer


def test_eval_beside_a_shared_judge_leaves_it_room_and_fits_the_model_heads(tmp_path: Path) -> None:
    """7B's 28 heads refuse TP 8: the eval server runs TP 4 × DP 2 on the node, at 0.9 − 0.1 of each GPU."""
    code, printed, folder = render_case(ONE_NODE, "eval", tmp_path)
    assert code == 0, printed
    sbatch = (folder / "eval_sbatch.sh").read_text()
    server, _, judge = ((folder / "eval" / "scripts" / f"eval-{i}.sh").read_text() for i in range(3))
    assert "hetjob" not in sbatch and sbatch.count("--overlap") == 3
    assert "--tensor-parallel-size 4 --data-parallel-size 2" in server and "--gpu-memory-utilization 0.80" in server
    assert "--gpu-memory-utilization 0.1" in judge


def test_eval_server_parallel_sizes() -> None:
    from nemo_qwenlong.launch.plan import eval_server_parallel

    def sizes(recipe: str, *overrides: str) -> tuple[int, int]:
        return eval_server_parallel(load_config(CONF / "qwenlong-l1" / recipe, list(overrides)))

    assert sizes("dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml") == (8, 1)  # 40 heads / 8 KV heads: all 8 GPUs
    assert sizes("dapo-r1distill7b-2stage-1n8g-tp4cp2.yaml") == (4, 2)  # 28 heads: TP 4, two servers' worth
    assert sizes("dapo-r1distill1.5b-2stage-1n1g.yaml") == (1, 1)
    unknown = sizes("dapo-r1distill32b-2stage-4n8g-tp8cp4.yaml", "model.path=/models/Other", "model.geometry=null")
    assert unknown == (8, 1)  # shape unknown: one TP group over the node, as before
