# The README's two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: install demo test test-fast test-portable app bench lint wheel-check readme system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages some tests and tools use: chromium (browser test of the demo app) and espeak-ng
# (the TouchTTS data pipeline tests synthesise their speech with it).
# Installed when missing and apt-get can run as root; otherwise the browser test says why it skips.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not installed (apt-get install chromium); the browser test will skip"; fi; \
	fi
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	  else echo "note: espeak-ng not installed (apt-get install espeak-ng); the TouchTTS data tests need it"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/tokenzoo demo --out $(OUT)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The parity subset under ATEN_CPU_CAPABILITY = default, avx2, avx512 x OMP_NUM_THREADS = 1, 2: other CPUs
# pick other kernels and reduction orders. Cells this CPU cannot run are reported as not run.
PORTABLE_CAPS    ?= default avx2 avx512
PORTABLE_THREADS ?= 1 2
test-portable: $(STAMP)
	PYTHON=$(BIN)/python .ci/parity-matrix "$(PORTABLE_CAPS)" "$(PORTABLE_THREADS)"

app: $(STAMP)
	$(BIN)/tokenzoo app

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# ruff, then the import layers (tools -> families -> core; contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

# Build the wheel, install it (not editable) into a fresh venv and use it from outside the repository.
wheel-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_packaging.py

readme: $(STAMP)
	$(BIN)/python -m zoo.cards --update-readme README.md

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
