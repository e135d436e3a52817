# Shortcuts; the scripts are the real thing (see README.md).
#   make test ARGS="-x -k deposits"     extra pytest arguments
#   make run ARGS=--fresh               wipe demo-data first
#   make format / make check            Python (ruff, mypy) and the front end
#                                       (prettier, via scripts/check-frontend,
#                                       which runs npm ci when node_modules is missing)
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: venv run test format check bench

venv:
	scripts/test --venv-only

run:
	scripts/run $(ARGS)

test:
	scripts/test $(ARGS)

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	scripts/check-frontend --write

check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	scripts/check-frontend

bench: venv
	@found=0; \
	for f in bench/*.py; do \
		[ -e "$$f" ] || continue; \
		found=1; \
		echo "==> $$f"; \
		$(PY) "$$f" || exit 1; \
	done; \
	[ $$found = 1 ] || echo "no bench/*.py yet"
