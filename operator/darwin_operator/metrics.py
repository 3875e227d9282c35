"""Prometheus metrics of the operator (served on /metrics by `darwin-operator run`).

Labels are bounded: `namespace` and `endpoint` name a DarwinEndpoint, `group` is a group index
(below spec.replicas), and every other label takes values from a closed set (phases, states,
reasons, verbs, HTTP codes). Nothing carries a pod name, a uid or free text. Every series of an
endpoint is dropped when the endpoint is deleted (`forget_endpoint`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

from darwin_operator.observed import ObservedGroup
from darwin_operator.vocabulary import STARTUP_ORDER, EndpointPhase, GroupPhase

# No `_created` twin of every counter and histogram series: it doubles the series for nothing
# a dashboard uses.
disable_created_metrics()

ENDPOINT_LABELS = ("namespace", "endpoint")

# Metrics labelled by endpoint, with their label names: forget_endpoint() clears them all.
_PER_ENDPOINT: list[tuple[MetricWrapperBase, tuple[str, ...]]] = []


def _per_endpoint(metric_type: Any, name: str, doc: str, extra: Iterable[str] = (), **kw: Any):
    labels = (*ENDPOINT_LABELS, *extra)
    metric = metric_type(name, doc, labels, **kw)
    _PER_ENDPOINT.append((metric, labels))
    return metric


ENDPOINT_REPLICAS = _per_endpoint(
    Gauge,
    "darwin_endpoint_replicas",
    "Replica groups of an endpoint by state (desired, current, ready, updated, available).",
    ["state"],
)
ENDPOINT_PHASE = _per_endpoint(
    Gauge,
    "darwin_endpoint_phase",
    "1 for the endpoint's current phase (status.phase), 0 for the other phases.",
    ["phase"],
)
GROUP_PHASE = _per_endpoint(
    Gauge,
    "darwin_group_phase",
    "1 for the current phase of each replica group (by group index); other phases have no series.",
    ["group", "phase"],
)
GROUP_RECREATIONS = _per_endpoint(
    Counter,
    "darwin_group_recreations_total",
    "Groups deleted to be created anew, by reason.",
    ["reason"],
)
GROUP_STARTUP = _per_endpoint(
    Histogram,
    "darwin_group_startup_seconds",
    "Seconds a group spent in each startup phase, observed when it leaves the phase: "
    "WaitingForCapacity (created, gated -> gates lifted), Scheduling (-> every pod bound), "
    "Starting (-> every pod Ready); Total is first pod created -> group Ready.",
    ["phase"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600),
)
ROLLOUT_IN_PROGRESS = _per_endpoint(
    Gauge,
    "darwin_rollout_in_progress",
    "1 while groups of an older revision are being replaced.",
)
ROLLOUT_PAUSED = _per_endpoint(
    Gauge,
    "darwin_rollout_paused",
    "1 when spec.rollout.paused freezes the endpoint's rollout.",
)
ROLLOUT_DURATION = Histogram(
    "darwin_rollout_duration_seconds",
    "Time from a new revision to every group on it.",
    buckets=(60, 300, 600, 1800, 3600, 7200, 14400, 28800),
)
RECONCILE_TOTAL = Counter(
    "darwin_reconcile_total", "Reconciles of an endpoint, by result.", ["result"]
)
RECONCILE_DURATION = Histogram(
    "darwin_reconcile_duration_seconds",
    "Wall time of one reconcile of one endpoint.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GPUS = _per_endpoint(
    Gauge,
    "darwin_gpus",
    "GPUs of an endpoint: requested by its pods bound to nodes, and held by Ready groups.",
    ["state"],
)
API_ERRORS = Counter(
    "darwin_api_errors_total",
    "Kubernetes API requests of the operator that failed, by verb and HTTP status code "
    "(code 0: no response). Includes the answers the operator expects and handles, such as "
    "404 on a delete or 409 on a create.",
    ["verb", "code"],
)

REPLICA_STATES = ("desired", "current", "ready", "updated", "available")
GPU_STATES = ("requested", "ready")
ENDPOINT_PHASES = tuple(p.value for p in EndpointPhase)
STARTUP_PHASES = ("WaitingForCapacity", "Scheduling", "Starting", "Total")


def set_endpoint_phase(namespace: str, endpoint: str, phase: str) -> None:
    for candidate in ENDPOINT_PHASES:
        ENDPOINT_PHASE.labels(namespace, endpoint, candidate).set(1 if candidate == phase else 0)


def set_group_phases(namespace: str, endpoint: str, phases: Mapping[int, str]) -> None:
    """One series per group, for its current phase; series of other phases and of groups that
    are gone are removed."""
    wanted = {(namespace, endpoint, str(index), phase) for index, phase in phases.items()}
    for labels in _group_phase_series.get((namespace, endpoint), set()) - wanted:
        _remove(GROUP_PHASE, *labels)
    for labels in wanted:
        GROUP_PHASE.labels(*labels).set(1)
    _group_phase_series[(namespace, endpoint)] = wanted


# The group-phase series set per endpoint: collecting the metric to find them would read every
# endpoint's series on each reconcile.
_group_phase_series: dict[tuple[str, str], set[tuple[str, ...]]] = {}


def init_recreations(namespace: str, endpoint: str, reasons: Iterable[str]) -> None:
    """Create the counters at 0, so that the first recreation shows in increase() and rate()."""
    for reason in reasons:
        GROUP_RECREATIONS.labels(namespace, endpoint, reason)


# A group observed further along the start than it was in the previous status has left the
# phases in between.
_PROGRESS = {phase.value: i for i, phase in enumerate(STARTUP_ORDER)}


def startup_durations(
    old_phase: str | None, new_phase: str, group: ObservedGroup | None, admitted_now: float | None
) -> dict[str, float]:
    """Seconds spent in each startup phase the group left between two reconciles, from the
    timestamps the cluster keeps (pod creation, the admittedAt annotation, PodScheduled and
    Ready transitions), so an operator restart neither loses nor repeats an observation.

    `old_phase` is the group's phase in the status the cluster holds (None: not there yet);
    `admitted_now` is when this reconcile lifted the group's gates, if it did."""
    before = _PROGRESS.get(old_phase or GroupPhase.PENDING)
    after = _PROGRESS.get(new_phase)
    if before is None or after is None or after <= before or group is None:
        return {}
    pods = [p for p in group.pods if not p.deleting]
    if not pods:
        return {}
    created = _min(p.created_at for p in pods)
    admitted = _min(p.admitted_at for p in pods) or admitted_now
    bound = _max_of_all(p.scheduled_at for p in pods)
    ready = _max_of_all(p.ready_since for p in pods)
    spans = {
        "WaitingForCapacity": (created, admitted),
        "Scheduling": (admitted or created, bound),
        "Starting": (bound, ready),
        "Total": (created, ready),
    }
    durations = {}
    for phase, (start, end) in spans.items():
        left = _PROGRESS.get(phase, _PROGRESS[GroupPhase.STARTING])  # Total: left with Starting
        if before <= left < after and start is not None and end is not None:
            durations[phase] = max(0.0, end - start)
    return durations


def observe_startup(namespace: str, endpoint: str, durations: Mapping[str, float]) -> None:
    for phase, seconds in durations.items():
        GROUP_STARTUP.labels(namespace, endpoint, phase).observe(seconds)


def _min(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max_of_all(values: Iterable[float | None]) -> float | None:
    """The latest of the timestamps, or None if any pod lacks it (the phase is not over)."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return max(values)


def forget_endpoint(namespace: str, endpoint: str) -> None:
    """Drop every series of a deleted endpoint, so dashboards do not show ghosts."""
    _group_phase_series.pop((namespace, endpoint), None)
    for metric, labelnames in _PER_ENDPOINT:
        for labels in _children(metric, labelnames, namespace, endpoint):
            _remove(metric, *labels)


def _children(
    metric: MetricWrapperBase, labelnames: tuple[str, ...], namespace: str, endpoint: str
) -> set[tuple[str, ...]]:
    """Label values of the metric's series that belong to one endpoint (public API only)."""
    found = set()
    for family in metric.collect():
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") == namespace and labels.get("endpoint") == endpoint:
                found.add(tuple(labels[name] for name in labelnames))
    return found


def _remove(metric, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
