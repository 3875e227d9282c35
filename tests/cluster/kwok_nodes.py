"""The simulated nodes: Node objects shaped like 8-GPU B200 boxes, played by kwok."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeShape:
    gpus: int = 8
    cpu: str = "224"
    memory: str = "2Ti"
    # local NVMe (a DGX B200 has 8 x 3.84 TB): pods without a weights cache request room on it
    ephemeral_storage: str = "28Ti"
    gpu_product: str = "NVIDIA-B200"
    nodes_per_rack: int = 2
    racks_per_zone: int = 2


def gpu_node_labels(index: int, shape: NodeShape) -> dict[str, str]:
    """The labels a B200 node carries (kwok and real nodes alike): GPU product and count, and a
    rack and zone from its index (two nodes a rack, two racks a zone by default)."""
    rack = index // shape.nodes_per_rack
    zone = rack // shape.racks_per_zone
    return {
        "nvidia.com/gpu.product": shape.gpu_product,
        "nvidia.com/gpu.count": str(shape.gpus),
        "topology.kubernetes.io/zone": f"zone-{zone}",
        "darwin.test/rack": f"rack-{rack}",
    }


def node_manifest(index: int, shape: NodeShape) -> dict:
    name = f"kwok-node-{index}"
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "ephemeral-storage": shape.ephemeral_storage,
        "pods": "110",
        "nvidia.com/gpu": str(shape.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **gpu_node_labels(index, shape),
            },
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


def node_list(count: int, shape: NodeShape, start: int = 0) -> str:
    """The kwok nodes start..count-1 as one List for `kubectl apply -f -`."""
    items = [node_manifest(i, shape) for i in range(start, count)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def node_lists(count: int, shape: NodeShape, per_list: int) -> list[str]:
    """The kwok nodes 0..count-1 as Lists of at most `per_list` nodes, to apply in parallel."""
    return [
        node_list(min(start + per_list, count), shape, start) for start in range(0, count, per_list)
    ]


# Taints the node lifecycle controller puts on a node it has seen not Ready; it lifts them a
# while after the node is Ready again (at 1,000 nodes, minutes when its API rate is low).
NODE_CONTROLLER_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def ready_node_names(nodes: dict) -> set[str]:
    """Names of the Ready nodes in a `kubectl get nodes -o json` answer that carry none of the
    node controller's not-ready taints (which keep pods off them)."""
    return {
        n["metadata"]["name"]
        for n in nodes["items"]
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n.get("status", {}).get("conditions", [])
        )
        and not any(
            t.get("key") in NODE_CONTROLLER_TAINTS for t in n.get("spec", {}).get("taints") or ()
        )
    }
