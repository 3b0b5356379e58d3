# The single entry point: everything works from a fresh clone with only make, git and a CPython 3.13
# (on PATH or under pyenv) on the machine.
#
#   make venv        .venv (Python 3.13) with requirements-dev.txt; re-installs only when they change
#   make tools       sam-cli in its own tool env under .tools/ (it pins boto3/pydantic/click)
#   make run         the local stack in the foreground (python -m local)
#   make test        pytest, offline; extra arguments: make test PYTEST_ARGS='-k suspend -x'
#   make browser-deps  Debian's chromium + chromedriver for the browser tests (make test needs them)
#   make lint        ruff check + ruff format --check        make fmt   fix and format
#   make typecheck   mypy (strict on usermgmt)
#   make validate    sam validate --lint
#   make build       sam build (arm64 layer, compiled functions), then make check-build
#   make bench       python -m bench; extra arguments: make bench BENCH_ARGS=...
#   make openapi     regenerate docs/openapi.json from template.yaml and the models (commit it)
#   make conformance schemathesis from docs/openapi.json against a fresh local stack, once per caller
#   make clean       build output and caches (make distclean also removes .venv and .tools)

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
SAM_VERSION := 1.170.0
TOOLS := $(CURDIR)/.tools
SAM := $(TOOLS)/bin/sam
VENV_STAMP := $(VENV)/.requirements.stamp
SAM_STAMP := $(TOOLS)/.aws-sam-cli-$(SAM_VERSION)
REQUIREMENTS := requirements-dev.txt layers/shared/requirements.txt

# One import root for tests, the local stack and bench (see DESIGN.md: Layout).
APP_PYTHONPATH := layers/shared:.
# Bytecode of local runs goes into .venv, not next to the sources: a __pycache__ in layers/shared
# would change the layer's source hash and defeat `sam build --cached`.
export PYTHONPYCACHEPREFIX := $(CURDIR)/$(VENV)/pycache

export SAM_CLI_TELEMETRY := 0
# sam validate needs AWS_DEFAULT_REGION (AWS_REGION is not enough); nothing here calls AWS.
export AWS_DEFAULT_REGION ?= eu-central-1
# uv must use the machine's Python, never download one.
export UV_PYTHON_DOWNLOADS := never

# Only directories that exist and hold Python files (git keeps no empty folders; ruff and mypy fail on
# missing paths or on folders without a .py).
has_py = $(if $(shell find $(1) -name '*.py' -not -path '*/__pycache__/*' -print -quit 2>/dev/null),$(1))
LINT_PATHS = $(foreach d,layers functions local tests bench scripts,$(call has_py,$(d)))
TYPECHECK_PATHS = $(foreach d,layers/shared/usermgmt functions local scripts,$(call has_py,$(d)))

.PHONY: help venv tools run test browser-deps lint fmt typecheck validate build check-build bench openapi \
	conformance clean distclean

help:
	@sed -n '4,17p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

# ---------------------------------------------------------------------------------------- venv
# Python 3.13: PYTHON313=... if given, else python3.13 on PATH, else the newest pyenv 3.13.x.
# Each candidate must really run and be 3.13 (a pyenv shim on PATH may only print an error).
find_python313 = \
  for c in $(PYTHON313) python3.13 \
      $$(ls -d "$${PYENV_ROOT:-$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)}"/versions/3.13.*/bin/python3.13 2>/dev/null | sort -rV); do \
    if "$$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then \
      command -v "$$c"; exit 0; fi; \
  done; \
  echo "error: no working Python 3.13 found: looked for python3.13 on PATH and" \
       "\$$(pyenv root)/versions/3.13.*/bin/python3.13 (install one, e.g. 'pyenv install 3.13'," \
       "or pass PYTHON313=/path/to/python3.13)" >&2; exit 1

$(PY):
	@py="$$($(find_python313))"; echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV_STAMP): $(REQUIREMENTS) | $(UV)
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || { \
	  echo "error: $(VENV) is not Python 3.13; remove it (make distclean) and run make venv again" >&2; exit 1; }
	$(UV) pip install --quiet --python $(PY) -r requirements-dev.txt
	@touch $@

venv: $(VENV_STAMP)

# --------------------------------------------------------------------------------------- tools
$(SAM_STAMP): | $(UV)
	UV_TOOL_DIR=$(TOOLS)/uv UV_TOOL_BIN_DIR=$(TOOLS)/bin \
	  $(UV) tool install --quiet --force --python "$$($(PY) -c 'import sys; print(sys._base_executable)')" \
	  aws-sam-cli==$(SAM_VERSION)
	@$(SAM) --version
	@touch $@

tools: $(SAM_STAMP)

# ----------------------------------------------------------------------------------- dev loop
run: venv
	PYTHONPATH=$(APP_PYTHONPATH) $(PY) -m local

# Two workers: CI and developer machines have two cores (PYTEST_WORKERS=0 runs in one process).
PYTEST_WORKERS ?= 2
test: venv browser-deps
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Headless Chromium for tests/e2e/test_browser.py (driven by the playwright package, which never
# downloads a browser here): Debian's chromium and chromium-driver. Installs only what is missing,
# and only as root; otherwise it fails and says what to install. The browser tests fail, never skip,
# without it.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
browser-deps:
	@if [[ -x $(CHROMIUM) && -x $(CHROMEDRIVER) ]]; then exit 0; fi; \
	if [[ $$(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then \
	  echo "error: the browser tests need Chromium at $(CHROMIUM) and ChromeDriver at $(CHROMEDRIVER);" \
	       "install Debian's packages as root: apt-get update &&" \
	       "apt-get install -y --no-install-recommends chromium chromium-driver" >&2; \
	  exit 1; \
	fi; \
	echo "installing chromium and chromium-driver (apt-get)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	$(CHROMIUM) --version

lint: venv
	@rc=0; \
	$(VENV)/bin/ruff check $(LINT_PATHS) || rc=1; \
	$(VENV)/bin/ruff format --check $(LINT_PATHS) || rc=1; \
	exit $$rc

fmt: venv
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

typecheck: venv
	$(VENV)/bin/mypy $(TYPECHECK_PATHS)

bench: venv
	PYTHONPATH=$(APP_PYTHONPATH) $(PY) -m bench $(BENCH_ARGS)

# --------------------------------------------------------------------------------- the API described
# docs/openapi.json is generated (local/openapi.py); tests/unit/test_openapi.py fails when it is stale.
openapi: venv
	PYTHONPATH=$(APP_PYTHONPATH) $(PY) -m local.openapi

# Schemathesis against a fresh local stack per caller (local/conformance.py); bounded to a few minutes.
conformance: venv
	PYTHONPATH=$(APP_PYTHONPATH) $(PY) -m local.conformance $(CONFORMANCE_ARGS)

# ------------------------------------------------------------------------------------- deploy
validate: tools
	$(SAM) validate --lint

# The makefile builds (layers/shared/Makefile, functions/Makefile) call python3.13 and its pip:
# the venv's, first on PATH.
build: venv tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) build
	@$(MAKE) check-build

check-build: venv
	$(PY) scripts/check_build.py .aws-sam/build

# -------------------------------------------------------------------------------------- clean
clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .hypothesis $(VENV)/pycache
	find . -path ./$(VENV) -prune -o -path ./.tools -prune -o -path ./.git -prune -o \
	  -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) $(TOOLS)
