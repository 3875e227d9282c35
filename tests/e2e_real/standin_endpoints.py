"""Endpoints served by the vLLM stand-in on real nodes: its image, weights on the host, requests
through the client Service, and the container processes of a pod as the host sees them."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import images  # tests/images, on pytest's pythonpath
from darwin_operator.vocabulary import LABEL_ENDPOINT, LABEL_ROLE, ROLE_LEADER, client_service_name

MODEL = "FINAL-Bench/Darwin-398B-JGOS"
# On the memory-backed /dev/shm volume every pod has: writable even with a read-only root.
FAULT_FILE = "/dev/shm/vllm-standin-fault"


def write_weights(root: Path, size: int = 8 << 20) -> Path:
    """A model in the Hugging Face cache layout that --download-dir points at (hostPath)."""
    snapshot = root / f"models--{MODEL.replace('/', '--')}" / "snapshots" / "main"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"architectures": ["DarwinStandIn"]}')
    for shard in range(2):
        with open(snapshot / f"model-{shard + 1:05d}-of-00002.safetensors", "wb") as f:
            f.write(os.urandom(size // 2))
    root.chmod(0o755)
    return root


CLAIM = "weights"


def weights_volume(weights: Path, namespace: str) -> list[dict[str, Any]]:
    """A PersistentVolume of the host's weights directory and its claim in `namespace`, bound to
    each other: pods get the weights through a claim, as Pod Security "baseline" (enforced on
    the test namespaces) refuses hostPath volumes in pods."""
    volume = f"weights-{namespace}"[:63]
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(weights), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": CLAIM, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def endpoint(
    name: str,
    claim: str,
    *,
    pods_per_group: int,
    tp: int = 2,
    pp: int = 3,
    replicas: int = 1,
    drain_seconds: int = 5,
    env: dict[str, str] | None = None,
    health: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.darwin.ai/v1alpha1",
        "kind": "DarwinEndpoint",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "model": {
                "name": MODEL,
                "servedName": name,
                "cache": {"persistentVolumeClaim": claim},
            },
            "engine": {
                "image": images.STANDIN_IMAGE,
                "tensorParallelSize": tp,
                "pipelineParallelSize": pp,
                "env": [
                    {"name": k, "value": v}
                    for k, v in {"STANDIN_FAULT_FILE": FAULT_FILE, **(env or {})}.items()
                ],
            },
            "placement": {"podsPerGroup": pods_per_group, "gpuProduct": "NVIDIA-B200"},
            # Real nodes have the host's 2 CPUs: small requests, so that every shape fits.
            "resources": {"cpu": "100m", "memory": "128Mi", "sharedMemory": "16Mi"}
            | (resources or {}),
            "rollout": {"drainSeconds": drain_seconds},
            "health": {"startupTimeoutSeconds": 300} | (health or {}),
        },
    }


def leader(cluster, namespace: str, name: str) -> dict:
    selector = f"{LABEL_ENDPOINT}={name},{LABEL_ROLE}={ROLE_LEADER}"
    (pod,) = cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return pod


def hostname(pod: dict) -> str:
    return pod["spec"].get("hostname") or pod["metadata"]["name"]


def service_address(cluster, namespace: str, name: str) -> tuple[str, int]:
    service = cluster.json("get", "service", client_service_name(name), "-n", namespace)
    return service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]


@dataclass
class Answer:
    status: int
    body: dict
    served_by: str


def complete(address: tuple[str, int], model: str, *, delay: float = 0, timeout: float = 30):
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 4})
        headers = {"content-type": "application/json", "x-standin-delay-seconds": str(delay)}
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return Answer(
            response.status,
            json.loads(data) if data else {},
            response.getheader("x-standin-hostname") or "",
        )
    finally:
        conn.close()


def requests_running(pod_ip: str) -> float:
    conn = http.client.HTTPConnection(pod_ip, 8000, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    line = next(x for x in text.splitlines() if x.startswith("vllm:num_requests_running{"))
    return float(line.rsplit(" ", 1)[1])


def vllm_process(pod: dict) -> int:
    """The host pid of the pod's vLLM process: in the pod's cgroup, pid 1 of its container."""
    uid = pod["metadata"]["uid"]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"pod{uid}" not in (entry / "cgroup").read_text():
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = next(
            (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
        )
        if nspid[-1:] == ["1"] and any(b"vllm" in part for part in cmdline):
            found.append(int(entry.name))
    assert len(found) == 1, f"vLLM processes of pod {pod['metadata']['name']}: {found}"
    return found[0]
