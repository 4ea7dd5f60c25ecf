# Two commands: `make demo` and `make test` (`make test-fast`: the tests that start no Ray or DeepSpeed). Both create .venv when missing and install
# the project once; re-running them on a set-up tree installs nothing.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.vlv-ray-installed
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: setup demo test test-fast bench clean-demo

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: an open range would pull a multi-GB CUDA build on a CPU box.
# A torch already importable in the venv (say a CUDA build on a GPU box) is kept.
$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null \
		&& echo "keeping torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')" \
		|| $(BIN)/pip install "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -e ".[test]"
	@touch $(STAMP)

demo: setup
	$(BIN)/vlv-ray demo

test: setup
	$(BIN)/python -m pytest tests

test-fast: setup
	$(BIN)/python -m pytest tests -m "not integration"

bench: setup
	@for b in benchmarks/bench_*.py; do $(BIN)/python $$b; done

clean-demo:
	rm -rf vlv-demo
