"""Pods for the real-node tests: the toolbox image (busybox), started and waited on with kubectl."""

from __future__ import annotations

import json

from node_images import TOOLBOX_IMAGE

from tests.e2e.waiting import wait_for

# Let the kubelet stop a pod at once (busybox as PID 1 ignores SIGTERM).
GRACE = 0


def toolbox_pod(
    name: str,
    script: str,
    *,
    gpus: int = 0,
    node: str | None = None,
    labels: dict[str, str] | None = None,
    hostname: str | None = None,
    subdomain: str | None = None,
) -> dict:
    container = {
        "name": "main",
        "image": TOOLBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"nvidia.com/gpu": str(gpus)} if gpus else {},
        },
    }
    spec: dict = {
        "containers": [container],
        "nodeSelector": {"type": "real"},
        "terminationGracePeriodSeconds": GRACE,
        "restartPolicy": "Never",
    }
    if node:
        spec["nodeName"] = node
    if hostname:
        spec.update(hostname=hostname, subdomain=subdomain)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def run_pods(cluster, namespace: str, *pods: dict, timeout: float = 120) -> list[dict]:
    """Creates the pods and waits until every one is Running with its containers ready."""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_list(pods)))
    names = [p["metadata"]["name"] for p in pods]

    def running() -> list[dict] | None:
        got = [cluster.json("get", "pod", "-n", namespace, name) for name in names]
        ok = all(
            p["status"].get("phase") == "Running"
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
            for p in got
        )
        return got if ok else None

    return wait_for(running, timeout=timeout, what=f"pods {names} Running in {namespace}")


def apply(cluster, namespace: str, *objects: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_list(objects)))


def _list(items) -> dict:
    return {"apiVersion": "v1", "kind": "List", "items": list(items)}


def exec_in(cluster, namespace: str, pod: str, *command: str, check: bool = True):
    return cluster.kubectl("exec", "-n", namespace, pod, "--", *command, check=check)
