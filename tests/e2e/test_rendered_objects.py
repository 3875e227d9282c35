"""Everything `render` builds is accepted by a real API server's own Pod, Service and PDB checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from darwin_operator.render import EndpointRef, render_endpoint
from darwin_operator.validation import validate

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = [
    REPO / "manifests" / "darwin-endpoint.yaml",
    *sorted(REPO.glob("manifests/examples/*")),
]

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
        "resources": {"cpu": 4, "memory": "1Gi"},
        "rollout": {"maxUnavailable": "25%", "drainSeconds": 0},
        "podMetadata": {"labels": {"team": "llm"}, "annotations": {"note": "x"}},
    },
}


def documents() -> list[tuple[str, dict]]:
    found = [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())]
    return [*found, ("everything-else", EVERYTHING_ELSE)]


@pytest.mark.parametrize(("case", "document"), documents(), ids=[c for c, _ in documents()])
def test_rendered_objects_pass_the_api_servers_validation(cluster, namespace, case, document):
    endpoint = validate(document)
    ref = EndpointRef(endpoint.metadata["name"], namespace, "6c2b3a1e-0000-4000-8000-000000000000")
    # The last group index the names have room for, besides the first.
    objects = render_endpoint(ref, endpoint, groups=[0, 9999])
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(objects)
    )
    assert result.stdout.count("created (server dry run)") == len(objects), result.stdout
