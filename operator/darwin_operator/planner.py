"""Decide what to do for one endpoint, from its spec, what was observed and what the status
remembers (pure).

No kopf, no client, no clock: `plan()` gets everything as arguments and returns actions (small
frozen values that cluster.py carries out), the groups that ask for gang admission, and a view of
every group for the status. Calling it again on the state its actions produce yields the next
step, so the operator can stop at any point and pick up from the cluster alone.

A plan is made in stages, each reading only what the ones before produced:

1. classify: every group (and every wanted index without one) once, into a GroupState: its
   phase, revision and serving state, the health logic's verdict, and the course it takes if
   the rolling update leaves it alone (the actions, admission request and deadlines of that
   course). Nothing is decided about other groups here.
2. decide the rollout (rollout.py) from those states: which groups to replace, which surge groups
   to run, keep or hold back.
3. act: each group's actions from its state and the decision: its own course, a drain towards
   its replacement or scale-down, or held back from admission.
4. admit (`admitted()`): once the admission check has answered, the phase of each group that
   asked follows from its answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, auto
from typing import Any

from darwin_operator import health, render, revisions, rollout, topology, vocabulary
from darwin_operator.api import DarwinEndpointSpec, Gang
from darwin_operator.capacity import Fit, GroupDemand
from darwin_operator.observed import Observed, ObservedGroup, ObservedPod, pod_from_api
from darwin_operator.vocabulary import (
    ANNOTATION_SPEC_HASH,
    DeleteReason,
    Fault,
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
    """Create the missing pods of one incarnation of a group (all of them for a new one);
    existing names are kept."""

    index: int
    gated: bool
    revision: str = ""  # an older stored revision to build it from; "" for the update revision
    incarnation: int = 0


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
    # its leader, if among `pods`: the stamp before the deletion takes it out of the Service
    leader: str = field(default="", compare=False)


def _delete(g: ObservedGroup, reason: DeleteReason, pods: tuple[str, ...]) -> DeleteGroup:
    leader = g.leader
    return DeleteGroup(g.index, reason, pods, leader.name if leader and leader.name in pods else "")


@dataclass(frozen=True)
class ApplyObject:
    """Create or replace an owned Service or PDB; `body` carries its spec-hash annotation."""

    key: str  # "Kind/name"
    body: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class StoreRevision:
    """Keep the update revision's spec in the cluster (revisions.py), numbered `number`."""

    revision: str
    number: int


@dataclass(frozen=True)
class PruneRevision:
    """Delete a stored revision that no group uses and that is not among the newest."""

    name: str


Action = (
    CreateGroup
    | UngateGroup
    | DrainGroup
    | RestoreServing
    | MarkBroken
    | DeleteGroup
    | ApplyObject
    | StoreRevision
    | PruneRevision
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
    incarnation: int = 0  # of the pods it describes (or is about to create)
    whole_incarnation: int | None = None  # the newest incarnation seen with all its pods


@dataclass(frozen=True)
class PlannerConfig:
    scheduling_timeout: float = 120.0
    health: health.HealthConfig = health.HealthConfig()


@dataclass(frozen=True)
class GroupMemory:
    """A group as status.groups last showed it: all the planner knows of a group whose pods
    are gone."""

    revision: str
    phase: str
    pods: int
    whole_incarnation: int | None = None  # GroupStatus.whole_incarnation


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


def desired_objects(
    ref: render.EndpointRef, spec: DarwinEndpointSpec, draining: int = 0
) -> list[dict[str, Any]]:
    """Services and PDB as they should be, each stamped with the hash of its rendered form;
    `draining` wanted groups have their leader out of the Service (the PDB counts them)."""
    objects = [*render.render_services(ref, spec), render.render_pdb(ref, spec, draining)]
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


def _view(g: ObservedGroup, phase: GroupPhase, message: str = "") -> GroupView:
    live = [p for p in g.pods if not p.deleting]
    leader = g.leader
    created = [p.created_at for p in g.pods if p.created_at is not None]
    return GroupView(
        index=g.index,
        revision=g.revision,
        phase=phase,
        pods=len(live),
        pods_ready=g.ready_pods,
        restarts=g.restarts,
        message=message,
        created_at=min(created) if created else None,
        serving=bool(leader and leader.ready and not leader.deleting and leader.serving != "false"),
        incarnation=g.incarnation,
    )


# ---- stage 1: what each group is ----


class Standing(Enum):
    """Where a group stands before the rollout has its say. The first four are the health
    logic's or already under way: the rollout leaves them to their course."""

    MISSING = auto()  # no pods: created, or waiting out its backoff
    RECREATING = auto()  # marked broken by the operator: on its way to a recreation
    BROKEN = auto()  # found broken now: to be marked, unless the endpoint is Failed
    TERMINATING = auto()  # part way through a deletion: finished first
    INCOMPLETE = auto()  # ranks missing: completed, or deleted whole
    GATED = auto()  # complete and gated: asks for admission
    UNGATING = auto()  # an admission interrupted part way: the remaining gates are lifted
    RELEASED = auto()  # in the scheduler's and the kubelet's hands


_LEFT_TO_THEIR_COURSE = frozenset(
    {Standing.MISSING, Standing.RECREATING, Standing.BROKEN, Standing.TERMINATING}
)
_HELD_MESSAGE = "waiting for admission: surge groups wait until every wanted one is placed"


@dataclass(frozen=True)
class GroupState:
    """Stage 1's verdict on one index; `view` carries its phase, revision and serving state."""

    standing: Standing
    view: GroupView
    group: ObservedGroup | None = None
    course: tuple[Action, ...] = ()  # its actions, if nothing else is decided for it
    admission: Admission | None = None
    deadlines: tuple[float, ...] = ()  # of its course: backoff, scheduling timeout
    watch: float | None = None  # when a condition seen now would become a fault (health)
    # health: the recreation its course puts on record, and a new fault's verdict
    recreation: tuple[health.Recreation, str] | None = None
    finding: health.Finding | None = None
    over_budget: bool = False  # one more recreation would exceed maxGroupRestarts

    @property
    def index(self) -> int:
        return self.view.index


def _state(standing: Standing, g: ObservedGroup, phase: GroupPhase, message: str = "", **kw: Any):
    return GroupState(standing, _view(g, phase, message), g, **kw)


class _Planner:
    def __init__(
        self,
        ref: render.EndpointRef,
        spec: DarwinEndpointSpec,
        revision: str,
        observed: Observed,
        now: float,
        config: PlannerConfig,
        history: health.History,
        rollout_in_progress: bool,
        remembered: Mapping[int, GroupMemory],
    ) -> None:
        self.ref, self.spec, self.revision = ref, spec, revision
        self.observed, self.now, self.config = observed, now, config
        self.persisted = self.history = history  # as the status holds it / with this plan's
        self.rollout_in_progress = rollout_in_progress
        self.remembered = remembered
        self.stored = {s.revision for s in observed.revisions or ()}
        self.nodes = None if observed.nodes is None else dict(observed.nodes)
        self.shape = topology.shape_of(spec)
        self.gang = spec.placement.gang == Gang.GATE
        self.leaving: dict[int, int] = {}  # index -> newest incarnation on its way out
        for old in observed.leaving:
            self.leaving[old.index] = max(old.incarnation, self.leaving.get(old.index, 0))
        groups = (*observed.groups, *observed.leaving)  # every index a view can have
        self.whole = {
            i: self.whole_incarnation(i)
            for i in {*range(spec.replicas)} | {g.index for g in groups}
        }
        self._new_demand: GroupDemand | None = None
        self.actions: list[Action] = []
        self.admissions: list[Admission] = []
        self.views: list[GroupView] = []
        self.deadlines: list[float] = []

    def run(self) -> Plan:
        states = self.classify_all()
        decision = rollout.decide(
            self.spec,
            self.revision,
            self.observed,
            [s.view for s in states.values()],
            in_progress=self.rollout_in_progress,
        )
        self.finish_leaving()
        self.act(states, decision)
        self.objects()
        self.keep_revisions()
        future = [d - self.now for d in self.deadlines if d > self.now]
        return Plan(
            actions=tuple(self.actions),
            admissions=tuple(self.admissions),
            groups=self.reported_views(),
            rollout=decision,
            requeue_after=min(future) if future else None,
            blocked_reason=self.blocked_reason(),
            health=self.history,
        )

    def reported_views(self) -> tuple[GroupView, ...]:
        """The groups' views in index order, with what was seen whole (for the status)."""
        views = sorted(self.views, key=lambda v: v.index)
        return tuple(replace(v, whole_incarnation=self.whole.get(v.index)) for v in views)

    def whole_incarnation(self, index: int) -> int | None:
        """The newest incarnation at `index` seen with every pod: now, or as the status
        remembers. A rank of it missing later was removed by someone (health._started)."""
        g = self.observed.group(index)
        if g is not None and set(range(self.shape.pods_per_group)) <= g.ranks():
            return g.incarnation
        memory = self.remembered.get(index)
        return memory.whole_incarnation if memory else None

    # -- stage 1: classify --

    def classify_all(self) -> dict[int, GroupState]:
        """Every wanted index and every group above replicas, in index order. Only wanted
        groups can make the endpoint Failed here: a group above replicas may yet be scaled
        down, and stage 3 settles its verdict once it knows."""
        states: dict[int, GroupState] = {}
        failing = self.persisted.failure is not None
        for index in range(self.spec.replicas):
            state = states[index] = self.classify(index, failing)
            failing = failing or state.over_budget
        for g in self.observed.groups:
            if g.index >= self.spec.replicas:
                states[g.index] = self.classify(g.index, failing)
        return states

    def classify(self, index: int, failing: bool) -> GroupState:
        """`failing`: the endpoint is Failed, or a group before this one just made it so."""
        g = self.observed.group(index)
        if g is None or not g.pods:
            return self.missing(index, failing)
        marked = health.mark_of(g)
        if marked is not None:
            return self.recreating(g, *marked, failing=failing)
        watch = None
        if not any(p.marked_deleted for p in g.pods):  # else the operator's own deletion
            finding, watch = health.diagnose(
                g,
                pods_per_group=self.shape.pods_per_group,
                seen_whole=self.whole.get(index) == g.incarnation,
                nodes=self.nodes,
                startup_timeout=self.spec.health.startup_timeout_seconds,
                leader_unready_grace=self.spec.health.leader_unready_seconds,
                now=self.now,
                config=self.config.health,
            )
            if finding is not None:
                return self.found_broken(g, finding)
        if any(p.deleting or p.marked_deleted for p in g.pods):
            return replace(self.finishing(g), watch=watch)
        state = self.present(g)
        return replace(state, watch=watch)

    def missing(self, index: int, failing: bool, *, replacing: ObservedGroup | None = None):
        """An index without a current incarnation gets a new one, at once: the pods of the one
        before may still terminate (a lost node keeps them for as long as it is unreachable),
        and admission counts the GPUs they hold. `replacing`: the incarnation this plan
        deletes. A group deleted after a failure waits out its backoff; none comes back while
        Failed. It comes back on the revision it had if the rollout is to leave it there."""
        past = self.persisted.of(index)
        window = self.spec.health.restart_window_seconds
        revision = self.kept_revision(index)
        incarnation = self.next_incarnation(index, replacing)

        def state(phase: GroupPhase, message: str, **kw: Any) -> GroupState:
            view = GroupView(index, revision, phase, 0, 0, 0, message, incarnation=incarnation)
            return GroupState(Standing.MISSING, view, **kw)

        vanished = None if replacing or index in self.leaving else self.vanished(index)
        if vanished is not None:
            return replace(vanished, view=replace(vanished.view, revision=revision))

        if failing and past.recreations:
            message = f"not recreated: the endpoint is Failed; last failure {past.last_failure}"
            return state(GroupPhase.BROKEN, message)
        at = health.create_at(past, self.now, window, self.config.health)
        if at > self.now:
            recent = len(past.recent(self.now, window))
            message = (
                f"created again at {format_time(at)}: backoff after {recent} recreations "
                f"within {window}s; last failure {past.last_failure}"
            )
            return state(GroupPhase.BACKING_OFF, message, deadlines=(at,))
        n = self.shape.pods_per_group
        older = "" if revision == self.revision else revision
        create = CreateGroup(index, gated=self.gang, revision=older, incarnation=incarnation)
        admission = None
        if self.gang and not older and not self.observed.secret_missing:
            # asked for in the same reconcile: the reconciler creates the pods, then admits
            names = tuple(
                vocabulary.pod_name(self.ref.name, index, rank, incarnation)
                for rank in self.shape.ranks
            )
            admission = Admission(index, self.new_demand(), names)
        return state(
            GroupPhase.PENDING,
            f"creating {_pods(n)}" + (f" on revision {older}" if older else ""),
            course=(create,),
            admission=admission,
        )

    def next_incarnation(self, index: int, replacing: ObservedGroup | None) -> int:
        """One above every incarnation seen at the index, or 0 (the names groups always had)
        when none is: a name in use is never taken again while its pod exists."""
        seen = [self.leaving.get(index, -1)]
        current = self.observed.group(index)
        if current is not None:
            seen.append(current.incarnation)
        if replacing is not None:
            seen.append(replacing.incarnation)
        return max(seen) + 1

    def new_demand(self) -> GroupDemand:
        """What a group about to be created on the update revision will ask for, from the pod
        it is rendered as (every pod of a group asks for the same)."""
        if self._new_demand is None:
            pod = render.render_group(self.ref, self.spec, self.revision, 0, gated=self.gang)[0]
            self._new_demand = self.demand(ObservedGroup(0, (pod_from_api(pod),)))
        return self._new_demand

    def kept_revision(self, index: int) -> str:
        """The revision a group at this index is created on: below the partition, the one the
        status last showed for it, if its spec is stored; else the update revision."""
        remembered = self.remembered.get(index)
        if (
            remembered is not None
            and index < self.spec.rollout.partition
            and remembered.revision in self.stored
        ):
            return remembered.revision
        return self.revision

    # Health (health.py): a broken group is recreated whole, with backoff, within a budget. One
    # step per reconcile, so that the cluster always tells what comes next, whenever the
    # operator is killed: (1) stamp every pod with the fault and its time (MarkBroken) while
    # this reconcile's status patch records the recreation; (2) once the status holds it,
    # delete the whole group; (3) create it anew when its backoff ends (missing).

    def found_broken(self, g: ObservedGroup, finding: health.Finding) -> GroupState:
        text = f"{finding.fault.value}: {finding.message}"
        budget = self.spec.health
        over = health.exceeds_budget(
            self.persisted.of(g.index),
            self.now,
            budget.restart_window_seconds,
            budget.max_group_restarts,
        )
        recreation = health.Recreation(stamp(self.now), finding.fault.value)
        mark = health.mark_value(recreation, finding.message)
        return _state(
            Standing.BROKEN,
            g,
            GroupPhase.BROKEN,
            f"{text}; recreating the whole group",
            course=(MarkBroken(g.index, mark, _names(g)),),
            recreation=(recreation, finding.message),
            finding=finding,
            over_budget=over,
        )

    def vanished(self, index: int) -> GroupState | None:
        """A started group whose pods are all gone, though the operator deleted none of them
        (its own deletions show Draining or Terminating first): deleted by hand, evicted, or
        lost with its node. Its pods cannot carry the mark, so its recreation goes on record
        in this reconcile's status first; once there, the group shows Broken and is created
        again as any recreated group (missing)."""
        memory = self.remembered.get(index)
        started = (GroupPhase.STARTING, GroupPhase.LOADING, GroupPhase.READY)
        if memory is None or memory.pods == 0 or memory.phase not in started:
            return None
        finding = health.Finding(
            Fault.MEMBER_DELETED,
            f"all {_pods(memory.pods)} of the group gone: deleted by another client, evicted "
            "or lost with their node",
        )
        budget = self.spec.health
        over = health.exceeds_budget(
            self.persisted.of(index),
            self.now,
            budget.restart_window_seconds,
            budget.max_group_restarts,
        )
        message = f"{finding.fault.value}: {finding.message}; recreating the whole group"
        view = GroupView(index, self.revision, GroupPhase.BROKEN, 0, 0, 0, message)
        recreation = health.Recreation(stamp(self.now), finding.fault.value)
        return GroupState(
            Standing.BROKEN,
            view,
            recreation=(recreation, finding.message),
            finding=finding,
            over_budget=over,
        )

    def recreating(
        self, g: ObservedGroup, recreation: health.Recreation, message: str, *, failing: bool
    ) -> GroupState:
        if recreation not in self.persisted.of(g.index).recreations:
            # Marked, but the status does not hold it yet (this reconcile's patch will, also
            # after a kill between the two): no pod goes before the recreation is on record.
            unmarked = tuple(p.name for p in g.pods if not p.marked_broken)
            mark = health.mark_value(recreation, message)
            return _state(
                Standing.RECREATING,
                g,
                GroupPhase.BROKEN,
                f"{recreation.reason}: {message}; recreating",
                course=(MarkBroken(g.index, mark, unmarked),) if unmarked else (),
                recreation=(recreation, message),
            )
        live = tuple(p.name for p in g.pods if not p.deleting)
        delete = (_delete(g, DeleteReason.BROKEN, live),) if live else ()
        if g.index < self.spec.replicas:
            # its successor at once, without waiting for these pods (a lost node keeps them)
            successor = self.missing(g.index, failing, replacing=g)
            return replace(
                successor,
                standing=Standing.RECREATING,
                group=g,
                course=(*delete, *successor.course),
            )
        return _state(
            Standing.RECREATING,
            g,
            GroupPhase.TERMINATING,
            f"recreating after {recreation.reason}: {message}",
            course=delete,
        )

    def finishing(self, g: ObservedGroup) -> GroupState:
        """A group part way through deletion: finish it; a new one follows once it is gone.
        The operator stamps a group's pods before deleting any (writes.of), so a
        deletion it was killed in the middle of shows on the pods it did not reach."""
        live = tuple(p.name for p in g.pods if not p.deleting)
        course = (_delete(g, DeleteReason.UNFINISHED_DELETE, live),) if live else ()
        return _state(
            Standing.TERMINATING,
            g,
            GroupPhase.TERMINATING,
            "waiting for pods to terminate",
            course=course,
        )

    def present(self, g: ObservedGroup) -> GroupState:
        """A group with pods, healthy and not being deleted."""
        index, n = g.index, self.shape.pods_per_group
        released = [p for p in g.pods if not p.gated]
        if set(range(n)) - g.ranks():
            # Never seen whole (else health found the rank removed): a creation cut short. Pods
            # already released cannot wait behind a gate for the rest: deleted and created
            # anew, no recreation.
            if g.revision != self.revision or (self.gang and released):
                return _state(
                    Standing.INCOMPLETE,
                    g,
                    GroupPhase.TERMINATING,
                    f"recreating: {DeleteReason.INCOMPLETE.value}",
                    course=(_delete(g, DeleteReason.INCOMPLETE, _names(g)),),
                )
            return _state(
                Standing.INCOMPLETE,
                g,
                GroupPhase.PENDING,
                f"{len(g.pods)} of {n} pods created",
                course=(CreateGroup(index, gated=self.gang, incarnation=g.incarnation),),
            )
        leader = g.leader
        restore: tuple[Action, ...] = ()
        if leader is not None and leader.serving == "false":
            restore = (RestoreServing(index, leader.name),)
        if self.gang and not released:
            if self.observed.secret_missing:
                return _state(
                    Standing.GATED, g, GroupPhase.PENDING, self.blocked_reason(), course=restore
                )
            return _state(
                Standing.GATED,
                g,
                GroupPhase.WAITING_FOR_CAPACITY,
                "waiting for admission",
                course=restore,
                admission=Admission(index, self.demand(g), _names(g)),
            )
        if self.gang and len(released) < len(g.pods):
            gated = tuple(p.name for p in g.pods if p.gated)
            return _state(
                Standing.UNGATING,
                g,
                GroupPhase.SCHEDULING,
                "lifting the remaining scheduling gates",
                course=(*restore, UngateGroup(index, gated)),
            )
        state = self.released(g)
        return replace(state, course=(*restore, *state.course))

    def released(self, g: ObservedGroup) -> GroupState:
        unbound = [p for p in g.pods if not p.bound]
        failed = [p for p in g.pods if p.phase == "Failed"]
        if failed:
            return _state(Standing.RELEASED, g, GroupPhase.BROKEN, f"pod {failed[0].name} failed")
        if unbound:
            stuck = next((p for p in unbound if p.unschedulable), None)
            admitted = min((p.admitted_at for p in g.pods if p.admitted_at), default=None)
            deadlines: tuple[float, ...] = ()
            if self.gang and admitted is not None:
                deadline = admitted + self.config.scheduling_timeout
                if stuck is not None and self.now >= deadline:
                    return _state(
                        Standing.RELEASED,
                        g,
                        GroupPhase.TERMINATING,
                        f"not scheduled within {self.config.scheduling_timeout:g}s: "
                        f"{stuck.unschedulable_message}",
                        course=(_delete(g, DeleteReason.SCHEDULING_TIMEOUT, _names(g)),),
                    )
                deadlines = (deadline,)
            bound = len(g.pods) - len(unbound)
            message = f"{bound} of {len(g.pods)} pods bound"
            if stuck is not None:
                message += f"; {stuck.name}: {stuck.unschedulable_message}"
            return _state(Standing.RELEASED, g, GroupPhase.SCHEDULING, message, deadlines=deadlines)
        if g.ready_pods == len(g.pods):
            return _state(Standing.RELEASED, g, GroupPhase.READY)
        detail = _waiting_message(g.pods)
        message = f"{g.ready_pods} of {len(g.pods)} pods ready"
        return _state(
            Standing.RELEASED,
            g,
            GroupPhase.STARTING,
            f"{message}; {detail}" if detail else message,
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
            room=sample.room,
        )

    # -- stage 3: act on the states and the rollout's decision --

    def act(self, states: dict[int, GroupState], decision: rollout.Decision) -> None:
        for index in (*range(self.spec.replicas), *decision.surge):
            state = states.get(index)
            if state is None:  # a new surge group
                state = self.missing(index, self.history.failure is not None)
            self.wanted(state, decision)
        surplus = [
            s
            for s in states.values()
            if s.index >= self.spec.replicas and s.index not in decision.surge
        ]
        for state in sorted(surplus, key=lambda s: -s.index):
            self.surplus(state, decision)

    def wanted(self, state: GroupState, decision: rollout.Decision) -> None:
        if state.watch is not None:
            self.deadlines.append(state.watch)
        g = state.group
        held = state.index in decision.hold and state.admission is not None
        if held:  # a surge group, gated or about to be created: no GPUs asked for yet
            state = replace(state, admission=None, view=replace(state.view, message=_HELD_MESSAGE))
        if state.standing in _LEFT_TO_THEIR_COURSE or g is None:
            self.follow(state)
        elif state.index in decision.replace:
            message = f"replacing revision {g.revision} with {self.revision}"
            self.retire(g, DeleteReason.ROLLOUT, message)
        else:
            self.follow(state)

    def follow(self, state: GroupState) -> None:
        """The group's own course."""
        if state.finding is not None:
            if self.history.failure is None and state.over_budget:
                failure = health.failure(
                    state.index,
                    self.history.of(state.index),
                    state.finding,
                    self.now,
                    self.spec.health,
                )
                self.history = replace(self.history, failure=failure)
            if self.history.failure is not None:
                text = f"{state.finding.fault.value}: {state.finding.message}"
                message = f"{text}; not recreated: the endpoint is Failed"
                self.views.append(replace(state.view, message=message))
                return
        self.actions.extend(state.course)
        if state.admission is not None:
            self.admissions.append(state.admission)
        self.deadlines.extend(state.deadlines)
        if state.recreation is not None:
            self.remember(state.index, *state.recreation)
        self.views.append(state.view)

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

    def surplus(self, state: GroupState, decision: rollout.Decision) -> None:
        """A group beyond spec.replicas and not a surge group: drained, then deleted, highest
        index first."""
        g = state.group
        assert g is not None  # classified from an observed group
        if any(p.deleting or p.marked_deleted for p in g.pods):
            self.follow(self.finishing(g))
        elif g.index in decision.keep:
            limit = f"maxUnavailable {rollout.limits(self.spec).max_unavailable}"
            message = f"above replicas; serving until another is Ready ({limit})"
            self.views.append(_view(g, GroupPhase.READY, message))
        else:
            self.retire(g, DeleteReason.SCALE_DOWN, "scaling down")

    def retire(self, g: ObservedGroup, reason: DeleteReason, message: str) -> None:
        """Take a group down for a planned reason. With drainSeconds > 0, a Ready leader first
        leaves the client Service and the group keeps running drainSeconds (plus the settle
        time) for requests in flight. Then (at once with drainSeconds 0 or a leader not
        Ready: no request is waited for, so neither is the EndpointSlice) the group is
        deleted: the stamp on its pods (writes.of) takes the leader out of the Service in the
        first write, and from that write on the planner counts the group as gone, so a
        deletion cut short by a kill is finished later without a second look at the budget.
        A wanted index gets its next incarnation in the same plan (missing)."""
        leader = g.leader
        drain = self.spec.rollout.drain_seconds
        drain += DRAIN_SETTLE_SECONDS if drain else 0
        if leader is not None and leader.ready and drain:
            started = leader.drain_started_at
            if leader.serving != "false" or started is None:
                self.actions.append(DrainGroup(g.index, leader.name))
                until = self.now + drain
            else:
                until = started + drain
            if until > self.now:
                self.deadlines.append(until)
                # a stable message: status is patched only when it changes
                message = f"{message}; draining until {format_time(until)}"
                self.views.append(_view(g, GroupPhase.DRAINING, message))
                return
        self.actions.append(_delete(g, reason, _names(g)))
        if g.index < self.spec.replicas:
            self.follow(self.missing(g.index, self.history.failure is not None, replacing=g))
        else:
            self.views.append(_view(g, GroupPhase.TERMINATING, message))

    def finish_leaving(self) -> None:
        """Incarnations on their way out: the deletion of each is finished (after a kill part
        way through it, or one whose successor was created first), never waited for."""
        for g in self.observed.leaving:
            live = tuple(p.name for p in g.pods if not p.deleting)
            if live:
                self.actions.append(_delete(g, DeleteReason.UNFINISHED_DELETE, live))

    def keep_revisions(self) -> None:
        """Store the update revision; prune what no group uses, beyond a short history."""
        stored = self.observed.revisions
        if stored is None:  # not readable (e.g. an older chart's RBAC): nothing is kept
            return
        if self.revision not in self.stored:
            self.actions.append(StoreRevision(self.revision, revisions.next_number(stored)))
        in_use = {
            self.revision,
            *(g.revision for g in (*self.observed.groups, *self.observed.leaving)),
        }
        in_use |= {v.revision for v in self.views}
        for old in revisions.prunable(stored, in_use):
            self.actions.append(PruneRevision(old.name))

    def blocked_reason(self) -> str:
        if self.observed.secret_missing and self.spec.model.token_secret_ref is not None:
            ref = self.spec.model.token_secret_ref
            return f"Secret {ref.name} (spec.model.tokenSecretRef) not found; groups stay gated"
        return ""

    def objects(self) -> None:
        """After the groups' actions, so that the PDB counts the drains this plan starts (the
        reconciler applies objects before anything else)."""
        have = dict(self.observed.owned_objects)
        applies = []
        for obj in desired_objects(self.ref, self.spec, len(self.draining())):
            key = object_key(obj)
            if have.get(key) != obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
                applies.append(ApplyObject(key, obj))
        self.actions[:0] = applies

    def draining(self) -> set[int]:
        """Wanted groups whose leader is out of the Service, or leaves it in this plan."""
        starting = {a.index for a in self.actions if isinstance(a, DrainGroup)}
        out = {
            g.index
            for g in self.observed.groups
            if g.leader is not None and g.leader.serving == "false"
        }
        return {index for index in starting | out if index < self.spec.replicas}


def plan(
    ref: render.EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    observed: Observed,
    now: float,
    config: PlannerConfig | None = None,
    history: health.History | None = None,
    *,
    rollout_in_progress: bool = False,
    remembered: Mapping[int, GroupMemory] | None = None,
) -> Plan:
    """Stages 1 to 3. What the status remembers: `history`, the recreation history
    (status.history_of); `rollout_in_progress`, whether status.rolloutStartedAt is set
    (rollout.py: groups above replicas are its surge groups until it is done); and
    `remembered`, each group as status.groups last showed it."""
    return _Planner(
        ref,
        spec,
        revision,
        observed,
        now,
        config or PlannerConfig(),
        history or health.History(),
        rollout_in_progress,
        remembered or {},
    ).run()


def admitted(plan: Plan, fits: Sequence[Fit]) -> Plan:
    """Stage 4: the plan once the admission check (admission.py, one answer per request, in
    order) has answered: a group that fits had its gates lifted and is Scheduling; one that
    does not waits for capacity, saying why."""
    answers = {a.index: fit for a, fit in zip(plan.admissions, fits, strict=True)}

    def settled(view: GroupView) -> GroupView:
        fit = answers.get(view.index)
        if fit is None:
            return view
        if fit.fits:
            return replace(view, phase=GroupPhase.SCHEDULING, message="gates lifted")
        return replace(
            view, phase=GroupPhase.WAITING_FOR_CAPACITY, message=fit.message, reason=fit.reason
        )

    return replace(plan, groups=tuple(settled(v) for v in plan.groups))
