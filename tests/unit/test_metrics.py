"""The operator's metrics: what a reconcile records, startup phases from cluster timestamps,
bounded labels, and no series left behind by a deleted endpoint."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from darwin_operator import metrics
from darwin_operator.cluster import api_verb
from darwin_operator.observed import ObservedGroup, ObservedPod
from darwin_operator.reconciler import Reconciler
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object

ALLOWED_LABELS = {"namespace", "endpoint", "group", "phase", "state", "reason", "result"}
ALLOWED_LABELS |= {"verb", "code"}


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def series_of(namespace: str, endpoint: str) -> list[str]:
    return [
        f"{sample.name}{sample.labels}"
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == namespace and sample.labels.get("endpoint") == endpoint
    ]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reconcile_to_ready(name: str, namespace: str = "llm"):
    """Created and admitted at 1000 (one reconcile), bound at 1015, Ready at 1100."""
    fake = FakeCluster(endpoint_object(name, namespace, spec_doc()))
    clock = Clock(1000.0)
    fake.clock = 1000.0

    async def scenario() -> None:
        reconciler = Reconciler(fake, clock=clock)  # type: ignore[arg-type]
        await reconciler.reconcile(namespace, name)  # creates both groups, gated, and admits them
        clock.now = 1010.0
        await reconciler.reconcile(namespace, name)
        fake.bind_all(at=1015.0)
        clock.now = 1020.0
        await reconciler.reconcile(namespace, name)
        fake.ready_all(at=1100.0)
        clock.now = 1105.0
        await reconciler.reconcile(namespace, name)
        await reconciler.reconcile(namespace, name)  # nothing new to observe
        # a restarted operator reads the same cluster: it observes nothing again
        await Reconciler(fake, clock=clock).reconcile(namespace, name)  # type: ignore[arg-type]

    asyncio.run(scenario())
    return fake


def test_a_reconciled_endpoint_reports_replicas_phases_and_gpus():
    fake = reconcile_to_ready("metrics-ready")
    assert fake.endpoint["status"]["phase"] == "Ready"
    ep = {"namespace": "llm", "endpoint": "metrics-ready"}
    assert value("darwin_endpoint_replicas", **ep, state="ready") == 2
    assert value("darwin_endpoint_replicas", **ep, state="desired") == 2
    for phase in metrics.ENDPOINT_PHASES:
        expected = 1 if phase == "Ready" else 0
        assert value("darwin_endpoint_phase", **ep, phase=phase) == expected
    for group in ("0", "1"):
        assert value("darwin_group_phase", **ep, group=group, phase="Ready") == 1
        assert value("darwin_group_phase", **ep, group=group, phase="Starting") is None
    assert value("darwin_gpus", **ep, state="requested") == 12  # 2 groups of TP2 x PP3
    assert value("darwin_gpus", **ep, state="ready") == 12
    assert value("darwin_group_recreations_total", **ep, reason="Incomplete") == 0
    assert value("darwin_group_recreations_total", **ep, reason="ScaleDown") is None
    assert value("darwin_rollout_paused", **ep) == 0


def test_startup_phases_are_measured_from_cluster_timestamps_once_per_group():
    reconcile_to_ready("metrics-startup")
    ep = {"namespace": "llm", "endpoint": "metrics-startup"}
    expected = {"Scheduling": 15, "Starting": 85, "Total": 100}
    # admitted in the reconcile that created them: never seen waiting
    assert value("darwin_group_startup_seconds_count", **ep, phase="WaitingForCapacity") is None
    for phase, seconds in expected.items():
        assert value("darwin_group_startup_seconds_count", **ep, phase=phase) == 2, phase
        assert value("darwin_group_startup_seconds_sum", **ep, phase=phase) == 2 * seconds, phase


def pod(name: str, **facts) -> ObservedPod:
    return ObservedPod(name=name, created_at=100.0, **facts)


BOUND = dict(admitted_at=110.0, scheduled_at=112.0)
READY = dict(BOUND, ready=True, ready_since=150.0)


@pytest.mark.parametrize(
    "old, new, pods, admitted_now, expected",
    [
        ("Pending", "WaitingForCapacity", [pod("a")], None, {}),
        ("WaitingForCapacity", "Scheduling", [pod("a")], 109.0, {"WaitingForCapacity": 9}),
        (
            "Scheduling",
            "Starting",
            [pod("a", **BOUND), pod("b", **dict(BOUND, scheduled_at=114.0))],
            None,
            {"Scheduling": 4},
        ),
        ("Starting", "Ready", [pod("a", **READY)], None, {"Starting": 38, "Total": 50}),
        # the operator was down the whole startup: every phase at once, from the timestamps
        (
            None,
            "Ready",
            [pod("a", **READY)],
            None,
            {"WaitingForCapacity": 10, "Scheduling": 2, "Starting": 38, "Total": 50},
        ),
        # ungated (gang None): no capacity wait; scheduling counts from creation
        (
            "Pending",
            "Starting",
            [pod("a", scheduled_at=103.0)],
            None,
            {"Scheduling": 3},
        ),
        ("Ready", "Ready", [pod("a", **READY)], None, {}),
        ("Ready", "Broken", [pod("a", **READY)], None, {}),
        # a pod not yet bound: the Scheduling phase is not over for the group
        ("Scheduling", "Scheduling", [pod("a", **BOUND), pod("b")], None, {}),
    ],
)
def test_startup_durations(old, new, pods, admitted_now, expected):
    group = ObservedGroup(0, tuple(pods))
    assert metrics.startup_durations(old, new, group, admitted_now) == expected


def test_a_deleted_endpoint_leaves_no_series_behind():
    reconcile_to_ready("metrics-gone")
    # a counter incremented elsewhere (e.g. the health logic), with a reason of its own
    metrics.GROUP_RECREATIONS.labels("llm", "metrics-gone", "SomeReason").inc()
    assert len(series_of("llm", "metrics-gone")) > 20
    reconcile_to_ready("metrics-stays")
    before = series_of("llm", "metrics-stays")
    metrics.forget_endpoint("llm", "metrics-gone")
    assert series_of("llm", "metrics-gone") == []
    assert series_of("llm", "metrics-stays") == before


def test_group_phase_series_follow_the_groups():
    metrics.set_group_phases("llm", "metrics-groups", {0: "Ready", 1: "Starting", 2: "Pending"})
    metrics.set_group_phases("llm", "metrics-groups", {0: "Ready", 1: "Ready"})
    groups = {
        (s.labels["group"], s.labels["phase"])
        for family in REGISTRY.collect()
        if family.name == "darwin_group_phase"
        for s in family.samples
        if s.labels["endpoint"] == "metrics-groups"
    }
    assert groups == {("0", "Ready"), ("1", "Ready")}


def test_labels_are_bounded():
    reconcile_to_ready("metrics-labels")
    for family in REGISTRY.collect():
        if not family.name.startswith("darwin_"):
            continue
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= ALLOWED_LABELS, sample


@pytest.mark.parametrize(
    "method, path, verb",
    [
        ("GET", "/api/v1/namespaces/llm/pods", "list"),
        ("GET", "/api/v1/pods", "list"),
        ("GET", "/api/v1/nodes", "list"),
        ("GET", "/api/v1/namespaces/llm/secrets/hf-token", "get"),
        ("GET", "/apis/serving.darwin.ai/v1alpha1/namespaces/llm/darwinendpoints/e", "get"),
        ("GET", "/apis/policy/v1/namespaces/llm/poddisruptionbudgets", "list"),
        ("POST", "/api/v1/namespaces/llm/pods", "create"),
        ("PATCH", "/api/v1/namespaces/llm/pods/p", "patch"),
        ("DELETE", "/api/v1/namespaces/llm/pods/p", "delete"),
    ],
)
def test_api_verbs(method, path, verb):
    assert api_verb(method, path) == verb


def test_a_group_whose_pod_vanished_is_counted_as_a_recreation_with_its_reason():
    """A 1-pod group's pod deleted by hand: nothing is left to mark, yet the recreation is in
    the status and in darwin_group_recreations_total, by reason, once."""
    fake = reconcile_to_ready("metrics-vanished")
    labels = {"namespace": "llm", "endpoint": "metrics-vanished", "reason": "MemberDeleted"}
    assert value("darwin_group_recreations_total", **labels) == 0
    del fake.pods["metrics-vanished-1-0"]

    async def scenario() -> None:
        reconciler = Reconciler(fake, clock=Clock(1200.0))  # type: ignore[arg-type]
        await reconciler.reconcile("llm", "metrics-vanished")  # on record
        await reconciler.reconcile("llm", "metrics-vanished")  # created again
        await reconciler.reconcile("llm", "metrics-vanished")

    asyncio.run(scenario())
    assert value("darwin_group_recreations_total", **labels) == 1
    group = fake.endpoint["status"]["groups"][1]
    assert [r["reason"] for r in group["recreations"]] == ["MemberDeleted"]
    assert group["restarts"] == 1 and "all 1 pod of the group gone" in group["lastFailure"]
    assert "metrics-vanished-1-0" in fake.pods
