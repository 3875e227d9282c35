"""Prometheus metrics of the operator (served on /metrics by `darwin-operator run`)."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

ENDPOINT_LABELS = ("namespace", "endpoint")

ENDPOINT_REPLICAS = Gauge(
    "darwin_endpoint_replicas",
    "Replica groups of an endpoint by state (desired, current, ready, updated, available).",
    [*ENDPOINT_LABELS, "state"],
)
GROUP_RECREATIONS = Counter(
    "darwin_group_recreations_total",
    "Groups deleted to be created anew, by reason.",
    [*ENDPOINT_LABELS, "reason"],
)
GROUP_STARTUP = Histogram(
    "darwin_group_startup_seconds",
    "Time from a group's first pod created to the whole group Ready.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200),
)
ROLLOUT_IN_PROGRESS = Gauge(
    "darwin_rollout_in_progress",
    "1 while groups of an older revision are being replaced.",
    ENDPOINT_LABELS,
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
GPUS = Gauge(
    "darwin_gpus",
    "GPUs of an endpoint: requested by bound pods, and held by Ready groups.",
    [*ENDPOINT_LABELS, "state"],
)

REPLICA_STATES = ("desired", "current", "ready", "updated", "available")
GPU_STATES = ("requested", "ready")


def forget_endpoint(namespace: str, endpoint: str) -> None:
    """Drop the series of a deleted endpoint, so dashboards do not show ghosts."""
    for state in REPLICA_STATES:
        _remove(ENDPOINT_REPLICAS, namespace, endpoint, state)
    for state in GPU_STATES:
        _remove(GPUS, namespace, endpoint, state)
    _remove(ROLLOUT_IN_PROGRESS, namespace, endpoint)


def _remove(metric, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
