# Two commands do all set-up on a fresh Debian / Raspberry Pi OS machine:
#   make demo   - test calls against local stand-ins (SIPp hotlines, mosquitto), results over MQTT
#   make test   - lint and the whole test suite
# Both install what is missing (Debian packages, the .venv) and are quick when it is all there.

PYTHON ?= python3
VENV := .venv
DEMO_VENV := .venv-demo
PY := $(VENV)/bin/python
# systemd: systemd-analyze (and libseccomp) for the unit's tests (tests/test_systemd_unit.py).
APT_PACKAGES := python3-venv mosquitto mosquitto-clients sip-tester espeak-ng sox \
                device-tree-compiler debootstrap zstd alsa-utils systemd \
                postgresql prometheus-alertmanager chromium chromium-driver
# Node.js and npm run the official AsyncAPI parser in the tests (tests/asyncapi).  Installed
# only when npm is missing: a NodeSource nodejs ships its own npm and conflicts with Debian's.
NODE_PACKAGES := nodejs npm
# The soak run alone: libfaketime steps the daemon's wall clock, and the C compiler builds the
# preload that makes Debian 12's libfaketime fit for Python 3.11 (tests/soak_sleep_fix.c).
SOAK_PACKAGES := faketime gcc libc6-dev

.PHONY: demo test test-fast bench soak lint setup clean ansible-test

# The demo runs in a venv of its own with only what a probe and the ops service need (no
# linters, ansible or test tools): quicker to build, and proof that the product needs none.
demo: $(DEMO_VENV)/.installed
	@scripts/ensure-apt-packages $(APT_PACKAGES)
	$(DEMO_VENV)/bin/python -m probe demo

test: setup
	$(VENV)/bin/ruff check probe tests
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

# The fast lane while you work (about 20 s): ruff and the tests of pure logic and of the
# files that need no process started (config, timelines and outcomes, the result schema, AT
# parsing, diagnosis, the board on mock pins, ops correlation).  `make test` stays the proof.
FAST_TESTS := tests/test_config.py tests/test_measure.py tests/test_result_schema.py \
              tests/test_heard_outcome.py tests/test_at_lines.py tests/test_at_port.py \
              tests/test_diagnose.py tests/test_intercepts.py tests/test_line.py \
              tests/test_indicator.py tests/test_board_files.py tests/test_layering.py \
              tests/test_readme.py tests/test_examples.py tests/test_locks.py tests/test_logs.py \
              tests/ops/test_correlate.py tests/ops/test_config.py
test-fast: setup
	$(VENV)/bin/ruff check probe tests
	$(PY) -m pytest -q -m "not slow" $(FAST_TESTS)

bench: setup
	$(PY) -m tests.benchmarks

# An hour of fast calls over SIP and a GSM modem (the emulator on a pty) with broker kill -9,
# SIGHUPs (some pathological), a disk that fills and empties, modem unplugs and steps of the
# daemon's wall clock; prints the figures, exits 1 on a lost result, a dead worker, growing
# RSS, a dishonest timestamp or a stalled line (tests/soak.py).  Not in CI; needs root (a tmpfs).
soak: setup
	@scripts/ensure-apt-packages $(SOAK_PACKAGES)
	$(PY) tests/soak.py --minutes $(or $(MINUTES),60)

# The fleet deployment alone (part of `make test` too): lint, syntax, roles applied to a
# debootstrap root twice.  Needs root.
ansible-test: setup
	$(VENV)/bin/ruff check tests/test_ansible.py tests/ansible_support
	$(PY) -m pytest -q tests/test_ansible.py

lint: setup
	$(VENV)/bin/ruff check probe tests

setup: $(VENV)/.installed
	@scripts/ensure-apt-packages $(APT_PACKAGES)
	@command -v npm >/dev/null || scripts/ensure-apt-packages $(NODE_PACKAGES)

# Pinned versions (requirements/*.txt, written by scripts/lock from pyproject.toml): the
# tests and the demo run what the fleet runs.
$(VENV)/.installed: pyproject.toml requirements/dev.txt
	@scripts/ensure-apt-packages $(APT_PACKAGES)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --constraint requirements/dev.txt -e '.[dev,ops]'
	touch $@

$(DEMO_VENV)/.installed: pyproject.toml requirements/ops.txt
	@scripts/ensure-apt-packages $(APT_PACKAGES)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install -q --constraint requirements/ops.txt -e '.[ops]'
	touch $@

clean:
	rm -rf $(VENV) $(DEMO_VENV) .pytest_cache .ruff_cache *.egg-info
