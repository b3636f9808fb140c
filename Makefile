# The two commands of the README:
#   make run    set up (idempotent), then run the main job on the embedded demo
#   make test   set up (idempotent), then run the test suite
#   make lint   ruff (ruff.toml) and mypy (mypy.ini); the suite runs both too (test/test_lint.py)
# EP_VENV=DIR uses another venv (CI: one per ROS distro); ROS_DISTRO=jazzy|kilted picks the
# ROS 2 wheel set when no distro is sourced (scripts/setup.sh).
VENV := $(or $(EP_VENV),.venv)
PY := $(VENV)/bin/python

.PHONY: setup run test lint clean

setup:
	@EP_VENV=$(VENV) bash scripts/setup.sh

run: setup
	@$(VENV)/bin/emotion-perception demo

test: setup
	@$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy --config-file mypy.ini

clean:
	rm -rf build install log $(VENV)
