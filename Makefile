# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv if missing.
# torch is installed first, pinned to the CPU build, so nothing later can pull CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
PEERS := pytorch-optimizer==4.1.0 pyhessian==0.1
# curvlinops (bench/hessian.py's peer) and the packages its import needs, each pinned
PEERS += curvlinops-for-pytorch==3.0.1 einops==0.8.2 einconv==0.1.0 linear-operator==0.6.1 opt-einsum==3.4.0
# the trainers of descentlab.integrations (tests/test_integrations.py) and the packages their imports need, each pinned
PEERS += lightning==2.6.6 lightning-utilities==0.15.3 torchmetrics==1.9.0 PyYAML==6.0.4
PEERS += transformers==5.25.0 accelerate==1.15.0 huggingface-hub==2.4.0 tokenizers==0.23.3 safetensors==0.8.0 \
	regex==2026.12.2 psutil==7.2.2 httpx2==2.17.0 httpcore2==2.17.0 anyio==4.16.0 h11==0.16.0 idna==3.21 truststore==0.10.5

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(TORCH)
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	$(PIP) install -q --disable-pip-version-check --no-deps $(PEERS)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/descentlab diagnose

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) bench/optim_step.py
	$(PY) bench/hessian.py
	$(PY) bench/ensemble.py
	$(PY) bench/landscape.py
	$(PY) bench/diagnose.py
	$(PY) bench/tracking.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
