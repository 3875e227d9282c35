"""Decide what to do for one endpoint, from its spec and what was observed (pure).

No kopf, no client, no clock: `plan()` gets everything as arguments and returns actions (small
frozen values that cluster.py carries out), the groups that ask for gang admission, and a view of
every group for the status. Calling it again on the state its actions produce yields the next
step, so the operator can stop at any point and pick up from the cluster alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from darwin_operator import health, render, rollout, topology
from darwin_operator.api import DarwinEndpointSpec, Gang
from darwin_operator.capacity import GroupDemand
from darwin_operator.observed import Observed, ObservedGroup, ObservedPod
from darwin_operator.vocabulary import (
    ANNOTATION_SPEC_HASH,
    DeleteReason,
    GroupPhase,
    format_time,
    stable_hash,
    stamp,
)

# A drain is counted from the leader's label change; clients stop reaching it only once the
# EndpointSlice controller (and the proxies after it) have caught up.
DRAIN_SETTLE_SECONDS = 1.0


# ---- actions ----


@dataclass(frozen=True)
class CreateGroup:
    """Create the group's missing pods (all of them for a new group); existing names are kept."""

    index: int
    gated: bool


@dataclass(frozen=True)
class UngateGroup:
    """Finish lifting the gates of a group whose admission was interrupted part way."""

    index: int
    pods: tuple[str, ...]


@dataclass(frozen=True)
class DrainGroup:
    """Take the leader out of the client Service and record when, on the leader itself."""

    index: int
    leader: str


@dataclass(frozen=True)
class RestoreServing:
    """Put a drained leader back behind the Service (the group is wanted again)."""

    index: int
    leader: str


@dataclass(frozen=True)
class MarkBroken:
    """Stamp the group's pods with the fault found and when (health.mark_value): the decision
    to recreate the group, kept in the cluster until the status history holds it."""

    index: int
    mark: str
    pods: tuple[str, ...]


@dataclass(frozen=True)
class DeleteGroup:
    index: int
    reason: DeleteReason
    pods: tuple[str, ...]


@dataclass(frozen=True)
class ApplyObject:
    """Create or replace an owned Service or PDB; `body` carries its spec-hash annotation."""

    key: str  # "Kind/name"
    body: dict[str, Any] = field(hash=False, compare=False)


Action = (
    CreateGroup | UngateGroup | DrainGroup | RestoreServing | MarkBroken | DeleteGroup | ApplyObject
)


@dataclass(frozen=True)
class Admission:
    """A complete, gated group asking to be released; cluster.py checks capacity under a lock."""

    index: int
    demand: GroupDemand
    pods: tuple[str, ...]


@dataclass(frozen=True)
class GroupView:
    index: int
    revision: str
    phase: GroupPhase
    pods: int
    pods_ready: int
    restarts: int
    message: str = ""
    created_at: float | None = None  # earliest pod creation, for startup metrics
    serving: bool = False  # leader Ready and behind the client Service
    reason: str = ""  # machine-readable cause of a problem, e.g. capacity.NO_ELIGIBLE_NODES


@dataclass(frozen=True)
class PlannerConfig:
    scheduling_timeout: float = 120.0
    health: health.HealthConfig = health.HealthConfig()


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    admissions: tuple[Admission, ...]
    groups: tuple[GroupView, ...]
    rollout: rollout.Decision = rollout.Decision()  # what the rolling update decided
    requeue_after: float | None = None  # seconds until a deadline the plan is waiting for
    blocked_reason: str = ""  # why no group is admitted at all (e.g. a missing Secret)
    health: health.History = health.History()  # recreation history, for the status to keep


def object_key(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def desired_objects(ref: render.EndpointRef, spec: DarwinEndpointSpec) -> list[dict[str, Any]]:
    """Services and PDB as they should be, each stamped with the hash of its rendered form."""
    objects = [*render.render_services(ref, spec), render.render_pdb(ref, spec)]
    stamped = []
    for obj in objects:
        digest = stable_hash(obj)
        obj = json.loads(json.dumps(obj))  # a copy we may annotate
        obj["metadata"].setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = digest
        stamped.append(obj)
    return stamped


def _pods(n: int) -> str:
    return "1 pod" if n == 1 else f"{n} pods"


def _names(g: ObservedGroup) -> tuple[str, ...]:
    return tuple(p.name for p in g.pods)


def _waiting_message(pods: Iterable[ObservedPod]) -> str:
    for pod in pods:
        for w in pod.waiting:
            text = f"pod {pod.name}: {w.reason}"
            return f"{text}: {w.message}" if w.message else text
    return ""


class _Planner:
    decision = rollout.Decision()  # set by run(): what the rolling update decided

    def __init__(
        self,
        ref: render.EndpointRef,
        spec: DarwinEndpointSpec,
        revision: str,
        observed: Observed,
        now: float,
        config: PlannerConfig,
        history: health.History,
    ) -> None:
        self.ref, self.spec, self.revision = ref, spec, revision
        self.observed, self.now, self.config = observed, now, config
        self.persisted = self.history = history  # as the status holds it / with this plan's
        self.nodes = None if observed.nodes is None else dict(observed.nodes)
        self.shape = topology.shape_of(spec)
        self.gang = spec.placement.gang == Gang.GATE
        self.actions: list[Action] = []
        self.admissions: list[Admission] = []
        self.views: list[GroupView] = []
        self.deadlines: list[float] = []

    def view(self, g: ObservedGroup, phase: GroupPhase, message: str = "") -> None:
        live = [p for p in g.pods if not p.deleting]
        leader = g.leader
        created = [p.created_at for p in g.pods if p.created_at is not None]
        self.views.append(
            GroupView(
                index=g.index,
                revision=g.revision,
                phase=phase,
                pods=len(live),
                pods_ready=g.ready_pods,
                restarts=g.restarts,
                message=message,
                created_at=min(created) if created else None,
                serving=bool(
                    leader and leader.ready and not leader.deleting and leader.serving != "false"
                ),
            )
        )

    def demand(self, g: ObservedGroup) -> GroupDemand:
        sample = g.pods[0]
        resource = self.spec.placement.gpu_resource
        return GroupDemand(
            pods=self.shape.pods_per_group,
            gpus_per_pod=sample.requests(resource) or self.shape.gpus_per_pod,
            resource=resource,
            placement=sample.placement,
            topology_key=self.spec.placement.topology_key,
            product=self.spec.placement.gpu_product,
        )

    # -- groups the spec wants --

    def wanted(self, index: int) -> None:
        g = self.observed.group(index)
        n = self.shape.pods_per_group
        if g is None or not g.pods:
            if self.backing_off(index):
                return
            self.actions.append(CreateGroup(index, gated=self.gang))
            self.views.append(
                GroupView(index, self.revision, GroupPhase.PENDING, 0, 0, 0, f"creating {_pods(n)}")
            )
            return
        if self.broken(g) or self.terminating(g):
            return
        if index in self.decision.replace:
            message = f"replacing revision {g.revision} with {self.revision}"
            self.retire(g, DeleteReason.ROLLOUT, message)
            return
        missing = set(range(n)) - g.ranks()
        released = [p for p in g.pods if not p.gated]
        if missing:
            if g.revision != self.revision or (self.gang and released):
                reason = DeleteReason.MEMBER_LOST if released else DeleteReason.INCOMPLETE
                self.actions.append(DeleteGroup(index, reason, _names(g)))
                self.view(g, GroupPhase.TERMINATING, f"recreating: {reason.value}")
            else:
                self.actions.append(CreateGroup(index, gated=self.gang))
                self.view(g, GroupPhase.PENDING, f"{len(g.pods)} of {n} pods created")
            return
        leader = g.leader
        if leader is not None and leader.serving == "false":
            self.actions.append(RestoreServing(index, leader.name))
        if self.gang and not released:
            if self.observed.secret_missing:
                self.view(g, GroupPhase.PENDING, self.blocked_reason())
            elif index in self.decision.hold:
                message = (
                    "waiting for admission: surge groups wait until every wanted one is placed"
                )
                self.view(g, GroupPhase.WAITING_FOR_CAPACITY, message)
            else:
                self.admissions.append(Admission(index, self.demand(g), _names(g)))
                self.view(g, GroupPhase.WAITING_FOR_CAPACITY, "waiting for admission")
            return
        if self.gang and len(released) < len(g.pods):
            self.actions.append(UngateGroup(index, tuple(p.name for p in g.pods if p.gated)))
            self.view(g, GroupPhase.SCHEDULING, "lifting the remaining scheduling gates")
            return
        self.released(g)

    def released(self, g: ObservedGroup) -> None:
        unbound = [p for p in g.pods if not p.bound]
        failed = [p for p in g.pods if p.phase == "Failed"]
        if failed:
            self.view(g, GroupPhase.BROKEN, f"pod {failed[0].name} failed")
        elif unbound:
            stuck = next((p for p in unbound if p.unschedulable), None)
            admitted = min((p.admitted_at for p in g.pods if p.admitted_at), default=None)
            if self.gang and admitted is not None:
                deadline = admitted + self.config.scheduling_timeout
                if stuck is not None and self.now >= deadline:
                    self.actions.append(
                        DeleteGroup(g.index, DeleteReason.SCHEDULING_TIMEOUT, _names(g))
                    )
                    self.view(
                        g,
                        GroupPhase.TERMINATING,
                        f"not scheduled within {self.config.scheduling_timeout:g}s: "
                        f"{stuck.unschedulable_message}",
                    )
                    return
                self.deadlines.append(deadline)
            bound = len(g.pods) - len(unbound)
            message = f"{bound} of {len(g.pods)} pods bound"
            if stuck is not None:
                message += f"; {stuck.name}: {stuck.unschedulable_message}"
            self.view(g, GroupPhase.SCHEDULING, message)
        elif g.ready_pods == len(g.pods):
            self.view(g, GroupPhase.READY)
        else:
            detail = _waiting_message(g.pods)
            message = f"{g.ready_pods} of {len(g.pods)} pods ready"
            self.view(g, GroupPhase.STARTING, f"{message}; {detail}" if detail else message)

    def terminating(self, g: ObservedGroup) -> bool:
        """A group part way through deletion: finish it; a new one follows once it is gone.
        The operator stamps a group's pods before deleting any (cluster.delete_pods), so a
        deletion it was killed in the middle of shows on the pods it did not reach."""
        if not any(p.deleting or p.marked_deleted for p in g.pods):
            return False
        if not all(p.deleting for p in g.pods):
            live = tuple(p.name for p in g.pods if not p.deleting)
            self.actions.append(DeleteGroup(g.index, DeleteReason.UNFINISHED_DELETE, live))
        self.view(g, GroupPhase.TERMINATING, "waiting for pods to terminate")
        return True

    # -- groups beyond spec.replicas: drained, then deleted, highest index first --

    def surplus(self, g: ObservedGroup) -> None:
        if self.terminating(g):
            return
        if g.index in self.decision.keep:
            limit = f"maxUnavailable {rollout.limits(self.spec).max_unavailable}"
            self.view(
                g, GroupPhase.READY, f"above replicas; serving until another is Ready ({limit})"
            )
            return
        self.retire(g, DeleteReason.SCALE_DOWN, "scaling down")

    def retire(self, g: ObservedGroup, reason: DeleteReason, message: str) -> None:
        """Take a group down for a planned reason: its leader leaves the client Service, the
        group keeps running drainSeconds (plus the settle time) for requests in flight, then it
        is deleted. Leaving the Service is always the first step, in a reconcile of its own,
        even with drainSeconds 0 or a leader that is not Ready (then no wait follows): that
        label is the one write that makes the group unavailable, the step the rollout's budget
        allowed. A deletion cut short by a kill (pods stamped, not yet deleted) is finished
        later without a look at the budget, so it must never hit a group that serves."""
        leader = g.leader
        if leader is None:  # cannot serve without a leader
            self.actions.append(DeleteGroup(g.index, reason, _names(g)))
            self.view(g, GroupPhase.TERMINATING, message)
            return
        # drainSeconds 0: no request is waited for, so neither is the EndpointSlice
        drain = self.spec.rollout.drain_seconds
        drain += DRAIN_SETTLE_SECONDS if drain else 0
        started = leader.drain_started_at
        if leader.serving != "false" or started is None:
            self.actions.append(DrainGroup(g.index, leader.name))
            until = self.now + drain if leader.ready else self.now
        else:
            until = started + drain if leader.ready else started
            if self.now >= until:
                self.actions.append(DeleteGroup(g.index, reason, _names(g)))
                self.view(g, GroupPhase.TERMINATING, message)
                return
        if until > self.now:
            self.deadlines.append(until)
            # a stable message: status is patched only when it changes
            message = f"{message}; draining until {format_time(until)}"
        self.view(g, GroupPhase.DRAINING, message)

    def blocked_reason(self) -> str:
        if self.observed.secret_missing and self.spec.model.token_secret_ref is not None:
            ref = self.spec.model.token_secret_ref
            return f"Secret {ref.name} (spec.model.tokenSecretRef) not found; groups stay gated"
        return ""

    def objects(self) -> None:
        have = dict(self.observed.owned_objects)
        for obj in desired_objects(self.ref, self.spec):
            key = object_key(obj)
            if have.get(key) != obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
                self.actions.append(ApplyObject(key, obj))

    def groups(self) -> None:
        for index in range(self.spec.replicas):
            self.wanted(index)
        for index in self.decision.surge:
            self.wanted(index)
        surplus = [
            g
            for g in self.observed.groups
            if g.index >= self.spec.replicas and g.index not in self.decision.surge
        ]
        for g in sorted(surplus, key=lambda g: -g.index):
            self.surplus(g)

    def decide_rollout(self) -> rollout.Decision:
        """A first pass over the groups, only to learn what state each one is in (the health
        logic's verdicts included); the rolling update decides from those states, and the real
        pass acts on its decision. Planning is pure, so the first pass leaves no trace."""
        survey = copy.copy(self)
        survey.__dict__.update({k: [] for k, v in vars(self).items() if isinstance(v, list)})
        survey.decision = rollout.survey(self.spec, self.observed)
        survey.groups()
        return rollout.decide(self.spec, self.revision, self.observed, survey.views)

    def run(self) -> Plan:
        self.decision = self.decide_rollout()
        self.objects()
        self.groups()
        future = [d - self.now for d in self.deadlines if d > self.now]
        return Plan(
            actions=tuple(self.actions),
            admissions=tuple(self.admissions),
            groups=tuple(sorted(self.views, key=lambda v: v.index)),
            rollout=self.decision,
            requeue_after=min(future) if future else None,
            blocked_reason=self.blocked_reason(),
            health=self.history,
        )

    # -- health (health.py): a broken group is recreated whole, with backoff, within a budget --

    def broken(self, g: ObservedGroup) -> bool:
        """Take charge of a group that is broken or being recreated; False if it is healthy.

        One step per reconcile, so that the cluster always tells what comes next, whenever the
        operator is killed: (1) stamp every pod with the fault and its time (MarkBroken) while
        this reconcile's status patch records the recreation; (2) once the status holds it,
        delete the whole group; (3) create it anew when its backoff ends (backing_off)."""
        marked = health.mark_of(g)
        if marked is not None:
            self.recreate(g, *marked)
            return True
        if any(p.marked_deleted for p in g.pods):
            return False  # the operator's own deletion: terminating() finishes it
        finding, deadline = health.diagnose(
            g,
            pods_per_group=self.shape.pods_per_group,
            nodes=self.nodes,
            startup_timeout=self.spec.health.startup_timeout_seconds,
            now=self.now,
            config=self.config.health,
        )
        if deadline is not None:
            self.deadlines.append(deadline)
        if finding is None:
            return False
        text = f"{finding.fault.value}: {finding.message}"
        past, budget = self.history.of(g.index), self.spec.health
        over = health.exceeds_budget(
            past, self.now, budget.restart_window_seconds, budget.max_group_restarts
        )
        if self.history.failure is None and over:
            failure = health.failure(g.index, past, finding, self.now, budget)
            self.history = replace(self.history, failure=failure)
        if self.history.failure is not None:
            self.view(g, GroupPhase.BROKEN, f"{text}; not recreated: the endpoint is Failed")
            return True
        recreation = health.Recreation(stamp(self.now), finding.fault.value)
        mark = health.mark_value(recreation, finding.message)
        self.actions.append(MarkBroken(g.index, mark, _names(g)))
        self.remember(g.index, recreation, finding.message)
        self.view(g, GroupPhase.BROKEN, f"{text}; recreating the whole group")
        return True

    def recreate(self, g: ObservedGroup, recreation: health.Recreation, message: str) -> None:
        if recreation not in self.persisted.of(g.index).recreations:
            # Marked, but the status does not hold it yet (this reconcile's patch will, also
            # after a kill between the two): no pod goes before the recreation is on record.
            self.remember(g.index, recreation, message)
            unmarked = tuple(p.name for p in g.pods if not p.marked_broken)
            if unmarked:
                mark = health.mark_value(recreation, message)
                self.actions.append(MarkBroken(g.index, mark, unmarked))
            self.view(g, GroupPhase.BROKEN, f"{recreation.reason}: {message}; recreating")
            return
        live = tuple(p.name for p in g.pods if not p.deleting)
        if live:
            self.actions.append(DeleteGroup(g.index, DeleteReason.BROKEN, live))
        self.view(g, GroupPhase.TERMINATING, f"recreating after {recreation.reason}: {message}")

    def remember(self, index: int, recreation: health.Recreation, message: str) -> None:
        budget = self.spec.health
        past = health.record(
            self.history.of(index),
            recreation,
            message,
            budget.restart_window_seconds,
            limit=budget.max_group_restarts + 1,
        )
        self.history = self.history.with_group(index, past)

    def backing_off(self, index: int) -> bool:
        """A group deleted after a failure waits out its backoff; none comes back while Failed."""
        past = self.history.of(index)
        window = self.spec.health.restart_window_seconds
        if self.history.failure is not None and past.recreations:
            message = f"not recreated: the endpoint is Failed; last failure {past.last_failure}"
            self.views.append(GroupView(index, self.revision, GroupPhase.BROKEN, 0, 0, 0, message))
            return True
        at = health.create_at(past, self.now, window, self.config.health)
        if at <= self.now:
            return False
        self.deadlines.append(at)
        recent = len(past.recent(self.now, window))
        message = (
            f"created again at {format_time(at)}: backoff after {recent} recreations "
            f"within {window}s; last failure {past.last_failure}"
        )
        self.views.append(GroupView(index, self.revision, GroupPhase.BACKING_OFF, 0, 0, 0, message))
        return True


def plan(
    ref: render.EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    observed: Observed,
    now: float,
    config: PlannerConfig | None = None,
    history: health.History | None = None,
) -> Plan:
    """`history`: the recreation history the status holds (status.history_of)."""
    return _Planner(
        ref, spec, revision, observed, now, config or PlannerConfig(), history or health.History()
    ).run()
