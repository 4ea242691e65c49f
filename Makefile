# Every target bootstraps .venv from the committed lock (requirements.lock) when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/data/dagster_home

.PHONY: demo test test-fast ui bench lint lock clean erase retention screenshots scale-demo test-scale

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lms_pipeline.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The inner loop: lint and every test but the slow ones (Dagster runs, real processes); CI runs `make test`.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

ui: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Erase one student's personal data everywhere the pipeline keeps it: make erase STUDENT=stu-00042 [CONNECTION=x]
erase: $(STAMP)
	@test -n "$(STUDENT)" || (echo "usage: make erase STUDENT=<student id> [CONNECTION=<connection id>]" >&2; exit 2)
	$(BIN)/python -m lms_pipeline.privacy erase --student-id "$(STUDENT)" $(if $(CONNECTION),--connection "$(CONNECTION)")

# Drop raw pages older than retention.raw_pages_days now (the daemon's schedule does it daily at 04:15 UTC).
retention: $(STAMP)
	$(BIN)/python -m lms_pipeline.privacy retention

# Screenshots of the Dagster UI (Checks tab, a stale connection, a metadata plot) into screenshots/ (gitignored);
# needs Debian's chromium (apt-get install -y chromium).
screenshots: $(STAMP)
	$(BIN)/python scripts/ui_screenshots.py

# Every figure of docs/performance.md, as ratios measured in this run (about 15 minutes on 2 cores).
bench: $(STAMP)
	$(BIN)/python -m bench.normalize_diff
	$(BIN)/python -m bench.publish_history
	$(BIN)/python -m bench.fetch_latency
	$(BIN)/python -m bench.shell_run

# Scale-out (docs/scale-out.md): PostgreSQL, the Dagster daemon and Celery workers on this machine, 200 simulated
# connections x 3 days (day 1 with 1 worker, days 2-3 with 3), every connection-day checked; everything stopped after.
scale-demo: $(STAMP)
	$(BIN)/python -m lms_pipeline.scale.demo

# Every scale test, with the ones over a minute that `make test` skips (daemon + Celery workers, a worker killed).
test-scale: $(STAMP)
	LMS_SCALE_LONG_TESTS=1 $(BIN)/python -m pytest -q lms_pipeline_tests/test_scale_*.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-resolve the lock after changing pyproject.toml dependencies.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra scale --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) data/*.duckdb data/*.duckdb.* data/*_published data/dagster_home/storage data/dagster_home/history data/dagster_home/schedules data/dagster_home/.logs_queue data/dagster_home/.telemetry data/scale
