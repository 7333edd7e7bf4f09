# offbench: every target creates .venv with the pinned dependencies first, so on a fresh
# clone `make test` or `make bench` is the only command needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# bash with pipefail: a failing command in a pipe (pip install | sed) fails its recipe
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# JAX's persistent compilation cache, shared by tests, benchmarks and the CLI.
export OFFBENCH_CACHE ?= $(HOME)/.cache/offbench
export JAX_COMPILATION_CACHE_DIR ?= $(OFFBENCH_CACHE)/jax

.PHONY: help setup test lint bench perf sweep datasets policies lock clean
.DEFAULT_GOAL := help

help: ## list the verbs
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## (.*)/  make \1\t\2/' | expand -t 16

setup: $(STAMP) ## create .venv with the pinned dependencies (every verb does this first)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "offbench needs Python 3.11 (set PYTHON=/path/to/python3.11)"'
	@echo "setup: creating $(VENV) and installing the pinned dependencies (a few minutes, once)"
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --disable-pip-version-check --progress-bar off -c constraints.txt -e '.[dev,ray,wandb]' \
	  | sed -nE 's/^Collecting ([^ ]*).*/  collecting \1/p; /^Successfully installed/p'
	$(BIN)/pip check
	$(BIN)/python -c 'from offbench.envs import mujoco_ffi; print("built", mujoco_ffi.build())' \
	  || echo "note: C++ MuJoCo step not built; the C backend will use its Python fallback"
	touch $(STAMP)

lint: setup ## ruff over the code and tests
	$(BIN)/ruff check offbench baselines examples tests

# The test files run on TEST_WORKERS processes (pytest-xdist, --dist loadfile: each file's
# tests in order in one process, sharing its module fixtures); one process keeps about one
# core busy, so 2 uses both of a 2-core machine. TEST_WORKERS=1: one process.
TEST_WORKERS ?= 2
test: setup lint ## lint, then the whole test suite (on TEST_WORKERS=2 processes)
	$(BIN)/python -m pytest -q $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The benchmark: the bench profile's sweep into the results store, then the leaderboard in
# results/. PROFILE=auto picks `cpu` when JAX finds no accelerator and `gpu` otherwise;
# `make bench PROFILE=full` (the D4RL-scale protocol) forces one. ALGOS=mine (names in baselines/, module paths or .py
# files) runs submitted algorithms beside the profile's and writes their leaderboard to
# results/submissions/NAME/ (results/ itself is left as committed). Rerunning resumes: complete
# cells are skipped.
PROFILE ?= auto
ALGOS ?=
STORE ?= $(OFFBENCH_CACHE)/store
# when make started (before setup), so the leaderboard's stated time includes the install
BENCH_START := $(shell date +%s)
bench: setup ## the bench profile's sweep, then results/leaderboard.md (PROFILE=, ALGOS=)
	$(BIN)/offbench bench --profile $(PROFILE) --store $(STORE) --resume \
	  --started-at $(BENCH_START) $(if $(ALGOS),--algos $(ALGOS))

# perf o2o: 250 env steps per timed run, 2 runs; at UTD 20 with 4 seeds one run is 20k RLPD
# updates (10 critics, 2x256), minutes on 2 CPU cores (its defaults, 2000 steps x 3 runs, would
# take hours there)
PERF_O2O_STEPS ?= 250
PERF_O2O_REPEATS ?= 2
# perf offline: 200 updates per timed run, 2 runs (its defaults, 1000 x 3, take over an hour here:
# CQL with 8 seeds and 3x256 networks runs ~17 updates/s on 2 cores)
PERF_OFFLINE_UPDATES ?= 200
PERF_OFFLINE_REPEATS ?= 2
# perf envs: the locomotion tasks, then the navigation tasks apart
NAV_TASKS := pointmaze-umaze pointmaze-medium pointmaze-large antmaze-umaze antmaze-medium antmaze-large
perf: setup ## the throughput benchmarks -> results/perf/
	$(BIN)/offbench perf envs --tasks halfcheetah hopper walker2d ant --out results/perf
	$(BIN)/offbench perf envs --tasks $(NAV_TASKS) --out results/perf/navigation
	$(BIN)/offbench perf online --out results/perf
	$(BIN)/offbench perf offline --updates $(PERF_OFFLINE_UPDATES) --repeats $(PERF_OFFLINE_REPEATS) --out results/perf
	$(BIN)/offbench perf o2o --env-steps $(PERF_O2O_STEPS) --repeats $(PERF_O2O_REPEATS) --out results/perf

doctor: setup ## devices, backend, env and update speeds, a profile's memory (a few minutes)
	$(BIN)/offbench doctor

# Any sweep spec, then the reports it declares in its [[report]] tables (every learning check
# and diagnosis is a spec: tasks/sweeps/*.toml; docs/harness.md). The specs it `needs` run
# first; rerunning resumes (complete cells are skipped).
SPEC ?=
sweep: setup ## run a sweep spec and write its reports: make sweep SPEC=tasks/sweeps/NAME.toml
	@test -n "$(SPEC)" || { echo "make sweep needs SPEC=tasks/sweeps/NAME.toml (specs: $$(ls tasks/sweeps | tr '\n' ' '))"; exit 2; }
	$(BIN)/offbench sweep $(SPEC) --store $(STORE) --resume --report

# Behaviour policies for the datasets: SAC (published defaults; networks per task: 2x128 where
# that reached the published SAC return at 1M steps -- a 128-wide hidden layer costs a quarter
# of a 256-wide one, and these policies only generate data -- 2x256 where 2x128 fell short),
# 1 seed, 1M env steps per task (hopper: see POLICY_STEPS_hopper), with the actor saved after every evaluation; then the
# expert/medium/replay snapshots are chosen, evaluated and committed under tasks/policies/ (each
# task's policies.json records the exact command it came from; tests check these widths against
# it). Hours of CPU; rerunning resumes from the cache's checkpoints.
# ant-waypoint: the AntMaze datasets' navigation controller (offbench/envs/waypoint.py); its
# `policies select` picks the snapshot that succeeds most in the three mazes
# (offbench/data/antmaze.py, tasks/policies/ant-nav/).
POLICY_TASKS ?= halfcheetah hopper walker2d ant ant-waypoint
POLICY_STEPS ?= 1000000
# hopper's committed policies come from the first 400k steps of a 1M run: its evaluation had
# plateaued above published SAC's 1M-step return (tasks/policies/hopper/policies.json,
# training_run.stopped_early), so `make policies` trains it that long to reproduce them.
POLICY_STEPS_hopper ?= 400000
# ant-waypoint's run stopped at 500k steps, its maze success level from 350k on
# (tasks/policies/ant-nav/policies.json, training_run.stopped_early)
POLICY_STEPS_ant-waypoint ?= 500000
POLICY_HIDDEN_halfcheetah ?= 256,256
POLICY_HIDDEN_hopper ?= 256,256
POLICY_HIDDEN_walker2d ?= 128,128
POLICY_HIDDEN_ant ?= 256,256
POLICY_HIDDEN_ant-waypoint ?= 256,256
POLICY_RUNS := $(OFFBENCH_CACHE)/runs/policies
policies: setup ## train the behaviour policies and commit them under tasks/policies/ (hours)
	$(foreach t,$(POLICY_TASKS),$(BIN)/offbench train-online sac $(t) \
	  --env-steps $(or $(POLICY_STEPS_$(t)),$(POLICY_STEPS)) \
	  --eval-every 10000 --checkpoint-every 50000 --snapshots --set hidden=$(POLICY_HIDDEN_$(t)) \
	  --out $(POLICY_RUNS)/$(t) --resume && ) true
	$(BIN)/offbench policies select $(POLICY_TASKS) --runs $(POLICY_RUNS)

# Every dataset kind of every task with committed policies, then results/datasets/datasets.md.
# The data goes to $(OFFBENCH_DATASETS) (default ~/.offbench/datasets), never into the
# repository.
DATASET_SIZE ?= 1m
datasets: setup ## build every dataset kind and results/datasets/datasets.md
	$(BIN)/offbench datasets build --all --size $(DATASET_SIZE)
	$(BIN)/offbench datasets report --size $(DATASET_SIZE) --out results/datasets/datasets.md

# Re-resolve the pins in a throwaway venv and rewrite constraints.txt.
lock: ## re-resolve the pins into constraints.txt
	rm -rf /tmp/offbench-lock && $(PYTHON) -m venv /tmp/offbench-lock
	/tmp/offbench-lock/bin/pip install --quiet --upgrade pip==25.3
	/tmp/offbench-lock/bin/pip install --quiet '.[dev,ray,wandb]'
	/tmp/offbench-lock/bin/pip check
	(echo "# Full resolved dependency set (pip freeze of a fresh venv), used as pip constraints."; \
	 echo "# Regenerate with: make lock"; \
	 /tmp/offbench-lock/bin/pip freeze | grep -v '^offbench') > constraints.txt

clean: ## remove .venv
	rm -rf $(VENV) *.egg-info
