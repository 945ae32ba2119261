# The two commands a newcomer needs (each builds the environment first if it is missing):
#   make run    the embedded default: the whole QwenLong-L1 pipeline at tiny scale on CPU (README "What `make run` does")
#   make test   every test that can run on this machine (GPU tests are deselected without a GPU)
.PHONY: setup run test bench clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/nemo-qwenlong run conf/tiny-cpu.yaml --output runs/tiny-cpu-$$(date -u +%Y%m%d-%H%M%S)

test: setup
	$(BIN)/python -m pytest tests --durations=25

bench: setup
	$(BIN)/python benchmarks/bench_loss.py
	$(BIN)/python benchmarks/bench_rewards.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_logprobs.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_rollout.py
	$(BIN)/python benchmarks/bench_rl_step.py
	$(BIN)/python benchmarks/bench_e2e.py
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf runs .pytest_cache nemo_qwenlong.egg-info
