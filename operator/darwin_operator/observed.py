"""What the operator observed in the cluster, as small immutable values (pure).

The API returns JSON; these functions turn a pod or node dict into the few facts the planner and
the capacity check use. Everything the operator knows about a group comes from here, so after a
restart it knows exactly what it knew before: the cluster is the only memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any

from darwin_operator import vocabulary
from darwin_operator.api import KIND
from darwin_operator.vocabulary import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_BROKEN,
    ANNOTATION_DELETE_REASON,
    ANNOTATION_DRAIN_STARTED_AT,
    find_condition,
    parse_time,
)

# Container waiting reasons that are part of a normal start, not a problem worth reporting.
_ROUTINE_WAITING = frozenset({"ContainerCreating", "PodInitializing"})


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# What the scheduler counts on a node besides extended resources: CPU (here in millicores),
# memory and ephemeral storage (bytes), and the pod count.
ROOM_RESOURCES = ("cpu", "memory", "ephemeral-storage", "pods")
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity(value: Any, *, milli: bool = False) -> int:
    """A Kubernetes quantity in whole base units (thousandths with `milli`, as CPU is counted),
    rounded up as the scheduler rounds; 0 when it cannot be read."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return 0
    number, exponent, suffix = match.groups()
    amount = Decimal(number)
    if exponent:
        amount *= Decimal(10) ** int(exponent[1:])
    elif suffix in _BINARY:
        amount *= Decimal(1024) ** _BINARY[suffix]
    else:
        amount *= Decimal(10) ** _DECIMAL[suffix or ""]
    if milli:
        amount *= 1000
    return max(0, math.ceil(amount))


def _whole_quantity(value: Any) -> int:
    """Extended resources (GPUs) are whole numbers; anything else counts as 0 here."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:  # an empty key with Exists tolerates every taint
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class NodeRequirement:
    """One matchExpression of a required node affinity term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        return False  # Gt/Lt and unknown operators: treated as not matching


@dataclass(frozen=True)
class Placement:
    """Where a pod may go: what the scheduler's node filters will check, GPUs aside."""

    node_selector: tuple[tuple[str, str], ...] = ()
    # required nodeAffinity: a node must match every requirement of at least one term
    affinity_terms: tuple[tuple[NodeRequirement, ...], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    # required nodeAffinity on metadata.name: the nodes admission held the pod to
    node_names: tuple[str, ...] = ()

    def allows(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.node_selector):
            return False
        terms = self.affinity_terms
        return not terms or any(all(r.matches(labels) for r in term) for term in terms)

    def tolerates(self, taints: Iterable[Taint]) -> bool:
        return all(
            any(t.tolerates(taint) for t in self.tolerations)
            for taint in taints
            if taint.effect in ("NoSchedule", "NoExecute")
        )


@dataclass(frozen=True)
class Waiting:
    container: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ObservedPod:
    name: str
    namespace: str = ""
    owner_uid: str = ""  # uid of the controlling owner, "" if none
    group: int | None = None
    incarnation: int = 0  # of its group (vocabulary.LABEL_INCARNATION); 0 if unlabelled
    rank: int | None = None
    role: str = ""
    revision: str = ""
    serving: str = ""  # value of LABEL_SERVING
    admitted_at: float | None = None
    drain_started_at: float | None = None
    created_at: float | None = None
    deleting: bool = False
    node_name: str = ""
    gated: bool = False  # carries our scheduling gate
    foreign_gates: bool = False  # carries some other scheduling gate
    phase: str = "Pending"
    ready: bool = False
    ready_since: float | None = None
    scheduled_at: float | None = None  # when the pod was bound (PodScheduled turned True)
    unready_since: float | None = None  # Ready=False since (its lastTransitionTime)
    running_since: float | None = None  # latest start of a running container
    termination: str = ""  # how its container last terminated, e.g. "vllm exited 1 (Error)"
    status_reason: str = ""  # status.reason and message, e.g. "Evicted: low on memory"
    disruption: str = ""  # the DisruptionTarget condition: why it is being deleted
    marked_broken: str = ""  # ANNOTATION_BROKEN
    marked_deleted: str = ""  # ANNOTATION_DELETE_REASON
    unschedulable: bool = False
    unschedulable_message: str = ""
    restarts: int = 0
    waiting: tuple[Waiting, ...] = ()
    placement: Placement = field(default_factory=Placement)
    # whole-number extended resources the pod requests (GPUs), as (name, count) pairs
    extended: tuple[tuple[str, int], ...] = ()
    # what it requests of ROOM_RESOURCES (CPU in millicores), pods: 1 included
    room: tuple[tuple[str, int], ...] = ()
    # a staging or prune pod (vocabulary.LABEL_WEIGHTS): the endpoints that own it
    weights_for: tuple[str, ...] = ()

    @property
    def bound(self) -> bool:
        return bool(self.node_name)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def requests(self, resource: str) -> int:
        return sum(n for name, n in self.extended if name == resource)


@dataclass(frozen=True)
class ObservedGroup:
    """One incarnation of a replica group: its pods."""

    index: int
    pods: tuple[ObservedPod, ...]  # sorted by rank
    incarnation: int = 0

    @property
    def leader(self) -> ObservedPod | None:
        return next((p for p in self.pods if p.rank == 0), None)

    def ranks(self) -> set[int]:
        return {p.rank for p in self.pods if p.rank is not None}

    @property
    def revision(self) -> str:
        leader = self.leader
        return leader.revision if leader else (self.pods[0].revision if self.pods else "")

    @property
    def ready_pods(self) -> int:
        return sum(1 for p in self.pods if p.ready and not p.deleting)

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.pods)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    ready: bool = True
    ready_changed_at: float | None = None  # lastTransitionTime of the Ready condition
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    allocatable: tuple[tuple[str, int], ...] = ()

    # Cached: admission looks at every node's labels and allocatable for each group it places.
    @cached_property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @cached_property
    def _allocatable_map(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for name, n in self.allocatable:
            totals[name] = totals.get(name, 0) + n
        return totals

    def allocatable_of(self, resource: str) -> int:
        return self._allocatable_map.get(resource, 0)

    @cached_property
    def room(self) -> dict[str, int]:
        """The allocatable CPU, memory, ephemeral storage and pod count it reports."""
        return {r: n for r in ROOM_RESOURCES if (n := self.allocatable_of(r))}


@dataclass(frozen=True)
class StoredRevision:
    """A revision whose spec is kept in the cluster (a ControllerRevision, revisions.py)."""

    name: str
    revision: str
    number: int  # ControllerRevision.revision: 1 for the endpoint's first, then counting up


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile of one endpoint saw."""

    groups: tuple[ObservedGroup, ...] = ()  # sorted by index: each index's current incarnation
    # incarnations on their way out (incarnations_from_pods): their pods hold GPUs until gone
    leaving: tuple[ObservedGroup, ...] = ()
    # name -> value of the spec-hash annotation of Services and the PDB the operator owns
    owned_objects: tuple[tuple[str, str], ...] = ()
    secret_missing: bool = False  # spec.model.tokenSecretRef names a Secret that is not there
    # nodes holding the endpoint's pods, by name; None when they could not be read
    nodes: tuple[tuple[str, NodeInfo], ...] | None = None
    # the endpoint's stored revisions; None when they could not be read
    revisions: tuple[StoredRevision, ...] | None = None

    def group(self, index: int) -> ObservedGroup | None:
        return next((g for g in self.groups if g.index == index), None)


# ---- conversion from API objects (dicts as the API returns them) ----


def _placement(spec: Mapping[str, Any]) -> Placement:
    selector = tuple(sorted((spec.get("nodeSelector") or {}).items()))
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = tuple(
        tuple(
            NodeRequirement(e.get("key", ""), e.get("operator", ""), tuple(e.get("values") or ()))
            for e in term.get("matchExpressions") or ()
        )
        for term in affinity.get("nodeSelectorTerms") or ()
    )
    tolerations = tuple(
        Toleration(
            key=t.get("key") or "",
            operator=t.get("operator") or "Equal",
            value=t.get("value") or "",
            effect=t.get("effect") or "",
        )
        for t in spec.get("tolerations") or ()
    )
    names = tuple(
        value
        for term in affinity.get("nodeSelectorTerms") or ()
        for f in term.get("matchFields") or ()
        if f.get("key") == "metadata.name" and f.get("operator") == "In"
        for value in f.get("values") or ()
    )
    return Placement(
        node_selector=selector, affinity_terms=terms, tolerations=tolerations, node_names=names
    )


def _extended_requests(spec: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for container in spec.get("containers") or ():
        resources = container.get("resources") or {}
        # extended resources must have requests == limits; either may be the one given
        amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in amounts.items():
            if "/" in name:  # extended resources are domain-prefixed; cpu/memory are not
                totals[name] = totals.get(name, 0) + _whole_quantity(value)
    return tuple(sorted((k, v) for k, v in totals.items() if v))


def _room_requests(spec: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """CPU, memory and ephemeral storage the containers request (a limit alone is also the
    request), and the pod itself, as the scheduler counts them (init containers aside)."""
    totals = {"pods": 1}
    for container in spec.get("containers") or ():
        resources = container.get("resources") or {}
        amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name in ("cpu", "memory", "ephemeral-storage"):
            if name in amounts:
                totals[name] = totals.get(name, 0) + quantity(amounts[name], milli=name == "cpu")
    return tuple(sorted(totals.items()))


def pod_from_api(obj: Mapping[str, Any]) -> ObservedPod:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), None)
    gates = [g.get("name") for g in spec.get("schedulingGates") or ()]
    ready = find_condition(status.get("conditions"), "Ready")
    scheduled = find_condition(status.get("conditions"), "PodScheduled")
    unschedulable = bool(
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    )
    statuses = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    waiting = tuple(
        Waiting(
            container=cs.get("name", ""),
            reason=cs["state"]["waiting"].get("reason") or "",
            message=cs["state"]["waiting"].get("message") or "",
        )
        for cs in statuses
        if ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        and cs["state"]["waiting"]["reason"] not in _ROUTINE_WAITING
    )
    is_ready = bool(ready and ready.get("status") == "True")
    return ObservedPod(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        owner_uid=(owner or {}).get("uid", ""),
        group=_int_or_none(labels.get(vocabulary.LABEL_GROUP)),
        incarnation=_int_or_none(labels.get(vocabulary.LABEL_INCARNATION)) or 0,
        rank=_int_or_none(labels.get(vocabulary.LABEL_RANK)),
        role=labels.get(vocabulary.LABEL_ROLE, ""),
        revision=labels.get(vocabulary.LABEL_REVISION, ""),
        serving=labels.get(vocabulary.LABEL_SERVING, ""),
        admitted_at=parse_time(annotations.get(ANNOTATION_ADMITTED_AT)),
        drain_started_at=parse_time(annotations.get(ANNOTATION_DRAIN_STARTED_AT)),
        created_at=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        node_name=spec.get("nodeName") or "",
        gated=vocabulary.SCHEDULING_GATE in gates,
        foreign_gates=any(g != vocabulary.SCHEDULING_GATE for g in gates),
        phase=status.get("phase") or "Pending",
        ready=is_ready,
        ready_since=parse_time(ready.get("lastTransitionTime")) if is_ready and ready else None,
        unready_since=parse_time(ready.get("lastTransitionTime"))
        if ready and not is_ready
        else None,
        running_since=_running_since(statuses),
        termination=_termination(statuses),
        status_reason=": ".join(x for x in (status.get("reason"), status.get("message")) if x),
        disruption=_disruption(status),
        marked_broken=annotations.get(ANNOTATION_BROKEN, ""),
        marked_deleted=annotations.get(ANNOTATION_DELETE_REASON, ""),
        scheduled_at=parse_time(scheduled.get("lastTransitionTime"))
        if scheduled and scheduled.get("status") == "True"
        else None,
        unschedulable=unschedulable,
        unschedulable_message=(scheduled or {}).get("message", "") if unschedulable else "",
        restarts=sum(int(cs.get("restartCount") or 0) for cs in statuses),
        waiting=waiting,
        placement=_placement(spec),
        extended=_extended_requests(spec),
        room=_room_requests(spec),
        weights_for=tuple(
            o.get("name", "") for o in meta.get("ownerReferences") or () if o.get("kind") == KIND
        )
        if vocabulary.LABEL_WEIGHTS in labels
        else (),
    )


def _running_since(statuses: Iterable[Mapping[str, Any]]) -> float | None:
    started = (
        parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        for cs in statuses
    )
    return max((t for t in started if t is not None), default=None)


def _termination(statuses: Iterable[Mapping[str, Any]]) -> str:
    """How a container last terminated (now or before its restart), in a few words."""
    for cs in statuses:
        for key in ("state", "lastState"):
            done = (cs.get(key) or {}).get("terminated")
            if done:
                text = f"{cs.get('name', '')} exited {done.get('exitCode', '?')}"
                text += f" ({done['reason']})" if done.get("reason") else ""
                return text + (f": {done['message']}" if done.get("message") else "")
    return ""


def _disruption(status: Mapping[str, Any]) -> str:
    target = find_condition(status.get("conditions"), "DisruptionTarget")
    if not target or target.get("status") != "True":
        return ""
    return ": ".join(x for x in (target.get("reason"), target.get("message")) if x)


def node_from_api(obj: Mapping[str, Any]) -> NodeInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = find_condition(status.get("conditions"), "Ready")
    return NodeInfo(
        name=meta.get("name", ""),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        ready=bool(ready and ready.get("status") == "True"),
        ready_changed_at=parse_time((ready or {}).get("lastTransitionTime")),
        unschedulable=bool(spec.get("unschedulable")),
        taints=tuple(
            Taint(t.get("key", ""), t.get("value") or "", t.get("effect", ""))
            for t in spec.get("taints") or ()
        ),
        allocatable=tuple(
            sorted(
                (k, _whole_quantity(v) if "/" in k else quantity(v, milli=k == "cpu"))
                for k, v in (status.get("allocatable") or {}).items()
                if "/" in k or k in ROOM_RESOURCES
            )
        ),
    )


def incarnations_from_pods(
    pods: Iterable[ObservedPod], owner_uid: str
) -> tuple[tuple[ObservedGroup, ...], tuple[ObservedGroup, ...]]:
    """The endpoint's own pods (by controller uid) with a group label, as incarnations of their
    groups: (current, leaving). An incarnation is leaving once the operator has stamped a pod
    of it for deletion (it stamps every pod before deleting any) or a newer one exists at its
    index (made only once the old one is being deleted); the current one of an index is its
    newest, unless that is leaving too: then the index has none and a new one is due."""
    by_key: dict[tuple[int, int], list[ObservedPod]] = {}
    for pod in pods:
        if pod.owner_uid == owner_uid and pod.group is not None:
            by_key.setdefault((pod.group, pod.incarnation), []).append(pod)
    newest: dict[int, int] = {}
    for index, incarnation in by_key:
        newest[index] = max(incarnation, newest.get(index, incarnation))
    current, leaving = [], []
    for (index, incarnation), ps in sorted(by_key.items()):
        ranked = tuple(sorted(ps, key=lambda p: (p.rank is None, p.rank or 0, p.name)))
        group = ObservedGroup(index, ranked, incarnation)
        gone = incarnation < newest[index] or any(p.marked_deleted for p in ps)
        (leaving if gone else current).append(group)
    return tuple(current), tuple(leaving)


def groups_from_pods(pods: Iterable[ObservedPod], owner_uid: str) -> tuple[ObservedGroup, ...]:
    """The endpoint's groups by index: the current incarnation of each (incarnations_from_pods)."""
    return incarnations_from_pods(pods, owner_uid)[0]
