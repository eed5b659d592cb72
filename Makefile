# Two commands on a fresh machine: `make dev` runs lcp on its embedded defaults, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test install lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

dev: $(STAMP)
	bash tests/system-deps.sh prometheus
	$(BIN)/lcp dev $(ARGS)

test: $(STAMP)
	bash tests/system-deps.sh
	LCP_REQUIRE_POSTGRES=1 LCP_REQUIRE_CHROMIUM=1 LCP_REQUIRE_PROMETHEUS=1 LCP_REQUIRE_KUBECTL=1 LCP_REQUIRE_HAPROXY=1 $(BIN)/pytest -q -n 3 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy activities api bench chaos cli inference lab policies settings store temporal tests workers workflows

bench: $(STAMP)
	$(BIN)/lcp bench chat --json bench-chat.json

clean:
	rm -rf $(VENV) .lcp
