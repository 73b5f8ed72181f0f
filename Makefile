# The commands the README gives. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := constraints.txt
QUESTION ?= What is the capital of France?
MIX ?= routemoa
PORT ?= 2024

.PHONY: setup demo test unit studio bench bench-cascade lint schema lock clean

setup: $(STAMP)

# Every version from the lock ($(LOCK)), so a fresh clone resolves exactly what CI passed with.
# torch first, pinned: a CPU build that pip takes from this machine's disk (an unpinned torch pulls CUDA).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) torch==2.13.0
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[local,dev]"
	# The gate's static encoder: its token table is distilled from the wheel's MiniLM once (about 30 s).
	$(VENV)/bin/moai scorer build-encoder --quiet
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/moai run $(MIX) "$(QUESTION)"

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest ran no test" >&2; exit 1; fi; exit $$status

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

studio: $(STAMP)
	env -u LANGSMITH_API_KEY -u LANGCHAIN_API_KEY LANGGRAPH_CLI_NO_ANALYTICS=1 LANGGRAPH_NO_VERSION_CHECK=true \
	$(VENV)/bin/langgraph dev --host 127.0.0.1 --port $(PORT) --no-browser

bench: $(STAMP)
	$(PY) bench/overhead.py

# Cascades replayed on the shared responses files (/work/shared/data/responses, or $$MOAI_RESPONSES_DIR).
bench-cascade: $(STAMP)
	$(PY) bench/cascade.py

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	# mypy cannot follow the package-dir mapping of a development install: it checks an installed copy
	# (build/typecheck/moai/graphs/... is graphs/...).
	rm -rf build/typecheck
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --target build/typecheck .
	cd build/typecheck && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p moai

schema: $(STAMP)
	$(VENV)/bin/moai schema --out mix_instructions/mix.schema.json

# Refresh the lock: resolve the project's ranges afresh in a scratch venv and freeze it. Then `make test`.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet ".[local,dev]"
	{ sed -n '1,2p' $(LOCK); .lock-venv/bin/python -m pip freeze --all --exclude mixture-of-ai; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
