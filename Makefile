# Every target first makes .venv (the package installed editable, with its test extras).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= $(CURDIR)/.cluster
export CLUSTER_DIR
# Real kubelet nodes beside the kwok ones (root): make cluster-up REAL_NODES=2
REAL_NODES ?= 0
REAL_TOOLS := $(if $(filter-out 0,$(REAL_NODES)),real-node-tools)

.PHONY: help venv build-cluster real-node-tools cluster-up cluster-down vllm-venv prometheus-tools \
	test test-unit test-tools test-e2e test-e2e-real bench lint generate install-manifest demo \
	demo-down

help:
	@echo "make demo        run the reference endpoint on the local simulated cluster"
	@echo "make test        all tests (unit, vLLM command lines, e2e on the local cluster)"
	@echo "make cluster-up  start the local cluster (kubeconfig: \$$CLUSTER_DIR/kubeconfig)"
	@echo "                 REAL_NODES=2: with two real kubelet nodes (root)"
	@echo "make cluster-down / demo-down / generate / lint"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

build-cluster: venv
	bash tests/cluster/build.sh kubernetes etcd kwok helm prometheus-crds

# What real nodes need besides the control plane: Debian packages (containerd, runc, CNI
# plugins, iptables...) and kubelet, kube-proxy and CoreDNS built from their Go modules.
real-node-tools: venv
	bash tests/cluster/install-node-packages.sh
	bash tests/cluster/build.sh node coredns

cluster-up: build-cluster $(REAL_TOOLS)
	$(PY) tests/cluster/localcluster.py up --dir $(CLUSTER_DIR) --real-nodes $(REAL_NODES)

cluster-down: venv
	$(PY) tests/cluster/localcluster.py down --dir $(CLUSTER_DIR)

# With REAL_NODES=2: the same endpoint as real processes (the vLLM stand-in image) on real nodes.
# INSTALL=helm REAL_NODES=2: the operator installed by the chart from its image (operator/Dockerfile)
# in a pod on a real node; the reference endpoint on the kwok nodes.
INSTALL ?= process
HELM_DEMO := $(filter helm,$(INSTALL))
demo: $(if $(REAL_TOOLS),images) cluster-up
	$(if $(HELM_DEMO),$(if $(REAL_TOOLS),,$(error INSTALL=helm runs the operator on a real node: add REAL_NODES=2)))
	$(PY) tests/cluster/demo.py up --dir $(CLUSTER_DIR) $(if $(HELM_DEMO),--install helm,$(if $(REAL_TOOLS),--real))

demo-down: venv
	$(PY) tests/cluster/demo.py down --dir $(CLUSTER_DIR)
	$(PY) tests/cluster/localcluster.py down --dir $(CLUSTER_DIR)

vllm-venv: venv
	bash tests/vllm/setup-venv.sh

# Prometheus and promtool (Debian's package): promtool for the alert tests, a real Prometheus
# for the e2e scrape of the operator.
prometheus-tools:
	bash tests/prometheus/install.sh

# Images for the real nodes (docker-archive tars in ~/.cache/darwin-operator/images; root, for
# debootstrap): the vLLM stand-in (tests/standin) and the operator.
.PHONY: images operator-image
images:
	bash tests/images/build.sh vllm-standin darwin-operator

# The operator image from operator/Dockerfile, built by buildah on the cached Debian base;
# rebuilt only when the Dockerfile or what it copies changed.
operator-image:
	bash tests/cluster/install-node-packages.sh
	bash tests/images/build.sh darwin-operator

test: build-cluster real-node-tools vllm-venv prometheus-tools images
	$(PY) -m pytest

# Pure tests of the operator's code: nothing but the venv.
test-unit: venv
	$(PY) -m pytest tests/unit

# Tests that run the real tools on the repo's files: helm (built from source, cached) on the
# chart, promtool on the alerting rules.
test-tools: venv prometheus-tools
	bash tests/cluster/build.sh helm
	$(PY) -m pytest tests/tools

test-e2e: build-cluster prometheus-tools
	$(PY) -m pytest tests/e2e

test-e2e-real: build-cluster real-node-tools
	$(PY) -m pytest tests/e2e_real

# Every benchmark on the local cluster; what they print goes to bench/results/<date>-<time>-<host>.md.
# bench_vs_lws.py also needs LeaderWorkerSet's manager, built from its Go module.
bench: build-cluster
	bash tests/cluster/build.sh lws
	$(PY) bench/run.py

lint: venv
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench

# Generated files: the CRD (from the pydantic models) and its copy in the chart.
generate: venv
	$(VENV)/bin/darwin-operator crd --output crds/serving.darwin.ai_darwinendpoints.yaml
	$(VENV)/bin/darwin-operator crd --output charts/darwin-operator/crds/serving.darwin.ai_darwinendpoints.yaml
	$(MAKE) install-manifest

# The no-Helm install: the chart rendered with its default values (a test fails on drift).
install-manifest:
	bash tests/cluster/build.sh helm
	bash tests/cluster/render_install.sh > manifests/install.yaml.tmp
	mv manifests/install.yaml.tmp manifests/install.yaml
