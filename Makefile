# novofon-bridge — the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Debian packages the bridge and its tests use (installed when missing, on Debian/Ubuntu as root):
# lame turns WAV recordings into MP3 for Telegram; debootstrap builds the Asterisk lab; systemd
# brings systemd-analyze, which scores the shipped unit's hardening in the tests.
SYSDEPS := lame debootstrap systemd

.PHONY: sysdeps install lab lab-down lint test unit demo bench transcripts run clean install-service

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)          ## Python virtualenv with the bridge and its dev tools

sysdeps:                   ## Debian packages (lame, debootstrap), when missing and apt-get is there
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "please install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

lab: install               ## provision (first time: debootstrap Asterisk 22) and start the 3-instance lab
	$(PY) -m tests.lab.lab up

lab-down: install
	$(PY) -m tests.lab.lab down

lint: install              ## ruff + mypy
	$(PY) -m ruff check bridge tests bench
	$(PY) -m ruff format --check bridge tests bench
	$(PY) -m mypy

test: sysdeps lint         ## linters, unit tests and the real-Asterisk integration tests
	$(PY) -m pytest -q -ra

unit: install
	$(PY) -m pytest -q tests/unit

demo: sysdeps install      ## lab + daemon + an inbound and an outbound call, records shown live
	$(PY) -m tests.lab.demo

bench: install             ## AMI parsing + tracker, the outbox, Bitrix24 card latency, FastAGI answers: vs baselines
	$(PY) bench/ami_bench.py
	$(PY) bench/outbox_bench.py
	$(PY) bench/bitrix_bench.py
	$(PY) bench/agi_bench.py

transcripts: install       ## re-record tests/transcripts/*.ami from the lab
	$(PY) -m tests.lab.record_transcripts
	$(PY) -m tests.lab.record_transcripts --profile freepbx

run: install               ## the daemon with ./config.yaml (for development)
	$(VENV)/bin/novofon-bridge run -c config.yaml

install-service:           ## install as a systemd service (see README)
	deploy/install.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
