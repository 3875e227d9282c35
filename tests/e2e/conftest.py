"""Fixtures for end-to-end tests against the local control plane (tests/cluster).

The session starts its own cluster in a temporary directory (free ports, so runs never collide)
and stops it at the end, unless DARWIN_E2E_KUBECONFIG names a cluster that is already up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from localcluster import Binaries, Cluster, NodeShape

from tests.e2e.operator_process import running_operator
from tests.e2e.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass
class ClusterHandle:
    kubeconfig: str
    kubectl_binary: str
    api: k8s.ApiClient

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        result = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            text=True,
            capture_output=True,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    external = os.environ.get("DARWIN_E2E_KUBECONFIG")
    kubectl = str(Binaries.from_cache().kubectl)
    if external:
        yield ClusterHandle(external, kubectl, k8s_config.new_client_from_config(external))
        return
    local = Cluster(Path(tempfile.mkdtemp(prefix="darwin-e2e-")) / "cluster")
    local.up(int(os.environ.get("CLUSTER_NODES", 4)), NodeShape())
    try:
        kubeconfig = str(local.kubeconfig)
        yield ClusterHandle(kubeconfig, kubectl, k8s_config.new_client_from_config(kubeconfig))
    finally:
        local.down()


@pytest.fixture(scope="session")
def crd_installed(cluster: ClusterHandle) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_for(
        lambda: crd_established(cluster, "darwinendpoints.serving.darwin.ai"),
        timeout=60,
        what="the DarwinEndpoint CRD Established",
    )


def crd_established(cluster: ClusterHandle, name: str) -> bool:
    # not `kubectl wait`: it fails outright on a CRD whose status has no conditions yet
    conditions = (cluster.json("get", "crd", name).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture
def namespace(cluster: ClusterHandle, request) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists), with
    Pod Security "baseline" enforced."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(cluster.api)
    # Pod Security "baseline" is enforced, as a real cluster would: the rendered pods must pass.
    labels = {"pod-security.kubernetes.io/enforce": "baseline"}
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels)))

    def default_account_exists() -> bool:
        return any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        )

    wait_for(default_account_exists, timeout=30, what=f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)
    # Tests share the cluster's GPUs: the next test may count on all of them, so the pods of this
    # one must be gone (not merely terminating) before it starts.
    wait_for(
        lambda: not core.list_namespaced_pod(name).items,
        timeout=60,
        what=f"pods of namespace {name} to be deleted",
    )


@pytest.fixture
def operator(cluster, crd_installed, namespace, tmp_path):
    """The operator as a process watching the test's namespace; SIGTERM must stop it cleanly."""
    yield from running_operator(cluster, namespace, tmp_path)
