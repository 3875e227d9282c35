"""Weights staged ahead of time (model.cache.staging): which node holds what, and what to do next
(pure).

The record of a copy (a model at a revision on one volume, on one node or on a shared volume) is
the staging pod that made it: Succeeded means the marker is written, Running that it downloads,
Failed why not (staging.parse_staging_failure). Pods are what an operator restart reads back, and
endpoints of a namespace that name the same volume and model@revision find the same pod by name,
so they share one copy. The marker on disk is the truth and the record a cache of it: a record
lost costs a staging pod that finds the marker and exits at once, never a second download.

`plan_weights()` decides per target node: create the staging pod, wait, retry a failure after
its backoff, stop one past downloadTimeoutSeconds, adopt a copy another endpoint made, and prune
old copies no group uses. `restrict()` then bends the planner's plan around the copies: gates
are lifted only onto nodes that hold the group's weights (its last nodes first), and a rollout
drains a group only once its nodes hold the new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from darwin_operator import staging
from darwin_operator.api import CacheStaging, DarwinEndpointSpec
from darwin_operator.vocabulary import (
    LABEL_PREFIX,
    LABEL_ROLE,
    format_time,
    parse_time,
    stable_hash,
)

ROLE_STAGING = "staging"
ROLE_PRUNE = "prune"
ANNOTATION_MODEL = LABEL_PREFIX + "model"
ANNOTATION_MODEL_REVISION = LABEL_PREFIX + "modelRevision"
ANNOTATION_VOLUME = LABEL_PREFIX + "volume"
ANNOTATION_NODE = LABEL_PREFIX + "node"
ANNOTATION_ATTEMPT = LABEL_PREFIX + "attempt"

# Retries of a failed staging: a failure the user must fix (token, revision, volume) is looked at
# again at the longest backoff; one that may pass by itself (network) sooner, doubling.
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 600.0

STAGED = "Staged"
DOWNLOADING = "Downloading"
FAILED = "Failed"
PRUNING = "Pruning"

CONDITION = "WeightsReady"
TIMEOUT_REASON = "DownloadTimeout"
VOLUME_MISSING_REASON = "VolumeNotFound"
SECRET_MISSING_REASON = "SecretNotFound"


@dataclass(frozen=True)
class Copy:
    """A model at a revision on one volume (on each node of it, for PerNode)."""

    volume: str  # "pvc/NAME" or "host/PATH"
    model: str
    revision: str

    @property
    def key(self) -> str:
        return stable_hash([self.volume, self.model, self.revision], 12)

    def __str__(self) -> str:
        return f"{self.model}@{self.revision}"


def copy_of(spec: DarwinEndpointSpec | None) -> Copy | None:
    """The copy a spec's pods load from; None without staging."""
    cache = spec.model.cache if spec is not None else None
    if cache is None or cache.staging == CacheStaging.NONE:
        return None
    volume = (
        f"pvc/{cache.persistent_volume_claim}"
        if cache.persistent_volume_claim
        else f"host/{cache.host_path}"
    )
    return Copy(volume, spec.model.name, spec.model.revision or staging.DEFAULT_REVISION)


def per_node(spec: DarwinEndpointSpec) -> bool:
    cache = spec.model.cache
    return cache is not None and cache.staging == CacheStaging.PER_NODE


def _node_part(node: str) -> str:
    return stable_hash(node or "-shared-", 8)


def staging_pod_name(copy: Copy, node: str, attempt: int) -> str:
    return f"weights-{copy.key[:10]}-{_node_part(node)}-{attempt}"


def prune_pod_name(copy: Copy, node: str) -> str:
    return f"weights-prune-{copy.key[:10]}-{_node_part(node)}"


# ---- what was observed ----


@dataclass(frozen=True)
class Record:
    """A staging (or prune) pod, as the few facts the plan needs."""

    name: str
    role: str
    copy: Copy
    node: str
    attempt: int
    phase: str  # Pending | Running | Succeeded | Failed
    created_at: float | None = None
    finished_at: float | None = None
    failure: tuple[str, str] | None = None  # (reason, message) of a Failed pod
    owners: tuple[str, ...] = ()  # uids of the endpoints that use it
    deleting: bool = False

    @property
    def done(self) -> bool:
        return self.phase == "Succeeded"


def _terminated(pod: Mapping[str, Any]) -> dict | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        terminated = (status.get("state") or {}).get("terminated")
        if terminated:
            return terminated
    return None


def record_from_api(pod: Mapping[str, Any]) -> Record | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    notes = meta.get("annotations") or {}
    role = labels.get(LABEL_ROLE)
    if role not in (ROLE_STAGING, ROLE_PRUNE) or ANNOTATION_MODEL not in notes:
        return None
    copy = Copy(
        notes.get(ANNOTATION_VOLUME, ""),
        notes[ANNOTATION_MODEL],
        notes.get(ANNOTATION_MODEL_REVISION, staging.DEFAULT_REVISION),
    )
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    terminated = _terminated(pod)
    failure = None
    if phase == "Failed":
        failure = staging.parse_staging_failure(terminated) or (
            "StagingFailed",
            status.get("message") or status.get("reason") or "the staging pod failed",
        )
    try:
        attempt = int(notes.get(ANNOTATION_ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    return Record(
        name=meta.get("name", ""),
        role=role,
        copy=copy,
        node=notes.get(ANNOTATION_NODE, ""),
        attempt=attempt,
        phase=phase,
        created_at=parse_time(meta.get("creationTimestamp")),
        finished_at=parse_time((terminated or {}).get("finishedAt")),
        failure=failure,
        owners=tuple(r.get("uid", "") for r in meta.get("ownerReferences") or ()),
        deleting=bool(meta.get("deletionTimestamp")),
    )


# ---- actions (cluster.py carries them out; weights_pods.py renders the pods) ----


@dataclass(frozen=True)
class Stage:
    """Create the staging pod of `copy` on `node` ("" for a shared volume)."""

    copy: Copy
    node: str
    attempt: int


@dataclass(frozen=True)
class Prune:
    """Create the pod that removes `copy` from `node`."""

    copy: Copy
    node: str


@dataclass(frozen=True)
class Adopt:
    """Add this endpoint to the owners of a copy another endpoint staged."""

    name: str


@dataclass(frozen=True)
class Remove:
    """Delete a staging or prune pod that has done its job (or ran out of time)."""

    name: str
    why: str = ""


WeightsAction = Stage | Prune | Adopt | Remove


@dataclass(frozen=True)
class NodeCopy:
    """One target of the update copy, for status.weights."""

    node: str
    state: str
    since: float | None = None
    message: str = ""
    pod: str = ""
    failure: tuple[str, str] | None = None


@dataclass(frozen=True)
class WeightsPlan:
    copy: Copy
    actions: tuple[WeightsAction, ...] = ()
    nodes: tuple[NodeCopy, ...] = ()  # the update copy on each target
    staged: frozenset[str] = frozenset()  # targets holding the update copy
    # per copy key: the nodes holding it (what groups on older revisions may use)
    holders: Mapping[str, frozenset[str]] = None  # type: ignore[assignment]
    deadlines: tuple[float, ...] = ()
    problem: tuple[str, str] | None = None  # (reason, message) when the weights cannot come
    shared: bool = False  # one copy for all nodes (staging Shared)

    @property
    def complete(self) -> bool:
        return bool(self.nodes) and all(n.state == STAGED for n in self.nodes)


def backoff(attempt: int, reason: str) -> float:
    if reason != TIMEOUT_REASON and not staging.is_retryable(reason):
        return BACKOFF_MAX_SECONDS
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)


def plan_weights(
    copy: Copy,
    targets: Sequence[str],
    records: Iterable[Record],
    *,
    uid: str,
    now: float,
    download_timeout: float,
    in_use: frozenset[str] | None,
    blocked: tuple[str, str] | None = None,
) -> WeightsPlan:
    """What to do about the update copy on each target node ("" alone: a shared volume), and
    about old copies. `in_use`: keys of the copies this endpoint's groups load from (None when
    not known: nothing is pruned). `blocked`: (reason, message) that keeps staging pods from
    being created at all (a missing claim or Secret)."""
    records = [r for r in records if not r.deleting]
    actions: list[WeightsAction] = []
    deadlines: list[float] = []
    nodes: list[NodeCopy] = []
    failures: list[tuple[str, NodeCopy]] = []
    pruning = {(r.copy.key, r.node) for r in records if r.role == ROLE_PRUNE and not r.done}
    for node in targets:
        mine = sorted(
            (
                r
                for r in records
                if r.role == ROLE_STAGING and r.copy.key == copy.key and r.node == node
            ),
            key=lambda r: r.attempt,
        )
        latest = mine[-1] if mine else None
        older = mine[:-1]
        actions.extend(Remove(r.name, "superseded") for r in older)
        if (copy.key, node) in pruning:
            nodes.append(NodeCopy(node, PRUNING, message="an old removal is finishing first"))
            continue
        if latest is None:
            if blocked is not None:
                nodes.append(NodeCopy(node, FAILED, message=blocked[1], failure=blocked))
                continue
            actions.append(Stage(copy, node, 0))
            nodes.append(NodeCopy(node, DOWNLOADING, now, "staging pod created"))
            continue
        if latest.done:
            if uid and uid not in latest.owners:
                actions.append(Adopt(latest.name))
            nodes.append(NodeCopy(node, STAGED, latest.finished_at, "", latest.name))
            continue
        failure = latest.failure
        ended = latest.finished_at
        if failure is None:
            started = latest.created_at if latest.created_at is not None else now
            ends = started + download_timeout
            if now < ends:
                deadlines.append(ends)
                nodes.append(
                    NodeCopy(
                        node, DOWNLOADING, started, f"attempt {latest.attempt + 1}", latest.name
                    )
                )
                continue
            failure = (
                TIMEOUT_REASON,
                f"not staged within health.downloadTimeoutSeconds ({download_timeout:g}s)",
            )
            ended = ends
        retry_at = (ended or now) + backoff(latest.attempt, failure[0])
        entry = NodeCopy(
            node,
            FAILED,
            ended,
            f"{failure[0]}: {failure[1]}; retried at {format_time(retry_at)}",
            latest.name,
            failure,
        )
        nodes.append(entry)
        failures.append((node, entry))
        # A download past its time keeps running until its retry replaces it (it may yet
        # finish); the pod stays the record of the attempt count meanwhile.
        if now >= retry_at and blocked is None:
            actions.append(Remove(latest.name, failure[0]))
            actions.append(Stage(copy, node, latest.attempt + 1))
        else:
            deadlines.append(retry_at)

    staged = frozenset(n.node for n in nodes if n.state == STAGED)
    holders: dict[str, set[str]] = {}
    for r in records:
        if r.role == ROLE_STAGING and r.done and (r.copy.key, r.node) not in pruning:
            holders.setdefault(r.copy.key, set()).add(r.node)
    actions.extend(_prune(copy, records, uid, in_use, staged, targets))
    problem = blocked
    if problem is None and failures:
        node, entry = failures[0]
        where = f"node {node}" if node else "the shared volume"
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        problem = (entry.failure[0], f"staging {copy} on {where}{more}: {entry.message}")
    return WeightsPlan(
        copy=copy,
        actions=tuple(actions),
        nodes=tuple(nodes),
        staged=staged,
        holders={k: frozenset(v) for k, v in holders.items()},
        deadlines=tuple(deadlines),
        problem=problem,
        shared=tuple(targets) == ("",),
    )


def _prune(
    copy: Copy,
    records: Sequence[Record],
    uid: str,
    in_use: frozenset[str] | None,
    staged: frozenset[str],
    targets: Sequence[str],
) -> list[WeightsAction]:
    """Old copies on this volume that no group of this endpoint uses and no other endpoint
    owns go, once the update copy is everywhere (a rollout stages first, then prunes)."""
    if in_use is None or set(targets) - staged:
        return []
    actions: list[WeightsAction] = []
    prunes = {(r.copy.key, r.node): r for r in records if r.role == ROLE_PRUNE}
    for r in records:
        if (
            r.role != ROLE_STAGING
            or r.copy.key == copy.key
            or r.copy.volume != copy.volume
            or r.copy.key in in_use
            or tuple(r.owners) != (uid,)
        ):
            continue
        prune = prunes.get((r.copy.key, r.node))
        if not r.done:  # an old attempt that never finished: nothing on disk to keep
            actions.append(Remove(r.name, "no longer wanted"))
        elif prune is None:
            actions.append(Prune(r.copy, r.node))
        elif prune.done:
            actions.append(Remove(r.name, "pruned"))
    for (key, _node), prune in prunes.items():
        left = any(r.role == ROLE_STAGING and r.copy.key == key for r in records if r.done)
        if prune.done and not left:
            actions.append(Remove(prune.name, "done"))
    return actions


# ---- the plan around the copies ----


def group_nodes(pods: Iterable[Any]) -> tuple[str, ...]:
    return tuple(sorted({p.node_name for p in pods if p.node_name}))
