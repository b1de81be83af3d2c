# The two commands of the README. Both create the virtual environment when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

demo: $(STAMP)
	$(BIN)/transferlab run

test: $(STAMP)
	$(BIN)/python -m pytest

# style, complexity (mccabe ≤ 20) and docs/design.md's layering (import-linter contracts in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

# Reinstall when the dependencies or a C extension's source change (pip compiles the optional tar and caption
# kernels and the 8-bit optimizers' fused CPU step when a C compiler is at hand). torch comes from the machine's
# local wheel where one exists.
$(STAMP): pyproject.toml setup.py src/transferlab/curate/_native.c src/transferlab/data/tar/_tar.c \
		src/transferlab/optim/_native.c src/transferlab/kernels_common.h
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
