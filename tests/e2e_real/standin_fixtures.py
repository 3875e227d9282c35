"""Fixtures and read-backs of the vLLM stand-in's real-node tests."""

from __future__ import annotations

import json

import pytest

from darwin_operator.vocabulary import LABEL_ENDPOINT
from tests.e2e.checks import endpoint_status, is_ready
from tests.e2e.waiting import wait_for
from tests.e2e_real import standin_endpoints as se

STARTUP = 240  # seconds for a group to go Ready on this shared 2-core machine


@pytest.fixture(scope="session")
def standin_image(cluster) -> str:
    cluster.import_image(se.images.build("vllm-standin"))
    return se.images.STANDIN_IMAGE


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    return se.write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def weights(cluster, namespace, weights_dir):
    """The weights on every node, claimed in the test's namespace (see weights_volume)."""
    volume, claim = se.weights_volume(weights_dir, namespace)
    for item in (volume, claim):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(item))
    yield claim["metadata"]["name"]
    cluster.kubectl("delete", "pv", volume["metadata"]["name"], "--wait=false", check=False)


def ready(cluster, namespace: str, name: str, timeout: float = STARTUP) -> dict:
    def all_groups_ready():
        status = endpoint_status(cluster, namespace, name)
        return status if status.get("readyReplicas") == status.get("replicas", -1) > 0 else None

    return wait_for(all_groups_ready, timeout=timeout, what=f"{name} Ready")


def pods(cluster, namespace: str, name: str, **labels: str) -> list[dict]:
    selector = ",".join(
        [f"{LABEL_ENDPOINT}={name}", *(f"serving.darwin.ai/{k}={v}" for k, v in labels.items())]
    )
    return cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]


def uids(pods: list[dict]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


def recreated(cluster, namespace, name, old_uids, reasons, timeout) -> dict:
    """Wait for a whole new group, Ready, and return its status, which says why it broke."""

    def whole_new_group_ready() -> bool:
        group = pods(cluster, namespace, name)
        return bool(group) and not (uids(group) & old_uids) and all(map(is_ready, group))

    wait_for(whole_new_group_ready, timeout=timeout, what=f"{name}'s group recreated whole")
    group = ready(cluster, namespace, name)["groups"][0]
    assert group["restarts"] >= 1, group
    assert any(reason in group.get("lastFailure", "") for reason in reasons), group
    return group
