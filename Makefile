# The two commands a newcomer needs (each builds the environment first if it is missing):
#   make run    the embedded default: the tiny CPU pipeline (see README "What `make run` does today")
#   make test   every test that can run on this machine (GPU tests are deselected without a GPU)
.PHONY: setup run test bench clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/nemo-qwenlong demo --config conf/tiny-cpu.yaml
	$(BIN)/nemo-qwenlong smoke --config conf/tiny-cpu.yaml

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python benchmarks/bench_loss.py
	$(BIN)/python benchmarks/bench_rewards.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_logprobs.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_convert.py
	$(BIN)/python benchmarks/bench_rollout.py

clean:
	rm -rf runs .pytest_cache nemo_qwenlong.egg-info
