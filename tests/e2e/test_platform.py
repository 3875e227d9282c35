"""The test platform itself: a real control plane whose scheduling, garbage collection, CEL
validation and RBAC behave as Kubernetes does, with kwok nodes that look like 8-GPU B200 boxes."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.e2e.waiting import wait_for

GPU = "nvidia.com/gpu"


def gpu_pod(name: str, gpus: int, **metadata) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **metadata},
        "spec": {
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/fake:1",
                    "resources": {"limits": {GPU: str(gpus)}},
                }
            ],
        },
    }


def read_pod(core: k8s.CoreV1Api, namespace: str, name: str) -> k8s.V1Pod:
    return core.read_namespaced_pod(name, namespace)


def is_ready(pod: k8s.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture
def core(cluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(cluster.api)


def test_nodes_are_ready_b200_boxes_with_eight_gpus(core):
    nodes = core.list_node().items
    assert len(nodes) >= 4
    for node in nodes:
        assert node.status.allocatable[GPU] == "8"
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-B200"
        assert node.metadata.labels["topology.kubernetes.io/zone"].startswith("zone-")
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_six_gpu_pod_binds_and_becomes_ready(core, namespace):
    core.create_namespaced_pod(namespace, gpu_pod("six", 6))
    pod = _wait_pod_ready(core, namespace, "six")
    assert pod.spec.node_name.startswith("kwok-node-")
    assert pod.status.phase == "Running"


def test_nine_gpu_pod_stays_pending_with_failed_scheduling(core, namespace):
    core.create_namespaced_pod(namespace, gpu_pod("nine", 9))

    def failed_scheduling():
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=nine"
        ).items
        return [e for e in events if e.reason == "FailedScheduling"]

    events = wait_for(failed_scheduling, timeout=30, what="FailedScheduling event")
    assert "Insufficient nvidia.com/gpu" in events[0].message
    pod = read_pod(core, namespace, "nine")
    assert pod.spec.node_name is None and pod.status.phase == "Pending"


def test_gpu_bin_packing_is_real_scheduling(core, namespace):
    nodes = len(core.list_node().items)
    for i in range(nodes):
        core.create_namespaced_pod(namespace, gpu_pod(f"big-{i}", 6))
    wait_for(
        lambda: all(read_pod(core, namespace, f"big-{i}").spec.node_name for i in range(nodes)),
        timeout=60,
        what="every 6-GPU pod bound",
    )
    bound = {read_pod(core, namespace, f"big-{i}").spec.node_name for i in range(nodes)}
    assert len(bound) == nodes, "each 6-GPU pod needs a node of its own"

    core.create_namespaced_pod(namespace, gpu_pod("one-too-many", 6))
    wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=one-too-many"
            ).items
            if e.reason == "FailedScheduling"
        ],
        timeout=30,
        what="the extra pod unschedulable",
    )
    assert read_pod(core, namespace, "one-too-many").spec.node_name is None

    # Free the nodes, then 2-GPU pods pack four to a node: 4 x nodes of them fit, one more not.
    core.delete_collection_namespaced_pod(namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, timeout=60, what="pods deleted")
    for i in range(4 * nodes + 1):
        core.create_namespaced_pod(namespace, gpu_pod(f"small-{i}", 2))

    def bound_count():
        pods = core.list_namespaced_pod(namespace).items
        return [p for p in pods if p.spec.node_name]

    wait_for(lambda: len(bound_count()) == 4 * nodes, timeout=60, what="2-GPU pods bound")
    per_node: dict[str, int] = {}
    for pod in bound_count():
        per_node[pod.spec.node_name] = per_node.get(pod.spec.node_name, 0) + 1
    assert sorted(per_node.values()) == [4] * nodes


def test_garbage_collector_deletes_owned_pods(cluster, core, namespace):
    owner = core.create_namespaced_config_map(
        namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner"))
    )
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_pod(namespace, gpu_pod("owned", 1, ownerReferences=[ref]))
    core.delete_namespaced_config_map("owner", namespace)

    def gone():
        try:
            read_pod(core, namespace, "owned")
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=60, what="garbage collector to delete the owned pod")


def test_crd_cel_rule_rejects_with_its_message(cluster, namespace):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.platform.darwin.test"},
        "spec": {
            "group": "platform.darwin.test",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "min must not exceed max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.platform.darwin.test"
    )
    good = {
        "apiVersion": "platform.darwin.test/v1",
        "kind": "Widget",
        "metadata": {"name": "good", "namespace": namespace},
        "spec": {"min": 1, "max": 2},
    }
    bad = {
        **good,
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"min": 3, "max": 2},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(good))
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert "min must not exceed max" in result.stderr


def _wait_pod_ready(core, namespace, name):
    def ready_pod():
        pod = read_pod(core, namespace, name)
        return pod if is_ready(pod) else None

    return wait_for(ready_pod, timeout=30, what=f"pod {name} Ready")


def test_crash_stage_bumps_restart_count(core, namespace):
    core.create_namespaced_pod(namespace, gpu_pod("crashy", 1))
    _wait_pod_ready(core, namespace, "crashy")
    core.patch_namespaced_pod(
        "crashy", namespace, {"metadata": {"annotations": {"darwin.test/inject": "crash"}}}
    )

    def restarted():
        pod = read_pod(core, namespace, "crashy")
        return pod if pod.status.container_statuses[0].restart_count >= 1 else None

    pod = wait_for(restarted, timeout=30, what="restartCount to rise")
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 1


def test_fail_stage_sets_phase_failed(core, namespace):
    core.create_namespaced_pod(namespace, gpu_pod("doomed", 1))
    _wait_pod_ready(core, namespace, "doomed")
    core.patch_namespaced_pod(
        "doomed", namespace, {"metadata": {"annotations": {"darwin.test/inject": "fail"}}}
    )
    wait_for(
        lambda: read_pod(core, namespace, "doomed").status.phase == "Failed",
        timeout=30,
        what="phase Failed",
    )


def test_ready_delay_annotation_holds_pod_unready(core, namespace):
    core.create_namespaced_pod(
        namespace, gpu_pod("slow", 1, annotations={"darwin.test/ready-after": "1h"})
    )
    wait_for(
        lambda: read_pod(core, namespace, "slow").status.phase == "Running",
        timeout=30,
        what="slow pod Running",
    )
    # Meanwhile a pod without the annotation goes Ready: the slow one must still be unready then.
    core.create_namespaced_pod(namespace, gpu_pod("fast", 1))
    _wait_pod_ready(core, namespace, "fast")
    assert not is_ready(read_pod(core, namespace, "slow"))


def test_not_ready_stage_and_recovery(core):
    name = core.list_node().items[-1].metadata.name

    def ready_status():
        node = core.read_node(name)
        return next(c.status for c in node.status.conditions if c.type == "Ready")

    core.patch_node(name, {"metadata": {"annotations": {"darwin.test/inject": "not-ready"}}})
    try:
        wait_for(lambda: ready_status() == "False", timeout=30, what="node NotReady")
    finally:
        core.patch_node(name, {"metadata": {"annotations": {"darwin.test/inject": None}}})
    wait_for(lambda: ready_status() == "True", timeout=30, what="node Ready again")


def test_rbac_denies_a_service_account_without_a_role(cluster, core, namespace):
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(
                audiences=["https://kubernetes.default.svc.cluster.local"], expiration_seconds=600
            )
        ),
    ).status.token
    with open(cluster.kubeconfig) as file:
        kubeconfig = yaml.safe_load(file)["clusters"][0]["cluster"]
    configuration = k8s.Configuration()
    configuration.host = kubeconfig["server"]
    configuration.ssl_ca_cert = kubeconfig["certificate-authority"]
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = k8s.CoreV1Api(k8s.ApiClient(configuration))
    with pytest.raises(ApiException) as denied:
        as_nobody.list_namespaced_pod(namespace)
    # 403, not 401: the token authenticated and RBAC said no.
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body
