# The two commands of the README:
#   make run    set up (idempotent), then run the main job on the embedded demo
#   make test   set up (idempotent), then run the test suite
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test clean

setup:
	@bash scripts/setup.sh

run: setup
	@$(VENV)/bin/emotion-perception demo

test: setup
	@$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf build install log $(VENV)
