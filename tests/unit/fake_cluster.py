"""An in-memory stand-in for cluster.Cluster, enough for whole reconciles in unit tests: pods
are stored as the API would return them, and the test moves them along (bind, Ready)."""

from __future__ import annotations

import copy
from typing import Any

from darwin_operator import api, vocabulary, writes
from darwin_operator.cluster import ApiError
from darwin_operator.vocabulary import format_time

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


def apply_patch(pod: dict[str, Any], write: writes.PatchPod) -> None:
    """A merge patch of labels and annotations (None removes a key), and our gate lifted."""
    meta = pod["metadata"]
    for section, values in (("labels", write.labels), ("annotations", write.annotations)):
        target = meta.setdefault(section, {})
        for key, value in values:
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    if write.ungate:
        gates = pod["spec"].get("schedulingGates") or []
        pod["spec"]["schedulingGates"] = [
            g for g in gates if g["name"] != vocabulary.SCHEDULING_GATE
        ]


class FakeCluster:
    def __init__(self, endpoint: dict[str, Any], nodes: int = 4) -> None:
        self.endpoint = endpoint
        self.nodes = [node(f"node-{i}") for i in range(nodes)]
        self.pods: dict[str, dict[str, Any]] = {}
        self.revisions: dict[str, dict[str, Any]] = {}  # ControllerRevisions by name
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

    async def stored_revisions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(r) for r in self.revisions.values()]

    async def store_revision(self, obj: dict[str, Any]) -> None:
        self.revisions.setdefault(obj["metadata"]["name"], copy.deepcopy(obj))

    async def prune_revision(self, namespace: str, name: str) -> None:
        self.revisions.pop(name, None)

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

    async def write_pods(self, namespace: str, pod_writes) -> int:
        """What the API server does with the operator's pod writes (writes.py)."""
        done = 0
        for write in pod_writes:
            match write:
                case writes.CreatePod(name=name, body=body) if name not in self.pods:
                    pod = copy.deepcopy(body)
                    pod["metadata"]["creationTimestamp"] = format_time(self.clock)
                    pod["status"] = {"phase": "Pending"}
                    self.pods[name] = pod
                case writes.PatchPod(name=name) if name in self.pods:
                    apply_patch(self.pods[name], write)
                case writes.DeletePod(name=name) if name in self.pods:
                    del self.pods[name]
                case _:
                    continue  # exists already, or gone: the answers the operator lets pass
            done += 1
        return done

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
