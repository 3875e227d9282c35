"""The fake GPU device plugin: real nodes advertise 8 GPUs and a container sees the IDs it got."""

from __future__ import annotations

from tests.e2e.waiting import wait_for
from tests.e2e_real.pods import run_pods, toolbox_pod

PRINT_GPUS = 'echo "gpus=$NVIDIA_VISIBLE_DEVICES"; exec sleep 3600'


def test_real_nodes_look_like_the_kwok_b200_nodes(cluster):
    for name in cluster.real_node_names:
        node = cluster.json("get", "node", name)
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-B200"
        assert labels["nvidia.com/gpu.count"] == "8"
        assert {"topology.kubernetes.io/zone", "darwin.test/rack"} <= labels.keys()
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def gpus_seen(cluster, namespace: str, pod: str) -> list[str]:
    def printed() -> str | None:
        out = cluster.kubectl("logs", "-n", namespace, pod).stdout
        return next((line for line in out.splitlines() if line.startswith("gpus=")), None)

    line = wait_for(printed, timeout=30, what=f"{pod} printing its GPUs")
    return [g for g in line.removeprefix("gpus=").split(",") if g]


def test_containers_on_one_node_get_disjoint_gpu_ids(cluster, namespace):
    node = cluster.real_node_names[0]
    pods = run_pods(
        cluster,
        namespace,
        toolbox_pod("two", PRINT_GPUS, gpus=2, node=node),
        toolbox_pod("six", PRINT_GPUS, gpus=6, node=node),
    )
    assert {p["spec"]["nodeName"] for p in pods} == {node}
    two, six = gpus_seen(cluster, namespace, "two"), gpus_seen(cluster, namespace, "six")
    assert len(set(two)) == 2 and len(set(six)) == 6
    assert not set(two) & set(six)
    assert all(g.startswith(f"GPU-{node}-") for g in two + six)


def test_a_pod_without_gpus_sees_none(cluster, namespace):
    run_pods(cluster, namespace, toolbox_pod("none", PRINT_GPUS))
    assert gpus_seen(cluster, namespace, "none") == []
