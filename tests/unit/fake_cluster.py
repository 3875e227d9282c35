"""An in-memory stand-in for cluster.Cluster, enough for whole reconciles in unit tests: pods
are stored as the API would return them, and the test moves them along (bind, Ready)."""

from __future__ import annotations

import copy
from typing import Any

from darwin_operator import api, vocabulary
from darwin_operator.cluster import ApiError
from darwin_operator.vocabulary import ANNOTATION_ADMITTED_AT, format_time

UID = "0d1e2f3a-0000-4000-8000-000000000001"
GPU = "nvidia.com/gpu"


def endpoint_object(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": UID, "generation": 1},
        "spec": copy.deepcopy(spec),
    }


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-B200"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {GPU: str(gpus)},
        },
    }


class FakeCluster:
    def __init__(self, endpoint: dict[str, Any], nodes: int = 4) -> None:
        self.endpoint = endpoint
        self.nodes = [node(f"node-{i}") for i in range(nodes)]
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[str] = []
        self.apply_error: ApiError | None = None
        self.clock = 0.0

    # reads
    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.endpoint)

    async def endpoint_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods.values()]

    async def owned_objects(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return []

    async def secret_exists(self, namespace: str, name: str) -> bool:
        return True

    async def list_nodes(self):
        return copy.deepcopy(self.nodes)

    async def capacity_inputs(self):
        return copy.deepcopy(self.nodes), [copy.deepcopy(p) for p in self.pods.values()]

    # writes
    async def apply(self, obj: dict[str, Any]) -> None:
        if self.apply_error is not None:
            raise self.apply_error

    async def create_pods(self, namespace: str, pods) -> int:
        created = 0
        for pod in pods:
            name = pod["metadata"]["name"]
            if name not in self.pods:
                pod = copy.deepcopy(pod)
                pod["metadata"]["creationTimestamp"] = format_time(self.clock)
                pod["status"] = {"phase": "Pending"}
                self.pods[name] = pod
                created += 1
        return created

    async def ungate_pods(self, namespace: str, names, now: float) -> int:
        for name in names:
            pod = self.pods[name]
            pod["spec"]["schedulingGates"] = [
                g
                for g in pod["spec"].get("schedulingGates") or []
                if g["name"] != vocabulary.SCHEDULING_GATE
            ]
            pod["metadata"].setdefault("annotations", {})[ANNOTATION_ADMITTED_AT] = format_time(now)
        return len(list(names))

    async def set_serving(self, namespace: str, pod: str, serving: bool, now: float) -> None:
        pass

    async def annotate_pods(self, namespace: str, names, annotations) -> int:
        for name in names:
            self.pods[name]["metadata"].setdefault("annotations", {}).update(annotations)
        return len(list(names))

    async def delete_pods(self, namespace: str, names, reason: str = "") -> int:
        return sum(1 for name in names if self.pods.pop(name, None) is not None)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.endpoint["status"] = copy.deepcopy(status)

    async def post_event(self, endpoint, note, now: float) -> None:
        self.events.append(note.message)

    # what kube-scheduler and the kubelet would do
    def bind_all(self, at: float) -> None:
        for i, pod in enumerate(self.pods.values()):
            if not pod["spec"].get("schedulingGates") and not pod["spec"].get("nodeName"):
                pod["spec"]["nodeName"] = f"node-{i % len(self.nodes)}"
                pod["status"] = {
                    "phase": "Running",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "True",
                            "lastTransitionTime": format_time(at),
                        }
                    ],
                }

    def ready_all(self, at: float) -> None:
        for pod in self.pods.values():
            if pod["spec"].get("nodeName"):
                pod["status"]["conditions"].append(
                    {"type": "Ready", "status": "True", "lastTransitionTime": format_time(at)}
                )
