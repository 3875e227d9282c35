"""The one builder of DarwinEndpoint documents and specs for every test tier: the reference
endpoint with changes merged in (unit tests, benchmarks), and the same shape for the simulated
cluster's nodes (e2e: small groups, pods that get Ready after a delay the kwok stages read)."""

from __future__ import annotations

import copy
from typing import Any

from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.render import EndpointRef

REF = EndpointRef(name="darwin-398b", namespace="llm", uid="0d1e2f3a-0000-4000-8000-000000000001")

REFERENCE_SPEC: dict[str, Any] = {
    "replicas": 2,
    "model": {"name": "FINAL-Bench/Darwin-398B-JGOS"},
    "engine": {
        "image": "vllm/vllm-openai:v0.33.0",
        "tensorParallelSize": 2,
        "pipelineParallelSize": 3,
        "dtype": "bfloat16",
        "maxModelLen": 18432,
        "trustRemoteCode": True,
    },
    "placement": {"podsPerGroup": 1, "gpuProduct": "NVIDIA-B200"},
}


# A change to DELETE removes the key (e.g. a required field left out).
DELETE: Any = object()


def merged(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict):
            inner = out.get(key)
            out[key] = merged(inner if isinstance(inner, dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec_doc(**changes: Any) -> dict:
    return merged(REFERENCE_SPEC, changes)


def endpoint_doc(name: str = "darwin-398b", *, base: dict | None = None, **changes: Any) -> dict:
    """An endpoint named `name`: `changes` merged into the spec `base` (REFERENCE_SPEC unless
    given)."""
    return {
        "apiVersion": "serving.darwin.ai/v1alpha1",
        "kind": "DarwinEndpoint",
        "metadata": {"name": name},
        "spec": merged(REFERENCE_SPEC if base is None else base, changes),
    }


def spec(**changes: Any) -> DarwinEndpointSpec:
    return DarwinEndpointSpec.model_validate(spec_doc(**changes))


def endpoint_manifest(
    name: str,
    *,
    replicas: int = 2,
    tp: int = 2,
    pp: int = 3,
    pods_per_group: int = 1,
    ready_after: str = "2s",
    drain_seconds: int = 2,
    **changes: Any,
) -> dict:
    """An endpoint for the simulated cluster (kwok nodes: B200s, 8 GPUs each); `changes` are
    merged into the spec like spec_doc's."""
    shape = {
        "replicas": replicas,
        "model": {"name": "FINAL-Bench/Darwin-398B-JGOS"},
        "engine": {"tensorParallelSize": tp, "pipelineParallelSize": pp},
        "placement": {"podsPerGroup": pods_per_group, "gpuProduct": "NVIDIA-B200"},
        "rollout": {"drainSeconds": drain_seconds},
        "podMetadata": {"annotations": {"darwin.test/ready-after": ready_after}},
    }
    return {
        "apiVersion": "serving.darwin.ai/v1alpha1",
        "kind": "DarwinEndpoint",
        "metadata": {"name": name},
        "spec": merged(shape, changes),
    }
