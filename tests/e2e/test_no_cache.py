"""Without model.cache every pod downloads the whole model: its pods ask for the room
(model.size as ephemeral storage) and the endpoint warns, against the real API server and
scheduler (kwok nodes report 28Ti of local disk)."""

from __future__ import annotations

import pytest

from tests.e2e.checks import (
    apply,
    condition,
    endpoint_pods,
    endpoint_ready,
    endpoint_status,
    event_reasons,
)
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

MODEL = "FINAL-Bench/Darwin-398B-JGOS"


def test_pods_request_room_for_the_download_and_the_endpoint_warns(cluster, namespace, operator):
    apply(
        cluster,
        namespace,
        endpoint_manifest("nocache", replicas=1, model={"name": MODEL, "size": "800Gi"}),
    )
    status = wait_for(endpoint_ready(cluster, namespace, "nocache", 1), timeout=90, what="Ready")
    (pod,) = endpoint_pods(cluster, namespace, "nocache")
    assert pod["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "832Gi"
    warning = condition(status, "WeightsCached")
    assert (warning["status"], warning["reason"]) == ("False", "EveryPodDownloads")
    assert "every pod downloads the whole model" in warning["message"]
    assert "800Gi" in warning["message"]
    wait_for(
        lambda: "EveryPodDownloads" in event_reasons(cluster, namespace, "nocache"),
        timeout=30,
        what="the EveryPodDownloads Warning Event",
    )


def test_a_model_no_node_has_disk_for_waits_for_capacity_and_says_why(cluster, namespace, operator):
    apply(
        cluster,
        namespace,
        endpoint_manifest("toobig", replicas=1, model={"name": MODEL, "size": "40Ti"}),
    )

    def waiting() -> dict | None:
        groups = endpoint_status(cluster, namespace, "toobig").get("groups") or []
        if groups and groups[0]["phase"] == "WaitingForCapacity":
            return groups[0]
        return None

    group = wait_for(waiting, timeout=60, what="group 0 WaitingForCapacity")
    assert "ephemeral-storage" in group["message"], group
