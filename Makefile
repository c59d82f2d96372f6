# The two commands that matter: `make up` runs the system, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint fmt schemas clean mutation

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/oms up $(ARGS)

# The tests run on TEST_JOBS workers, a whole module at a time, the longest first (tests/conftest.py).
TEST_JOBS ?= 2

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Mutation testing (docs/quality.md), not part of `make test`: mutmut mutates the modules below, one at a time,
# and runs the fast tests that reach each mutant, MUTATION_JOBS runs at once (the machine is shared: keep it
# low). The score per module is printed and kept in mutants/report.md.
MUTATION_JOBS ?= 1
MUTATION_MODULES ?= oms.order.domain oms.account.domain oms.account.requests oms.auth.domain \
	oms.market.domain oms.order.resting oms.kernel.market oms.kernel.inbox oms.kernel.outbox \
	oms.kernel.confirmation oms.kernel.group_commit oms.kernel.deps oms.kernel.money

mutation: $(STAMP)
	rm -rf mutants && mkdir mutants
	@for module in $(MUTATION_MODULES); do \
		echo "mutation: $$module (log in mutants/$$module.log)"; start=$$(date +%s); \
		$(BIN)/mutmut run --max-children $(MUTATION_JOBS) "$$module.*" > mutants/$$module.log 2>&1 \
			|| { tail -n 30 mutants/$$module.log; exit 1; }; \
		echo $$(( $$(date +%s) - start )) > mutants/$$module.seconds; \
	done
	$(BIN)/python tests/mutation_report.py | tee mutants/report.md

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants
