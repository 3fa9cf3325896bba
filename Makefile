# One command per chore; each bootstraps .venv from requirements.lock through scripts/dev.py.
PY ?= python3

.PHONY: run test test-slow lint format lock bench migration ci
run:        ## serve the demo store on http://127.0.0.1:8000
	$(PY) scripts/dev.py serve
test:       ## main suite (SQLite; PostgreSQL + Redis too when MERCATO_TEST_* URLs are set)
	$(PY) scripts/dev.py test
test-slow:  ## crash, load and fuzz suites
	$(PY) scripts/dev.py test-slow
lint:       ## ruff + mypy
	$(PY) scripts/dev.py lint
format:
	.venv/bin/ruff format src tests bench scripts && .venv/bin/ruff check --fix src tests bench scripts
lock:       ## re-resolve requirements.lock
	$(PY) scripts/dev.py lock
bench:      ## benchmarks against a real server process (see bench/README.md)
	.venv/bin/python bench/run.py
migration:  ## autogenerate a migration: make migration m="add things"
	.venv/bin/python -c "from mercato.db.migrate import revision; revision('sqlite+aiosqlite:///var/migration-gen.db', '$(m)')"; rm -f var/migration-gen.db
ci:
	bash .ci/run
