"""The operator reads the cluster from watches: once an endpoint is Ready and nothing changes,
its resyncs send the API server no request, reads or writes (the API server's own request
counts say so)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from kubernetes import client as k8s

from darwin_operator.cluster import FIELD_MANAGER, Cluster
from tests.e2e.checks import apply, endpoint_ready
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
# What a reconcile used to ask for each time, and the operator's own writes while nothing moves.
# (Not GET darwinendpoints: the garbage collector reads an owner it has not seen yet.)
OPERATOR_REQUESTS = {
    ("LIST", "pods", ""),
    ("GET", "pods", ""),
    ("LIST", "services", ""),
    ("LIST", "poddisruptionbudgets", ""),
    ("LIST", "controllerrevisions", ""),
    ("LIST", "nodes", ""),
    ("PATCH", "darwinendpoints", "status"),
    ("PATCH", "services", ""),
    ("PATCH", "poddisruptionbudgets", ""),
}
# Events are counted by their reporter instead: other components post some at any time.
# The API server's own NodePort repair loop lists every Service cluster-wide every 3 minutes
# (kube-apiserver's repairLoopInterval); the operator here watches one namespace, so it reads
# Services at namespace scope and that cluster-wide LIST is not its.
NOT_THE_OPERATORS = {("LIST", "services", "", "cluster")}


def apiserver_requests(cluster) -> Counter:
    raw = Cluster(cluster.api, workers=1)
    method, url, headers, _, _ = raw.client.param_serialize(
        method="GET", resource_path="/metrics", header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
    )  # fmt: skip
    text = raw.client.call_api(method, url, header_params=headers, _request_timeout=30).read()
    counts: Counter = Counter()
    for match in _SAMPLE.finditer(text.decode()):
        labels = dict(_LABEL.findall(match["labels"]))
        key = tuple(labels.get(k, "") for k in ("verb", "resource", "subresource", "scope"))
        if key not in NOT_THE_OPERATORS:
            counts[key[:3]] += float(match["value"])
    return counts


def operator_events(core) -> list[str]:
    """The operator's Events in the cluster (it posts each as a new object)."""
    return sorted(
        e.metadata.uid
        for e in core.list_event_for_all_namespaces().items
        if e.reporting_component == FIELD_MANAGER
    )


def unchanged_reconciles(operator) -> float:
    found = re.search(
        r'^darwin_reconcile_total\{result="unchanged"\} (\S+)$', operator.metrics(), re.M
    )
    return float(found[1]) if found else 0.0


def test_resyncs_of_an_endpoint_at_rest_send_the_api_server_nothing(cluster, namespace, operator):
    apply(cluster, namespace, endpoint_manifest("at-rest", replicas=2, ready_after="1s"))
    wait_for(endpoint_ready(cluster, namespace, "at-rest", 2), timeout=90, what="Ready 2/2")
    # at rest once a reconcile has found nothing new since one that wrote nothing
    wait_for(
        lambda: unchanged_reconciles(operator) >= 1,
        timeout=10 * operator.resync_seconds,
        what="a reconcile skipped as unchanged",
    )
    # The API server counts every client's requests: the namespaces earlier tests left must be
    # gone first (the namespace controller lists and deletes in each while it empties it, and
    # what it deletes brings Events).
    core = k8s.CoreV1Api(cluster.api)
    wait_for(
        lambda: not [n for n in core.list_namespace().items if n.metadata.deletion_timestamp],
        timeout=300,
        what="the namespaces of earlier tests deleted",
    )
    skipped = unchanged_reconciles(operator)
    events_before = operator_events(core)
    before = apiserver_requests(cluster)
    wait_for(
        lambda: unchanged_reconciles(operator) >= skipped + 2,
        timeout=10 * operator.resync_seconds,
        what="two more resyncs",
    )
    after = apiserver_requests(cluster)
    sent = {
        k: after[k] - before.get(k, 0) for k in OPERATOR_REQUESTS if after[k] > before.get(k, 0)
    }
    assert not sent, f"requests during resyncs at rest: {sent}"
    assert operator_events(core) == events_before, "Events posted during resyncs at rest"
