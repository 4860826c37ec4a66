# Two entry points from a fresh clone:
#   make run    create .venv, install embrel, run the demo release on Milvus Lite
#   make test   install the test tools and the real Milvus server, lint, type-check, run the suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test lint unit soak benchmarks manifests clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	@touch $@

# milvus==2.3.5 ships the real Milvus standalone binary (`milvus-server`); the
# suite starts it once per session (tests/support/milvus_server.py).
# prometheus/promtool (Debian) prove the alert rules; torch is pinned to the CPU
# build that lies on these machines before the embedder extra asks for it.
# Azurite (npm), the Azure Blob Storage emulator of the object storage tests
# (tests/support/azurite.py), goes into .tools/; Node.js and npm come from Debian
# where the machine lacks them. 3.35.0 is the last release that runs on Node.js
# before 21 (Debian 12 has 18; later releases ask for 21 and 22).
AZURITE_VERSION ?= 3.35.0
$(VENV)/.test-installed: $(VENV)/.installed
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)
	command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	npm install --prefix .tools --no-audit --no-fund --silent azurite@$(AZURITE_VERSION)
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[test,embed]'
	$(PIP) install 'milvus==2.3.5'
	@touch $@

run: $(VENV)/.installed
	$(VENV)/bin/embrel demo

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check controller tests benchmarks examples
	$(VENV)/bin/ruff format --check controller tests benchmarks examples
	$(VENV)/bin/mypy controller
	$(VENV)/bin/lint-imports

# Three steps, timed on 2 cores: the default suite (about 6 min): unit, Kubernetes driver,
# every scenario on the in-memory fake, the MilvusPort contract on the fake and Milvus
# Lite, the lifecycle scenario on Lite; then every scenario on Milvus Lite and on the real
# server, and the contract on the server (about 40 min); then the heavy end-to-end checks
# (Prometheus, Kubernetes mock, embedder, network faults and Milvus restarts, about 22 min).
test: lint
	$(PY) -m pytest
	$(PY) -m pytest -m 'real and not heavy'
	$(PY) -m pytest -m heavy

unit: $(VENV)/.test-installed
	$(PY) -m pytest tests/unit

# Release cycles in a row on the real server (apply, rollback, promote, retention) while
# readers search through the alias (tests/soak); not part of `make test`. About 200 x
# the seconds of a cycle; SOAK_CYCLES=5 for a quick one.
SOAK_CYCLES ?= 200
soak: $(VENV)/.test-installed
	SOAK_CYCLES=$(SOAK_CYCLES) $(PY) -m pytest -m soak -s tests/soak

# The CRD (from the spec model), the PrometheusRule and the chart's copy of the alert
# rules, the argocd-cm health-check patch and the chart's values schema; a test fails
# when the committed files differ (tests/unit/test_crd.py).
manifests: $(VENV)/.installed
	$(PY) -m controller.manifests

benchmarks: $(VENV)/.test-installed
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .tools .demo .embrel .mypy_cache .ruff_cache .pytest_cache

# The container image (Dockerfile), tagged with the name manifests/ and the chart run
# (`python -m controller.manifests --image`: embrel/embrel:<version>). Settings are
# scripts/build-image.sh's, e.g.
#   make image EXTRAS=embed             the embedder variant, tagged <version>-embed
#   make image BASE_IMAGE=mmdebstrap    a local Debian base where no registry is reachable
#   make image SAVE=embrel.oci.tar      also an OCI archive, for `kind load image-archive`
# image-tools installs podman and friends with apt (scripts/image-tools.sh).
.PHONY: image image-tools
image-tools:
	scripts/image-tools.sh

image: $(VENV)/.installed image-tools
	PYTHON=$(PY) scripts/build-image.sh
