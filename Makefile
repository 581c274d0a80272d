# vfm_pose_ros: set-up, tests and lint. `make test` is what CI runs (.ci/run).
#
#   make setup   Debian packages (when missing and allowed), a venv at $(VENV), pip installs,
#                the package in editable mode, the vision_msgs/tf2_msgs interface builds.
#                Re-running is quick (a stamp file); it re-installs when requirements change.
#   make test    setup, then the whole test suite
#   make lint    ruff
#
# Variables: VENV (default .venv), PYTHON (the interpreter that creates the venv, default python3).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
REQUIREMENTS := requirements/ros.txt requirements/base.txt requirements/ml.txt requirements/dev.txt
STAMP := $(VENV)/.vfm_pose_ros-setup.stamp

# The test command written in the README (VFM_REQUIRE_ROS=1: a missing rclpy fails instead of skipping).
TEST_CMD := VFM_REQUIRE_ROS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -n auto --maxprocesses 4

.PHONY: help setup test lint demo bench

help:
	@echo "make setup | make test | make lint | make demo | make bench   (VENV=$(VENV))"

$(STAMP): requirements/constraints.txt $(REQUIREMENTS) setup.py setup.cfg package.xml scripts/setup_system.sh
	@start=$$SECONDS; \
	PYTHON="$(PYTHON)" bash scripts/setup_system.sh; \
	if [[ ! -x "$(PY)" ]]; then \
	  echo "setup: creating the virtual environment $(VENV) with $(PYTHON)"; \
	  "$(PYTHON)" -m venv "$(VENV)"; \
	fi; \
	echo "setup: pip install (requirements/*.txt, torch pinned by requirements/constraints.txt)"; \
	"$(PY)" -m pip install --disable-pip-version-check -c requirements/constraints.txt $(addprefix -r ,$(REQUIREMENTS)); \
	"$(PY)" -m pip install --disable-pip-version-check --no-build-isolation --no-deps -q -e .; \
	touch "$(STAMP)"; \
	echo "setup: Python environment ready in $$((SECONDS - start)) s"

setup: $(STAMP)
	@VENV="$(VENV)" bash scripts/build_interfaces.sh

test: setup
	@echo "$(TEST_CMD)"; \
	$(TEST_CMD) || { rc=$$?; \
	  if [[ $$rc == 5 ]]; then echo "make test: pytest collected no tests (exit 5): is test/ missing or all deselected?" >&2; fi; \
	  exit $$rc; }

lint: setup
	$(VENV)/bin/ruff check .

# The main job: the CLIP-vs-DINOv2(-hybrid) comparison through the ROS graph on the package's own benchmark.
demo: setup
	@VENV="$(VENV)" bash scripts/demo.sh

# make bench: the benchmark harness (issue 9) with the 10,000-frame whole-graph soak (issue 10), on an
# environment `make setup` already made (no set-up step here). Prints each section as it completes, then the
# tables and targets; writes bench/results.json. Extra options: make bench BENCH_ARGS="--quick" (or
# "--soak-frames 2000", "--backends dinov2", "--threads 1"; see `vfm-pose bench --help`).
.PHONY: bench
bench:
	HF_HUB_OFFLINE=1 $(PY) -m vfm_pose_ros.cli bench --soak-frames 10000 --out bench/results.json $(BENCH_ARGS)
