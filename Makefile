# The quick start: `make demo` trains a DCGAN on built-in cartoon faces and writes samples;
# `make test` runs the test suite. Both set up .venv first, from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without a GPU, PyTorch's CPU build: an unpinned install brings gigabytes of CUDA libraries.
# Override to pick another release, e.g. make test CPU_TORCH="torch==2.14.1".
CPU_TORCH ?= torch==2.13.0
DEMO_RUN := runs/dcgan/demo

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "no GPU found: installing PyTorch's CPU build ($(CPU_TORCH))"; \
		$(BIN)/python -m pip install --quiet "$(CPU_TORCH)"; \
	fi
	$(BIN)/python -m pip install --quiet -e ".[dev,inception]"
	touch $@

# 32×32 faces keep the demo to a few minutes on a laptop CPU; drop -o image_size=32 for the
# paper's 64×64.
demo: setup
	rm -rf $(DEMO_RUN)
	$(BIN)/gentool train dcgan --limit 4000 --epochs 10 --batch-size 64 -o image_size=32 \
		--run-dir $(DEMO_RUN)
	$(BIN)/gentool sample dcgan --run $(DEMO_RUN) --n 64 --out samples.png

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs samples.png .pytest_cache .ruff_cache
