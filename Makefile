# offbench: every target creates .venv with the pinned dependencies first, so on a fresh
# clone `make test` or `make bench` is the only command needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JAX's persistent compilation cache, shared by tests, benchmarks and the CLI.
export OFFBENCH_CACHE ?= $(HOME)/.cache/offbench
export JAX_COMPILATION_CACHE_DIR ?= $(OFFBENCH_CACHE)/jax

.PHONY: setup test lint bench perf online-check offline-check offline-check-long offline-diagnosis offline-diagnosis-cql offline-diagnosis-cql-width offline-diagnosis-width offline-diagnosis-ensemble offline-diagnosis-sacn-q offline-diagnosis-long o2o-check o2o-check-long o2o-diagnosis hybrid-check hybrid-check-long policies \
  datasets lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "offbench needs Python 3.11 (set PYTHON=/path/to/python3.11)"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray,wandb]'
	$(BIN)/pip check
	$(BIN)/python -c 'from offbench.envs import mujoco_ffi; print("built", mujoco_ffi.build())' \
	  || echo "note: C++ MuJoCo step not built; the C backend will use its Python fallback"
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check offbench baselines examples tests

test: setup lint
	$(BIN)/python -m pytest -q

# The benchmark: the bench profile's sweep into the results store, then the leaderboard in
# results/. PROFILE=auto picks `cpu` when JAX finds no accelerator and `full` otherwise;
# `make bench PROFILE=full` forces one. ALGOS=mine (names in baselines/ or module paths) runs
# submitted algorithms beside the profile's. Rerunning resumes: complete cells are skipped.
PROFILE ?= auto
ALGOS ?=
STORE ?= $(OFFBENCH_CACHE)/store
bench: setup
	$(BIN)/offbench bench --profile $(PROFILE) --store $(STORE) --out results --resume \
	  $(if $(ALGOS),--algos $(ALGOS))

# perf o2o: 250 env steps per timed run, 2 runs; at UTD 20 with 4 seeds one run is 20k RLPD
# updates (10 critics, 2x256), minutes on 2 CPU cores (its defaults, 2000 steps x 3 runs, would
# take hours there)
PERF_O2O_STEPS ?= 250
PERF_O2O_REPEATS ?= 2
# perf offline: 200 updates per timed run, 2 runs (its defaults, 1000 x 3, take over an hour here:
# CQL with 8 seeds and 3x256 networks runs ~17 updates/s on 2 cores)
PERF_OFFLINE_UPDATES ?= 200
PERF_OFFLINE_REPEATS ?= 2
perf: setup
	$(BIN)/offbench perf envs --out results/perf
	$(BIN)/offbench perf online --out results/perf
	$(BIN)/offbench perf offline --updates $(PERF_OFFLINE_UPDATES) --repeats $(PERF_OFFLINE_REPEATS) --out results/perf
	$(BIN)/offbench perf o2o --env-steps $(PERF_O2O_STEPS) --repeats $(PERF_O2O_REPEATS) --out results/perf

# SAC learning check -> results/online/sac.md. Hours of CPU; rerunning resumes from the
# checkpoints, which live in the cache (outside the work tree, so a fresh checkout keeps them).
ONLINE_TASKS ?= halfcheetah hopper walker2d ant
ONLINE_RUNS := $(OFFBENCH_CACHE)/runs/online
online-check: setup
	for t in $(ONLINE_TASKS); do \
	  $(BIN)/offbench train-online sac $$t --seeds 2 --env-steps 300000 --eval-every 10000 \
	    --checkpoint-every 20000 --out $(ONLINE_RUNS)/sac-$$t --resume || exit 1; done
	$(BIN)/offbench report-online $(addprefix $(ONLINE_RUNS)/sac-,$(ONLINE_TASKS)) \
	  --out results/online/sac.md

# Offline learning check -> results/offline/check.md: every offline algorithm on the three
# datasets of the offline issue, 3 vmapped seeds, at the CPU budget of tasks/sweeps/offline-check.toml
# (the cpu bench profile widened to all eight algorithms, so the cells `make bench` ran are
# reused from the store). Rerunning resumes: complete cells are skipped.
offline-check: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-check.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --store $(STORE) \
	  --out results/offline/check.md \
	  --budget "20k updates per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 5000 updates, 100k-transition datasets (tasks/sweeps/offline-check.toml)"

# Its follow-up with 5x the updates on walker2d-medium-expert and hopper-medium-replay
# (tasks/sweeps/offline-check-long.toml; ~2 h on 2 cores)
# -> results/offline/long/check.md
offline-check-long: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-check-long.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check-long --store $(STORE) \
	  --out results/offline/long/check.md --title "Offline learning check, 5x the updates" \
	  --budget "100k updates per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 10000 updates, walker2d-medium-expert-100k and hopper-medium-replay-100k (tasks/sweeps/offline-check-long.toml; papers: 1M updates, 2x256/3x256, 10 episodes)"

# The 5x-updates check's two misses no earlier diagnosis located, each with the one change the
# diagnoses point to (tasks/sweeps/offline-diagnosis-long-sacn.toml: SAC-N on hopper-medium-replay
# with LayerNorm critics; -long-edac.toml: EDAC on the 2M-transition walker2d-medium-expert, built
# first if missing, ~13 min), beside that check's cells (~2 h on 2 cores)
# -> results/offline/long/diagnosis.md and the critic probe results/offline/long/probe-diagnosis.md
offline-diagnosis-long: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-long-sacn.toml --store $(STORE) --resume
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-long-edac.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check-long --sweep offline-diagnosis-long-sacn \
	  --sweep offline-diagnosis-long-edac --store $(STORE) --out results/offline/long/diagnosis.md \
	  --title "Diagnosis of the 5x-updates check's last misses: SAC-N with LayerNorm critics on hopper-medium-replay, EDAC on 2M transitions of walker2d-medium-expert" \
	  --budget "100k updates per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 10000 updates: the cells of tasks/sweeps/offline-check-long.toml beside SAC-N (N=20) with LayerNorm critics on hopper-medium-replay-100k (offline-diagnosis-long-sacn.toml) and EDAC (N=10, eta=5) on walker2d-medium-expert with 2M transitions (offline-diagnosis-long-edac.toml)"
	$(BIN)/offbench probe --sweep offline-check-long --sweep offline-diagnosis-long-sacn \
	  --sweep offline-diagnosis-long-edac --store $(STORE) --out results/offline/long/probe-diagnosis.md \
	  --title "Critic probe: the 5x-updates check's cells beside SAC-N with LayerNorm critics (hopper-medium-replay) and EDAC on 2M transitions (walker2d-medium-expert)"

# Why algorithms miss the check on walker2d-medium-expert -> results/offline/diagnosis.md: one
# suspected cause per variant at the check's budget (tasks/sweeps/offline-diagnosis.toml),
# reported beside the check's own cells of that dataset.
offline-diagnosis: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-diagnosis \
	  --datasets walker2d-medium-expert-100k --store $(STORE) --out results/offline/diagnosis.md \
	  --title "Offline check diagnosis: walker2d-medium-expert" \
	  --budget "as the offline check (tasks/sweeps/offline-check.toml): 20k updates per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 5000 updates; variants: tasks/sweeps/offline-diagnosis.toml"

# SAC-N's miss there (tasks/sweeps/offline-diagnosis-ensemble.toml): ensemble size ->
# results/offline/diagnosis-ensemble.md and the critic probe of each cell,
# results/offline/probe-ensemble.md
# CQL on walker2d-medium-expert with 5x the check's updates, one seed (~40 min on 2 cores)
offline-diagnosis-cql: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-cql.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-diagnosis-cql \
	  --datasets walker2d-medium-expert-100k --store $(STORE) \
	  --out results/offline/diagnosis-cql.md --title "CQL diagnosis: 100k updates, walker2d-medium-expert" \
	  --budget "the check's cells (tasks/sweeps/offline-check.toml: 2x64 networks, 5 evaluation episodes, 20k updates, 3 seeds) beside CQL with 100k updates, 1 seed (tasks/sweeps/offline-diagnosis-cql.toml)"

# SAC-N and EDAC on halfcheetah-medium with the published 3x256 networks and with 2x64 ones, one
# seed each (~55 min on 2 cores), and with 3x256 on walker2d-medium-expert (~75 min); the critic
# probe of the walker2d-medium-expert cells, 2x64 at 100k updates and 3x256 at 40k ->
# results/offline/probe-width-walker2d.md
offline-diagnosis-width: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-width.toml --store $(STORE) --resume
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-width-control.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-diagnosis-width \
	  --sweep offline-diagnosis-width-control \
	  --datasets halfcheetah-medium-100k --store $(STORE) \
	  --out results/offline/diagnosis-width.md --title "SAC-N and EDAC diagnosis: network width, halfcheetah-medium" \
	  --budget "the check's cells (tasks/sweeps/offline-check.toml: 2x64 networks, 5 evaluation episodes, 20k updates, 3 seeds) beside SAC-N and EDAC with 3x256 and with 2x64 networks, 40k updates, 1 seed (tasks/sweeps/offline-diagnosis-width.toml, offline-diagnosis-width-control.toml)"
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-check-long \
	  --sweep offline-diagnosis-width --datasets walker2d-medium-expert-100k --store $(STORE) \
	  --out results/offline/diagnosis-width-walker2d.md --title "SAC-N and EDAC diagnosis: network width, walker2d-medium-expert" \
	  --budget "the check's cells (tasks/sweeps/offline-check.toml: 2x64 networks, 5 evaluation episodes, 20k updates, 3 seeds) and its follow-up's (offline-check-long.toml: 100k updates) beside SAC-N (N=20) and EDAC (eta=5) with 3x256 networks, 40k updates, 1 seed (tasks/sweeps/offline-diagnosis-width.toml)"
	$(BIN)/offbench probe --sweep offline-check-long --sweep offline-diagnosis-width \
	  --datasets walker2d-medium-expert-100k --store $(STORE) --out results/offline/probe-width-walker2d.md \
	  --title "Critic probe: walker2d-medium-expert, 2x64 networks at 100k updates (offline-check-long) and SAC-N, EDAC with 3x256 at 40k"

# CQL on walker2d-medium-expert with the published 3x256 networks, one seed (~50 min on 2 cores),
# beside the check's 2x64 cells; critic probe of the 2x64 and 3x256 cells ->
# results/offline/probe-cql-width.md
offline-diagnosis-cql-width: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-cql-width.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-diagnosis-cql \
	  --sweep offline-diagnosis-cql-width --datasets walker2d-medium-expert-100k --store $(STORE) \
	  --out results/offline/diagnosis-cql-width.md --title "CQL diagnosis: network width, walker2d-medium-expert" \
	  --budget "the check's cells (tasks/sweeps/offline-check.toml: 2x64 networks, 5 evaluation episodes, 20k updates, 3 seeds) and CQL with 2x64 networks and 100k updates, 1 seed (tasks/sweeps/offline-diagnosis-cql.toml), beside CQL with 3x256 networks, 40k updates, 1 seed (tasks/sweeps/offline-diagnosis-cql-width.toml)"
	$(BIN)/offbench probe --sweep offline-diagnosis-cql --sweep offline-diagnosis-cql-width \
	  --store $(STORE) --out results/offline/probe-cql-width.md \
	  --title "Critic probe: CQL with 3x256 and 2x64 networks, walker2d-medium-expert"

offline-diagnosis-ensemble: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-ensemble.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-diagnosis-ensemble --store $(STORE) \
	  --out results/offline/diagnosis-ensemble.md --title "SAC-N diagnosis: ensemble size, walker2d-medium-expert" \
	  --budget "as the offline check: 20k updates per seed, 3 vmapped seeds, 5 evaluation episodes every 5000 updates; variants: tasks/sweeps/offline-diagnosis-ensemble.toml"
	$(BIN)/offbench probe --sweep offline-diagnosis-ensemble --store $(STORE) \
	  --out results/offline/probe-ensemble.md --title "Critic probe: SAC-N by ensemble size, walker2d-medium-expert"

# Why SAC-N's critics blow up on walker2d-medium-expert (tasks/sweeps/offline-diagnosis-sacn-q.toml
# and its companion -sacn-q-ensemble.toml): LayerNorm critics, 20x the data (builds
# walker2d-medium-expert, 2M transitions, ~13 min), 100 critics, EDAC (~70 min on 2 cores) ->
# results/offline/diagnosis-sacn-q.md and the critic probe results/offline/probe-sacn-q.md; then
# LayerNorm critics at the check's settings on hopper-medium-replay (-sacn-q-hopper.toml, ~10 min)
# -> results/offline/diagnosis-sacn-q-hopper.md, probe-sacn-q-hopper.md
offline-diagnosis-sacn-q: setup
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-sacn-q.toml --store $(STORE) --resume
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-sacn-q-ensemble.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-diagnosis-sacn-q \
	  --sweep offline-diagnosis-sacn-q-ensemble --store $(STORE) \
	  --out results/offline/diagnosis-sacn-q.md --title "SAC-N diagnosis: the critic blow-up on walker2d-medium-expert" \
	  --budget "2x64 networks, observations normalized, 20k updates per seed, 5 evaluation episodes every 5000 updates; 3 vmapped seeds (tasks/sweeps/offline-diagnosis-sacn-q.toml: N=20 with and without critic LayerNorm, on the 100k-transition and the 2M-transition walker2d-medium-expert), 1 seed (offline-diagnosis-sacn-q-ensemble.toml: N=100, and EDAC N=10 eta=5)"
	$(BIN)/offbench probe --sweep offline-diagnosis-sacn-q --sweep offline-diagnosis-sacn-q-ensemble \
	  --store $(STORE) --out results/offline/probe-sacn-q.md \
	  --title "Critic probe: SAC-N's critic blow-up on walker2d-medium-expert"
	$(BIN)/offbench sweep tasks/sweeps/offline-diagnosis-sacn-q-hopper.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep offline-check --sweep offline-diagnosis-sacn-q-hopper \
	  --datasets hopper-medium-replay-100k --store $(STORE) \
	  --out results/offline/diagnosis-sacn-q-hopper.md --title "SAC-N diagnosis: LayerNorm critics on hopper-medium-replay" \
	  --budget "the offline check's cells (tasks/sweeps/offline-check.toml: 2x64 networks, 20k updates, 3 seeds, 5 evaluation episodes) beside SAC-N with LayerNorm critics, otherwise the check's SAC-N (tasks/sweeps/offline-diagnosis-sacn-q-hopper.toml)"
	$(BIN)/offbench probe --sweep offline-check --sweep offline-diagnosis-sacn-q-hopper \
	  --datasets hopper-medium-replay-100k --store $(STORE) \
	  --out results/offline/probe-sacn-q-hopper.md \
	  --title "Critic probe: the offline check on hopper-medium-replay and SAC-N with LayerNorm critics"

# O2O learning check -> results/o2o/check.md: Cal-QL and IQL pre-trained offline, then
# fine-tuned online, on two datasets, 3 vmapped seeds, at the CPU budget of
# tasks/sweeps/o2o-check.toml (~25 min on 2 shared cores). Rerunning resumes.
o2o-check: setup
	$(BIN)/offbench sweep tasks/sweeps/o2o-check.toml --store $(STORE) --resume
	$(BIN)/offbench report-o2o --sweep o2o-check --store $(STORE) --out results/o2o/check.md \
	  --budget "4000 offline updates then 8000 online env steps (UTD 1) per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 1000 updates / env steps, 100k-transition datasets (tasks/sweeps/o2o-check.toml; papers: 1M + 1M, 2x256/3x256)"

# Cal-QL's collapsing pre-training, diagnosed (tasks/sweeps/o2o-diagnosis-calql.toml): Cal-QL
# and CQL offline side by side -> results/o2o/diagnosis.md, critic probe results/o2o/probe.md
o2o-diagnosis: setup
	$(BIN)/offbench sweep tasks/sweeps/o2o-diagnosis-calql.toml --store $(STORE) --resume
	$(BIN)/offbench report-offline --sweep o2o-diagnosis-calql --store $(STORE) \
	  --out results/o2o/diagnosis.md --title "Cal-QL diagnosis: its offline pre-training beside CQL's, hopper-medium-replay" \
	  --budget "8000 offline updates per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 1000 updates, hopper-medium-replay-100k (tasks/sweeps/o2o-diagnosis-calql.toml)"
	$(BIN)/offbench probe --sweep o2o-diagnosis-calql --store $(STORE) \
	  --out results/o2o/probe.md --title "Critic probe: Cal-QL and CQL after 8000 offline updates, hopper-medium-replay"

# Its follow-up on hopper-medium-replay (tasks/sweeps/o2o-check-long.toml): 5x the pre-training,
# twice the online phase -> results/o2o/long/check.md
o2o-check-long: setup
	$(BIN)/offbench sweep tasks/sweeps/o2o-check-long.toml --store $(STORE) --resume
	$(BIN)/offbench report-o2o --sweep o2o-check-long --store $(STORE) \
	  --out results/o2o/long/check.md \
	  --budget "20000 offline updates then 16000 online env steps (UTD 1) per seed, 3 vmapped seeds, 2x64 networks, 5 evaluation episodes every 2000 updates / env steps, hopper-medium-replay-100k (tasks/sweeps/o2o-check-long.toml; papers: 1M + 1M, 2x256/3x256)"

# Hybrid learning check -> results/hybrid/check.md: RLPD with vs without the offline data
# (tasks/sweeps/hybrid-check.toml) and H2O vs SAC on a mismatched simulator evaluated on the
# real task (tasks/sweeps/hybrid-check-sim.toml), 3 vmapped seeds each (~35 min on 2 shared
# cores). The threshold is each task's medium policy level. Rerunning resumes.
hybrid-check: setup
	$(BIN)/offbench sweep tasks/sweeps/hybrid-check.toml --store $(STORE) --resume
	$(BIN)/offbench sweep tasks/sweeps/hybrid-check-sim.toml --store $(STORE) --resume
	$(BIN)/offbench report-hybrid --sweep hybrid-check --sweep hybrid-check-sim --store $(STORE) \
	  --out results/hybrid/check.md \
	  --budget "12000 online env steps per seed after 1000 random-action steps, 3 vmapped seeds, 2x64 networks (H2O's discriminators too), RLPD at UTD 2 (paper: 20), H2O and SAC at UTD 1, 5 evaluation episodes every 1000 env steps, 100k-transition datasets (tasks/sweeps/hybrid-check*.toml; papers: 1M env steps, 2x256/3x256)"

# Its follow-up with twice the env steps where the check's thresholds were not reached in the
# median (tasks/sweeps/hybrid-check-long.toml) -> results/hybrid/long/check.md (~50 min)
hybrid-check-long: setup
	$(BIN)/offbench sweep tasks/sweeps/hybrid-check-long.toml --store $(STORE) --resume
	$(BIN)/offbench report-hybrid --sweep hybrid-check-long --store $(STORE) \
	  --out results/hybrid/long/check.md \
	  --budget "follow-up of results/hybrid/check.md: 24000 online env steps per seed (twice the check's) after 1000 random-action steps, otherwise identical (3 vmapped seeds, 2x64 networks, RLPD at UTD 2, 5 evaluation episodes every 1000 env steps; tasks/sweeps/hybrid-check-long.toml)"

# Behaviour policies for the datasets: SAC (published defaults; networks per task: 2x128 where
# that reached the published SAC return at 1M steps -- a 128-wide hidden layer costs a quarter
# of a 256-wide one, and these policies only generate data -- 2x256 where 2x128 fell short),
# 1 seed, 1M env steps per task (hopper: see POLICY_STEPS_hopper), with the actor saved after every evaluation; then the
# expert/medium/replay snapshots are chosen, evaluated and committed under tasks/policies/ (each
# task's policies.json records the exact command it came from; tests check these widths against
# it). Hours of CPU; rerunning resumes from the cache's checkpoints.
POLICY_TASKS ?= halfcheetah hopper walker2d ant
POLICY_STEPS ?= 1000000
# hopper's committed policies come from the first 400k steps of a 1M run: its evaluation had
# plateaued above published SAC's 1M-step return (tasks/policies/hopper/policies.json,
# training_run.stopped_early), so `make policies` trains it that long to reproduce them.
POLICY_STEPS_hopper ?= 400000
POLICY_HIDDEN_halfcheetah ?= 256,256
POLICY_HIDDEN_hopper ?= 256,256
POLICY_HIDDEN_walker2d ?= 128,128
POLICY_HIDDEN_ant ?= 256,256
POLICY_RUNS := $(OFFBENCH_CACHE)/runs/policies
policies: setup
	$(foreach t,$(POLICY_TASKS),$(BIN)/offbench train-online sac $(t) \
	  --env-steps $(or $(POLICY_STEPS_$(t)),$(POLICY_STEPS)) \
	  --eval-every 10000 --checkpoint-every 50000 --snapshots --set hidden=$(POLICY_HIDDEN_$(t)) \
	  --out $(POLICY_RUNS)/$(t) --resume && ) true
	$(BIN)/offbench policies select $(POLICY_TASKS) --runs $(POLICY_RUNS)

# Every dataset kind of every task with committed policies, then results/datasets.md. The data
# goes to $(OFFBENCH_DATASETS) (default ~/.offbench/datasets), never into the repository.
DATASET_SIZE ?= 1m
datasets: setup
	$(BIN)/offbench datasets build --all --size $(DATASET_SIZE)
	$(BIN)/offbench datasets report --size $(DATASET_SIZE) --out results/datasets.md

# Re-resolve the pins in a throwaway venv and rewrite constraints.txt.
lock:
	rm -rf /tmp/offbench-lock && $(PYTHON) -m venv /tmp/offbench-lock
	/tmp/offbench-lock/bin/pip install --quiet --upgrade pip==25.3
	/tmp/offbench-lock/bin/pip install --quiet '.[dev,ray,wandb]'
	/tmp/offbench-lock/bin/pip check
	(echo "# Full resolved dependency set (pip freeze of a fresh venv), used as pip constraints."; \
	 echo "# Regenerate with: make lock"; \
	 /tmp/offbench-lock/bin/pip freeze | grep -v '^offbench') > constraints.txt

clean:
	rm -rf $(VENV) *.egg-info
