# The two commands of the README: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: demo test test-rust test-python build build-release bench loom lint lint-rust lint-python clean

# The linters gate CI, so their ranges are pinned (a new release adds checks: bump them on purpose). The same
# ranges are in pyproject.toml's dev extra, so changing them there too rebuilds the venv (the stamp's dependency).
LINTERS := "ruff>=0.17.5,<0.18" "mypy>=2.4,<2.5"
# The optional integrations (pyproject's `pool` extra, and dask for `dask.compute(..., scheduler=executor)`), so
# that the test suite covers them instead of skipping.
EXTRAS := cloudpickle tqdm "dask>=2024.1"

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.5,<2" "pytest>=7" "pytest-timeout>=2" "numpy>=1.22" $(LINTERS) $(EXTRAS)
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

# The Python suite runs in a segment namespace of its own (one per run), so the final check sees only its
# segments, not those of other pyconc programs on the machine.
TEST_NAMESPACE := t$(shell od -An -N3 -tx1 /dev/urandom | tr -d ' \n')

test-python: build
	$(PY) -m mypy.stubtest pyconc._native --allowlist .ci/stubtest-allowlist.txt
	PYCONC_NAMESPACE=$(TEST_NAMESPACE) $(PY) -m pytest tests/python -q
	PYCONC_NAMESPACE=$(TEST_NAMESPACE) $(PY) -m pyconc gc --check-empty

test: test-rust test-python

# Model checking with loom: every `loom_tests` module (the models run in a few seconds; a debug build keeps the
# compile short). LOOM_ARGS go to the test harness, e.g. `make loom LOOM_ARGS=--nocapture`.
LOOM_ARGS ?=
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib loom_tests -- $(LOOM_ARGS)

# Formatting and clippy for the three builds (the core, the PyO3 layer with feature python, the loom models),
# then ruff and mypy over the Python package (mypy's settings: [tool.mypy] in pyproject.toml).
lint: lint-rust lint-python

lint-rust: $(VENV)/.stamp  # the PyO3 build finds its interpreter through VIRTUAL_ENV
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo clippy --lib --tests -- -D warnings

lint-python: $(VENV)/.stamp
	$(PY) -m ruff check python tests/python tests/typing
	$(PY) -m mypy

clean:
	rm -rf $(VENV) target
