# Two commands: `make run` (the whole portal with a demo, one log stream) and `make test`.
# Everything else is a step they depend on.

# The first interpreter >= 3.12 on the PATH (Django 6.1 needs it); `python3` first, so pyenv
# honours .python-version.
PYTHON ?= $(shell for p in python3 python3.12 python3.13 python3.14; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help run test install migrate seed lint format check-python clean messages compilemessages

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 10

# The demo checks grants every 2 minutes (tokens live 2 minutes too) so the workers' work shows.
run: install compilemessages migrate seed ## the whole portal with a demo (sandbox, web, MCP server, worker, beat), one log stream
	@echo "Starting sandbox, web, MCP server, worker and beat (Ctrl-C stops them all)..."
	GRANT_CHECK_INTERVAL=$${GRANT_CHECK_INTERVAL:-120} MCP_URL=$${MCP_URL:-http://127.0.0.1:8001/mcp} \
		$(BIN)/honcho -f Procfile.dev start

test: install compilemessages ## the whole test suite (SQLite; PostgreSQL + Redis when DATABASE_URL / CELERY_BROKER_URL say so)
	$(BIN)/pytest

install: $(VENV)/.installed ## create the virtualenv and install the pinned requirements

check-python:
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is required (none found on PATH)." >&2; exit 1; }

$(VENV)/.installed: requirements.txt requirements-dev.txt | check-python
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

migrate: install ## apply database migrations
	$(BIN)/python manage.py migrate --noinput

# The French catalogue (locale/fr/LC_MESSAGES/django.po) is committed; the compiled .mo is not.
# Only the project's own code: the virtualenv's packages ship their own catalogues.
MESSAGE_IGNORES := --ignore=.venv --ignore=var --ignore=tests --ignore=bench --ignore=cloudflare_sandbox

messages: install ## extract the client-facing texts into locale/*/LC_MESSAGES/django.po
	$(BIN)/python manage.py makemessages --all --no-obsolete --no-location $(MESSAGE_IGNORES)

compilemessages: install ## compile the catalogues (.po -> .mo); needs gettext's msgfmt
	$(BIN)/python manage.py compilemessages --ignore=.venv --ignore=var

seed: install ## create (or reuse) the demo logins, clients and sandbox app
	$(BIN)/python manage.py seed_demo

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## remove the virtualenv and var/ (database, keys, demo password)
	rm -rf $(VENV) var
