"""The words the operator and its cluster share (pure, and imports nothing of the package).

Label and annotation keys, the scheduling gate, the names of the objects an endpoint is made of,
the phases and reasons the status and metrics speak in, the one time format, the one stable hash.
Every other module takes them from here, so a key or a phase is spelled once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# ---- labels, on every pod and object the operator creates ----

LABEL_PREFIX = "serving.darwin.ai/"
LABEL_ENDPOINT = LABEL_PREFIX + "endpoint"
LABEL_GROUP = LABEL_PREFIX + "group"
LABEL_RANK = LABEL_PREFIX + "rank"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_REVISION = LABEL_PREFIX + "revision"
# Which incarnation of its group a pod belongs to: a group recreated or replaced at the same
# index is a new incarnation with pod names of its own (pod_name), created while the pods of the
# one before may still terminate. Absent on pods of an operator before incarnations: 0.
LABEL_INCARNATION = LABEL_PREFIX + "incarnation"
# "true" on leaders that belong behind the client Service; "false" drains a group before deletion.
LABEL_SERVING = LABEL_PREFIX + "serving"
# On staging and prune pods (weights.py): the key of the copy they write (a hash of volume,
# model and revision).
LABEL_WEIGHTS = LABEL_PREFIX + "weights"
# Our scheduling gate: a gated pod waits for the operator's gang admission (capacity.py).
SCHEDULING_GATE = LABEL_PREFIX + "gang"

# ---- annotations ----

# On the endpoint: a new value asks for a rolling restart (it is part of the revision).
ANNOTATION_RESTARTED_AT = LABEL_PREFIX + "restartedAt"
# On Services and the PDB the operator owns: the hash of their rendered form.
ANNOTATION_SPEC_HASH = LABEL_PREFIX + "specHash"
# Written by the operator on pods, so that the state they mark lives in the cluster.
ANNOTATION_ADMITTED_AT = LABEL_PREFIX + "admittedAt"  # when the group's gates were lifted
ANNOTATION_DRAIN_STARTED_AT = LABEL_PREFIX + "drainStartedAt"  # when the leader left the Service
# Stamped on every pod before the operator deletes any pod of its group: tells the operator's own
# deletions apart from anyone else's (health.py), even when it was killed part way through.
ANNOTATION_DELETE_REASON = LABEL_PREFIX + "deleteReason"
# On every pod of a group the operator found broken: "<fault> <time> <message>" (health.py).
ANNOTATION_BROKEN = LABEL_PREFIX + "broken"

# ---- names ----

ROLE_LEADER = "leader"
ROLE_WORKER = "worker"
LEADER_RANK = 0

DNS_LABEL_MAX_LENGTH = 63
# Name budget for indices: replicas <= 512 plus surge and podsPerGroup <= 64 fit in 4 and 2 digits.
MAX_GROUP_INDEX = 9999
MAX_RANK = 99


def pod_name(endpoint: str, group: int, rank: int, incarnation: int = 0) -> str:
    """`{endpoint}-{group}-{rank}` for a group's first incarnation (the names groups always had,
    so groups from before incarnations are adopted as incarnation 0), then
    `{endpoint}-{group}-{rank}-{incarnation}`: a new incarnation never waits for the names of
    the old one, whose pods may stay Terminating for as long as their node is unreachable."""
    base = f"{endpoint}-{group}-{rank}"
    return base if incarnation == 0 else f"{base}-{incarnation}"


def pod_hostname(endpoint: str, group: int, rank: int, incarnation: int = 0) -> str:
    """The pod's hostname, its DNS name `{hostname}.{headless Service}` (a DNS label): the pod
    name, with the endpoint's part shortened if it would be too long. Unique per incarnation
    within the endpoint's headless Service, so a DNS name never stands for two pods, and
    workers of a new incarnation never find the old leader under their leader's name."""
    suffix = pod_name("", group, rank, incarnation)
    return endpoint[: DNS_LABEL_MAX_LENGTH - len(suffix)] + suffix


def headless_service_name(endpoint: str) -> str:
    """The headless Service over every pod: it gives each pod `{pod}.{this}` as a DNS name."""
    return f"{endpoint}-pods"


def client_service_name(endpoint: str) -> str:
    """The Service clients use; it selects serving leaders."""
    return endpoint


def pdb_name(endpoint: str) -> str:
    """The PodDisruptionBudget over every member of the endpoint's groups."""
    return f"{endpoint}-members"


def revision_object_name(endpoint: str, revision: str) -> str:
    """The ControllerRevision that keeps a revision's spec (revisions.py)."""
    return f"{endpoint}-{revision}"


def _longest_suffix() -> int:
    derived = (
        pod_name("", MAX_GROUP_INDEX, MAX_RANK),
        headless_service_name(""),
        client_service_name(""),
        pdb_name(""),
    )
    return max(len(name) for name in derived)


# Every derived name is `{endpoint}{suffix}` and must stay a DNS label (pods' hostnames, Services).
MAX_ENDPOINT_NAME_LENGTH = DNS_LABEL_MAX_LENGTH - _longest_suffix()


def role_of(rank: int) -> str:
    return ROLE_LEADER if rank == LEADER_RANK else ROLE_WORKER


def group_selector(endpoint: str, group: int, incarnation: int = 0) -> dict[str, str]:
    """Labels that select every pod of one incarnation of a group."""
    return {LABEL_ENDPOINT: endpoint, LABEL_GROUP: str(group), LABEL_INCARNATION: str(incarnation)}


def leader_selector(endpoint: str) -> str:
    """The label selector of the endpoint's leaders as text (status.selector, for the HPA)."""
    return f"{LABEL_ENDPOINT}={endpoint},{LABEL_ROLE}={ROLE_LEADER}"


# ---- phases and reasons ----


class GroupPhase(StrEnum):
    PENDING = "Pending"  # pods being created
    WAITING_FOR_CAPACITY = "WaitingForCapacity"  # gated; the whole group does not fit yet
    DOWNLOADING = "Downloading"  # gated; no nodes with free GPUs hold its weights yet (staging)
    SCHEDULING = "Scheduling"  # gates lifted, not every pod bound yet
    STARTING = "Starting"  # every pod bound, not every pod Ready
    LOADING = "Loading"  # Starting, with staged weights: loading them from the node's disk
    READY = "Ready"
    BROKEN = "Broken"  # a member failed: the group is recreated whole (health.py)
    BACKING_OFF = "BackingOff"  # deleted after a failure; created again when its backoff ends
    DRAINING = "Draining"  # leader out of the Service, waiting drainSeconds before deletion
    TERMINATING = "Terminating"


# The phases of a start, in the order a group goes through them (status startup spans, metrics).
STARTUP_ORDER = (
    GroupPhase.PENDING,
    GroupPhase.DOWNLOADING,
    GroupPhase.WAITING_FOR_CAPACITY,
    GroupPhase.SCHEDULING,
    GroupPhase.STARTING,
    GroupPhase.LOADING,
    GroupPhase.READY,
)


class EndpointPhase(StrEnum):
    """status.phase of a DarwinEndpoint."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"  # a spec the operator cannot act on, or the restart budget is spent


class DeleteReason(StrEnum):
    """Why the operator deletes a group (the deleteReason stamp, the recreation metric)."""

    SCALE_DOWN = "ScaleDown"
    SCHEDULING_TIMEOUT = "SchedulingTimeout"  # released but could not be placed in time
    INCOMPLETE = "Incomplete"  # a creation cut short that cannot be completed in place
    ROLLOUT = "Rollout"  # an old revision, replaced in place (rollout.py)
    UNFINISHED_DELETE = "UnfinishedDelete"  # some pods were deleted, the rest must follow
    BROKEN = "Broken"  # found broken (health.py) and its recreation is on record in the status


class Fault(StrEnum):
    """Why a group was found broken; also the `reason` label of the recreation metric."""

    POD_FAILED = "PodFailed"
    EVICTED = "Evicted"
    MEMBER_DELETED = "MemberDeleted"
    CONTAINER_RESTARTED = "ContainerRestarted"
    NODE_LOST = "NodeLost"
    LEADER_UNREADY = "LeaderUnready"
    STARTUP_TIMEOUT = "StartupTimeout"


# ---- time: RFC 3339 in UTC, to the millisecond ----
# Milliseconds, because some times are identities (a recreation is known by its time, and must
# compare equal after a round trip through an annotation or the status) and drainSeconds is a
# guarantee that rounding must not shorten.


def format_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: str | None) -> float | None:
    """RFC 3339 timestamp (as the API writes it) to seconds since the epoch; None if absent/bad."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def stamp(now: float) -> float:
    """`now` as it reads back from its text form."""
    return parse_time(format_time(now)) or now


# ---- helpers every reader of API objects needs ----


def stable_hash(value: Any, length: int = 16) -> str:
    """A short hash of a JSON value that does not depend on key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def find_condition(conditions: Iterable[Any] | None, kind: str) -> Any | None:
    """The condition of type `kind`, from API dicts or status models alike; None if absent."""
    for condition in conditions or ():
        found = condition.get("type") if isinstance(condition, Mapping) else condition.type
        if found == kind:
            return condition
    return None
