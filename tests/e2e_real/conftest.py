"""Fixtures of the real-node tier: a cluster whose pods run as processes on real kubelets.

`cluster` (session): a local cluster with DARWIN_E2E_REAL_NODES (default 2) real nodes and no
kwok nodes, so every pod lands on a real node; or the cluster that DARWIN_E2E_KUBECONFIG names
(one started with `make cluster-up REAL_NODES=2`). It is a RealClusterHandle: the ClusterHandle
of tests/e2e plus the real nodes' names and `import_image(tar)`. `namespace`, `crd_installed` and
`operator` are the tests/e2e fixtures, on this cluster. Needs root (see tests/cluster/README.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import config as k8s_config
from localcluster import Binaries, Cluster, NodeShape

from tests.e2e.conftest import ClusterHandle, crd_installed, namespace, operator

__all__ = ["RealClusterHandle", "crd_installed", "namespace", "operator"]

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items):
    positions = [i for i, item in enumerate(items) if HERE in Path(str(item.fspath)).parents]
    tier = [items[i] for i in positions]
    for item in tier:
        item.add_marker(pytest.mark.e2e_real)
    # Tests that start clusters of their own run before the session's real nodes are up (one
    # cluster with real nodes per host): they go first within this tier.
    tier.sort(key=lambda item: item.get_closest_marker("own_cluster") is None)
    for i, item in zip(positions, tier, strict=True):
        items[i] = item


@dataclass
class RealClusterHandle(ClusterHandle):
    local: Cluster = field(default=None)

    @property
    def real_node_names(self) -> list[str]:
        nodes = self.json("get", "nodes", "-l", "type=real")["items"]
        return sorted(n["metadata"]["name"] for n in nodes)

    def import_image(self, tar: Path) -> None:
        """Loads a docker-archive tar into every real node (pods: imagePullPolicy Never)."""
        self.local.real_nodes().import_image(tar)


@pytest.fixture(scope="session")
def cluster() -> Iterator[RealClusterHandle]:
    kubectl = str(Binaries.from_cache().kubectl)
    external = os.environ.get("DARWIN_E2E_KUBECONFIG")
    if external:
        local = Cluster(Path(external).parent)
        if not json.loads(local.kubectl("get", "nodes", "-l", "type=real", "-o", "json").stdout)[
            "items"
        ]:
            raise AssertionError(f"{external}: no real nodes (start it with REAL_NODES=2)")
        api = k8s_config.new_client_from_config(external)
        yield RealClusterHandle(external, kubectl, api, local)
        return
    local = Cluster(Path(tempfile.mkdtemp(prefix="darwin-e2e-real-")) / "cluster")
    local.up(0, NodeShape(), real_nodes=int(os.environ.get("DARWIN_E2E_REAL_NODES", 2)))
    try:
        kubeconfig = str(local.kubeconfig)
        api = k8s_config.new_client_from_config(kubeconfig)
        yield RealClusterHandle(kubeconfig, kubectl, api, local)
    finally:
        local.down()
