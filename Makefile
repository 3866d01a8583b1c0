# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test test-rust test-python build build-release bench loom lint clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "numpy>=1.22" "mypy>=1.10"
	touch $@

build: $(VENV)/.stamp
	$(PY) -m maturin develop --quiet

build-release: $(VENV)/.stamp
	$(PY) -m maturin develop --quiet --release

demo: build-release
	-$(PY) -m pip install --quiet "faster-fifo>=1.4" UltraDict loky pebble mpire cloudpickle tqdm  # optional comparisons and pool extras; the bench skips what is absent
	$(PY) -m pyconc bench

bench: build-release
	$(PY) -m pyconc bench

test-rust:
	cargo test --quiet

test-python: build
	$(PY) -m mypy.stubtest pyconc._native --allowlist .ci/stubtest-allowlist.txt
	$(PY) -m pytest tests/python -q
	$(PY) -m pyconc gc --check-empty

test: test-rust test-python

# Model checking with loom (the models run in about a second; a debug build keeps the compile short).
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib loom_tests

# Formatting and clippy for the three builds: the core, the PyO3 layer (feature python) and the loom models.
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo clippy --lib --tests -- -D warnings

clean:
	rm -rf $(VENV) target
