# make demo — the whole pipeline on the embedded offline corpus, ends with the report's path.
# make test — ruff, then the test suite (what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hfllm-installed
# CPU build from the local wheel where no GPU is present; keep the CUDA build otherwise.
TORCH_SPEC ?= $(shell if nvidia-smi >/dev/null 2>&1; then echo torch; else echo torch==2.13.0; fi)

.PHONY: demo test tiny scaling setup clean-runs

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]' -c constraints.txt
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hfllm run recipes/configs/demo/pipeline.yaml
	@echo "Report: $(CURDIR)/runs/demo/report.md"

tiny: $(STAMP)
	$(VENV)/bin/hfllm run recipes/configs/tiny/pipeline.yaml

# Opt-in, not part of demo or test: an IsoFLOP sweep on this machine's own text, both Chinchilla fits,
# and a larger run predicted then trained (45–60 min on 2 CPU cores; benchmarks/RESULTS.md).
scaling: $(STAMP)
	$(VENV)/bin/hfllm run recipes/configs/scaling/pipeline.yaml
	$(VENV)/bin/hfllm scaling show runs/scaling/scaling

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean-runs:
	rm -rf runs
