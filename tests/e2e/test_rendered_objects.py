"""Everything `render` builds is accepted by a real API server's own Pod, Service and PDB checks,
including Pod Security admission at the level README claims for each example, and the QoS class
the API server gives the pods."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from darwin_operator.render import EndpointRef, render_endpoint
from darwin_operator.validation import validate

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = [
    REPO / "manifests" / "darwin-endpoint.yaml",
    *sorted(REPO.glob("manifests/examples/*")),
]
LEVELS = ("restricted", "baseline", "privileged")  # strictest first
UID = "6c2b3a1e-0000-4000-8000-000000000000"

# The paths the manifests do not take: no gang, host-path cache, every placement extra.
EVERYTHING_ELSE = {
    "apiVersion": "serving.darwin.ai/v1alpha1",
    "kind": "DarwinEndpoint",
    "metadata": {"name": "e" * 55},
    "spec": {
        "replicas": 1,
        "model": {
            "name": "org/model",
            "cache": {"hostPath": "/mnt/models"},
            "tokenSecretRef": {"name": "hf-token"},
        },
        "engine": {
            "tensorParallelSize": 2,
            "pipelineParallelSize": 2,
            "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        },
        "placement": {
            "podsPerGroup": 2,
            "gang": "None",
            "nodeSelector": {"pool": "b200"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "topologyKey": "kubernetes.io/hostname",
            "priorityClassName": "system-cluster-critical",
        },
        "resources": {"cpu": 4, "memory": "1Gi", "extra": {"example.com/nic": 2}},
        "rollout": {"maxUnavailable": "25%", "drainSeconds": 0},
        "podMetadata": {"labels": {"team": "llm"}, "annotations": {"note": "x"}},
        "pod": {
            "automountServiceAccountToken": True,
            "volumes": [{"name": "nccl", "configMap": {"name": "nccl-topology"}}],
            "volumeMounts": [{"name": "nccl", "mountPath": "/etc/nccl", "readOnly": True}],
        },
    },
}


def documents() -> list[tuple[str, dict]]:
    found = [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]
    return [*found, ("everything-else", EVERYTHING_ELSE)]


def readme_levels() -> dict[str, str]:
    """The Pod Security table of README.md: example file name -> level."""
    row = re.compile(r"^\| \[([^\]]+)\]\(manifests/[^)]*\) \| (\w+) \|", re.MULTILINE)
    return dict(row.findall((REPO / "README.md").read_text()))


def rendered(document: dict, namespace: str) -> list[dict]:
    endpoint = validate(document)
    ref = EndpointRef(endpoint.metadata["name"], namespace, UID)
    # The last group index the names have room for, besides the first.
    return render_endpoint(ref, endpoint, groups=[0, 9999])


@pytest.fixture(scope="module")
def level_namespaces(cluster, crd_installed):
    """A namespace per Pod Security level (enforced), with the ServiceAccounts the examples name."""
    core = k8s.CoreV1Api(cluster.api)
    accounts = {d["spec"].get("pod", {}).get("serviceAccountName") for _, d in documents()} - {None}
    names = {}
    for level in LEVELS:
        name = f"pss-{level}-{uuid.uuid4().hex[:6]}"
        labels = {"pod-security.kubernetes.io/enforce": level}
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels)))
        for account in accounts:
            meta = k8s.V1ObjectMeta(name=account)
            core.create_namespaced_service_account(name, k8s.V1ServiceAccount(metadata=meta))
        names[level] = name
    yield names
    for name in names.values():
        core.delete_namespace(name)


def dry_run(cluster, namespace: str, objects: list[dict]):
    return cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "yaml",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
    )


def strictest_level(cluster, level_namespaces, document: dict) -> tuple[str, str]:
    """The strictest level whose namespace admits every rendered pod, and the refusals above it."""
    refusals = []
    for level in LEVELS:
        pods = [o for o in rendered(document, level_namespaces[level]) if o["kind"] == "Pod"]
        result = dry_run(cluster, level_namespaces[level], pods)
        if result.returncode == 0:
            return level, "\n".join(refusals)
        refusals.append(f"{level}: {result.stderr.strip()}")
    return "none", "\n".join(refusals)


def test_readme_states_the_pod_security_level_of_every_example():
    levels = readme_levels()
    assert set(levels) == {path.name for path in MANIFESTS}, levels
    assert set(levels.values()) <= set(LEVELS)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_example_meets_the_pod_security_level_readme_says(cluster, level_namespaces, path):
    for document in yaml.safe_load_all(path.read_text()):
        level, refusals = strictest_level(cluster, level_namespaces, document)
        assert level == readme_levels()[path.name], refusals


@pytest.mark.parametrize(("case", "document"), documents(), ids=[c for c, _ in documents()])
def test_rendered_objects_pass_the_api_servers_validation(
    cluster, level_namespaces, case, document
):
    level = readme_levels().get(case, "privileged")
    namespace = level_namespaces[level]
    objects = rendered(document, namespace)
    result = dry_run(cluster, namespace, objects)
    assert result.returncode == 0, result.stderr
    created = list(yaml.safe_load_all(result.stdout))
    assert len(created) == len(objects)
    # QoS as the API server computes it: never BestEffort; Guaranteed when asked for
    guaranteed = document["spec"].get("resources", {}).get("guaranteed", False)
    qos = {o["status"]["qosClass"] for o in created if o["kind"] == "Pod"}
    assert qos == {"Guaranteed" if guaranteed else "Burstable"}
