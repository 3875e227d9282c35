"""Installing the operator into the local cluster: `helm install/upgrade/uninstall` of the chart,
and `kubectl apply -f manifests/install.yaml` without Helm. The operator pods run on kwok nodes
(no process behind them); what they would do is tested with the real process elsewhere."""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.chart_install import Release, release_name
from tests.e2e.waiting import wait_for
from tests.helm import INSTALL_MANIFEST

pytestmark = pytest.mark.e2e

CRDS = (
    "darwinendpoints.serving.darwin.ai",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)


def exists(cluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, check=False).returncode == 0


def available_replicas(cluster, namespace: str, name: str) -> int:
    deployment = cluster.json("get", "deployment", name, "-n", namespace)
    return (deployment.get("status") or {}).get("availableReplicas") or 0


def test_helm_install_upgrade_and_uninstall(cluster, namespace):
    release = Release(cluster, release_name(), namespace)
    notes = release.install({}).stdout
    assert "kubectl get dwe" in notes and "rollout status" in notes, notes

    for crd in CRDS:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    name = release.fullname
    assert exists(cluster, "serviceaccount", name, "-n", namespace)
    assert exists(cluster, "clusterrole", name) and exists(cluster, "clusterrolebinding", name)
    assert exists(cluster, "service", f"{name}-metrics", "-n", namespace)
    assert available_replicas(cluster, namespace, name) == 1
    pod_spec = cluster.json("get", "deployment", name, "-n", namespace)["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == name

    release.upgrade({"replicaCount": 2})
    assert available_replicas(cluster, namespace, name) == 2
    assert exists(cluster, "poddisruptionbudget", name, "-n", namespace)
    history = yaml.safe_load(
        release.helm("history", release.name, "-n", namespace, "-o", "yaml").stdout
    )
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    release.uninstall()
    for kind in ("deployment", "serviceaccount", "service", "poddisruptionbudget"):
        target = f"{name}-metrics" if kind == "service" else name
        assert not exists(cluster, kind, target, "-n", namespace), kind
    assert not exists(cluster, "clusterrole", name) and not exists(
        cluster, "clusterrolebinding", name
    )
    # Helm never deletes what it installed from crds/: the DarwinEndpoints outlive the operator.
    assert all(exists(cluster, "crd", crd) for crd in CRDS)


def test_kubectl_apply_installs_without_helm(cluster, tmp_path):
    documents = [d for d in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if d]
    namespace = documents[0]["metadata"]["name"]
    deployment = next(d for d in documents if d["kind"] == "Deployment")["metadata"]["name"]
    cluster.kubectl("apply", "-f", str(INSTALL_MANIFEST))
    try:
        wait_for(
            lambda: available_replicas(cluster, namespace, deployment) == 1,
            timeout=90,
            what="the operator Deployment available",
        )
        assert exists(cluster, "clusterrolebinding", deployment)
        # A second apply changes nothing: the file is a steady state.
        again = cluster.kubectl("apply", "-f", str(INSTALL_MANIFEST)).stdout
        assert "configured" not in again and "created" not in again, again
    finally:
        # Everything but the CRDs (other tests' DarwinEndpoints live in them).
        kept = [d for d in documents if d["kind"] != "CustomResourceDefinition"]
        objects = tmp_path / "objects.yaml"
        objects.write_text(yaml.safe_dump_all(kept))
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(objects))
