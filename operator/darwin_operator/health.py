"""Group health (pure): is a group broken and why, and when may it be created again.

A vLLM group is one NCCL world: when one rank dies the others cannot heal, and a group left half
alive holds GPUs while serving nothing. So a broken group is deleted whole and created anew, with
an exponential backoff per group and a restart budget per endpoint; past the budget the endpoint
is Failed until its spec or its restartedAt annotation changes.

Nothing here lives only in memory. The recreation history (time and reason of each recreation,
bounded to the window) is kept in the endpoint's status; the decision to recreate a group is kept
on its pods (vocabulary.ANNOTATION_BROKEN) before the history is written, and the history is
written before any pod is deleted. So an operator killed at any point neither loses a recreation
nor counts one twice (planner.py takes the steps, one per reconcile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from darwin_operator.api import HealthSpec
from darwin_operator.observed import NodeInfo, ObservedGroup, ObservedPod
from darwin_operator.vocabulary import ANNOTATION_RESTARTED_AT, Fault, format_time, parse_time

_MAX_MESSAGE = 400  # of a fault's message, on pods and in status


@dataclass(frozen=True)
class HealthConfig:
    """Operator flags (`darwin-operator run --recreate-backoff-base ...`)."""

    backoff_base: float = 5.0  # delay before a group's second recreation within the window
    backoff_cap: float = 300.0
    node_lost_grace: float = 60.0  # a node NotReady/unreachable this long loses its pods


@dataclass(frozen=True)
class Finding:
    fault: Fault
    message: str


@dataclass(frozen=True)
class Recreation:
    at: float  # when the operator decided it (as vocabulary.stamp() reads it back)
    reason: str  # a Fault value; kept as text so that any value read back from status survives


@dataclass(frozen=True)
class GroupHistory:
    recreations: tuple[Recreation, ...] = ()  # oldest first, within the restart window
    restarts: int = 0  # recreations since the spec or restartedAt last changed
    last_failure: str = ""  # "<time> <Fault>: <message>" of the latest recreation

    def recent(self, now: float, window: float) -> tuple[Recreation, ...]:
        return tuple(r for r in self.recreations if r.at > now - window)


@dataclass(frozen=True)
class Failure:
    """The endpoint is Failed: `group` broke more often than the restart budget allows."""

    group: int
    reasons: tuple[str, ...]  # of its recreations in the window and of the last fault, oldest first
    message: str
    since: float


@dataclass(frozen=True)
class History:
    """What health decisions need from before: per group, and whether the endpoint is Failed.
    It belongs to one spec generation and restartedAt; a change of either starts over."""

    generation: int | None = None
    restarted_at: str = ""
    groups: tuple[tuple[int, GroupHistory], ...] = ()
    failure: Failure | None = None

    def of(self, index: int) -> GroupHistory:
        return dict(self.groups).get(index, GroupHistory())

    def with_group(self, index: int, history: GroupHistory) -> History:
        groups = {**dict(self.groups), index: history}
        return replace(self, groups=tuple(sorted(groups.items())))


def mark_value(recreation: Recreation, message: str) -> str:
    return f"{recreation.reason} {format_time(recreation.at)} {message[:_MAX_MESSAGE]}"


def parse_mark(value: str) -> tuple[Recreation, str] | None:
    parts = value.split(" ", 2)
    at = parse_time(parts[1]) if len(parts) >= 2 else None
    if at is None:
        return None
    return Recreation(at, parts[0]), parts[2] if len(parts) == 3 else ""


def mark_of(group: ObservedGroup) -> tuple[Recreation, str] | None:
    """The recreation the operator decided for this group, from the mark on its pods (the
    earliest, should a crash have left two)."""
    marks = [m for p in group.pods if (m := parse_mark(p.marked_broken)) is not None]
    return min(marks, key=lambda m: m[0].at) if marks else None


# ---- is the group broken? ----


def _started(group: ObservedGroup, seen_whole: bool) -> bool:
    """The operator has seen every member of this incarnation (`seen_whole`, kept in the status)
    and some member was released to the scheduler or placed on a node: from then on the ranks
    may have joined one NCCL world, so a missing member was removed by someone and cannot be
    replaced alone. Before that, a missing pod is a creation cut short (an operator killed
    between the POSTs of a group, which a successor may create already released): the planner
    completes or redoes it, and it is no recreation."""
    return seen_whole and any(p.admitted_at is not None or p.bound for p in group.pods)


def _was_ready(pod: ObservedPod) -> bool:
    """Ready now, or turned unready after its container started: Ready=False keeps the time it
    was set when the pod started, so a later transition means the pod had been Ready."""
    if pod.ready:
        return True
    return (
        pod.unready_since is not None
        and pod.running_since is not None
        and pod.unready_since > pod.running_since
    )


def _removed_by_others(
    group: ObservedGroup, pods_per_group: int, seen_whole: bool
) -> Finding | None:
    """A member deleted or evicted by someone other than the operator.

    The rule: the operator stamps every pod it deletes (vocabulary.ANNOTATION_DELETE_REASON)
    before deleting any pod of the group, so the survivors of its own deletion, even one
    interrupted part way, carry the stamp (planner.terminating finishes those). A pod being
    deleted without the stamp, or a missing rank while no member carries it, was therefore
    removed by someone else: a person, an eviction, the taint manager. Only a started group
    can lose a member this way."""
    if not _started(group, seen_whole):
        return None
    for pod in group.pods:
        if pod.deleting and not pod.marked_deleted:
            if pod.disruption:
                return Finding(Fault.EVICTED, f"pod {pod.name} evicted: {pod.disruption}")
            # Named by rank, as a rank already gone is: the finding must read the same whether
            # the reconcile ran before the pod's removal or after it.
            who = "a member" if pod.rank is None else f"rank {pod.rank}"
            return Finding(
                Fault.MEMBER_DELETED,
                f"{who} deleted by another client (pod {pod.name}, terminating)",
            )
    missing = sorted(set(range(pods_per_group)) - group.ranks())
    if missing:
        ranks = ", ".join(str(r) for r in missing)
        return Finding(Fault.MEMBER_DELETED, f"rank {ranks} deleted by another client")
    return None


def _failed(group: ObservedGroup) -> Finding | None:
    """A member that ended: Failed, or Succeeded (vLLM exited 0), a rank gone all the same."""
    for pod in group.pods:
        if pod.terminal:
            why = pod.termination or pod.status_reason or "no reason given"
            if pod.status_reason.startswith("Evicted"):
                return Finding(Fault.EVICTED, f"pod {pod.name} evicted: {pod.status_reason}")
            verb = "failed" if pod.phase == "Failed" else "exited"
            return Finding(Fault.POD_FAILED, f"pod {pod.name} {verb}: {why}")
    return None


def _restarted(group: ObservedGroup) -> Finding | None:
    for pod in group.pods:
        if pod.restarts > 0:
            last = f" (last: {pod.termination})" if pod.termination else ""
            return Finding(
                Fault.CONTAINER_RESTARTED,
                f"pod {pod.name} restarted a container {pod.restarts} time(s){last}",
            )
    return None


def _startup_clock(live: list[ObservedPod]) -> float | None:
    """When the group's startup timeout starts: when its gates were lifted (or, without our
    gate, when its last pod was bound). Not its creation: time spent waiting for capacity is not
    the group's fault, and recreating it would not help."""
    if not live or any(p.gated or p.foreign_gates for p in live):
        return None
    admitted = [p.admitted_at for p in live if p.admitted_at is not None]
    if admitted:
        return min(admitted)
    bound = [p.scheduled_at for p in live]
    return None if any(t is None for t in bound) else max(t for t in bound if t is not None)


def diagnose(
    group: ObservedGroup,
    *,
    pods_per_group: int,
    seen_whole: bool,
    nodes: Mapping[str, NodeInfo] | None,
    startup_timeout: float,
    leader_unready_grace: float,
    now: float,
    config: HealthConfig,
) -> tuple[Finding | None, float | None]:
    """(why the group is broken or None, the time a condition seen now turns into a fault).

    `seen_whole`: the status says the operator saw every pod of this incarnation.
    `nodes` is None when the operator could not read nodes: node checks are skipped then."""
    removed = _removed_by_others(group, pods_per_group, seen_whole)
    for check in (_failed(group), removed, _restarted(group)):
        if check is not None:
            return check, None
    deadlines: list[float] = []

    def after(since: float, grace: float, finding: Finding) -> Finding | None:
        if now >= since + grace:
            return finding
        deadlines.append(since + grace)
        return None

    live = [p for p in group.pods if not p.deleting]
    for pod in live:
        if not pod.bound or nodes is None:
            continue
        node = nodes.get(pod.node_name)
        if node is None:
            return Finding(Fault.NODE_LOST, f"node {pod.node_name} of pod {pod.name} is gone"), None
        if not node.ready:
            since = node.ready_changed_at if node.ready_changed_at is not None else now
            lost = Finding(
                Fault.NODE_LOST,
                f"node {node.name} of pod {pod.name} not Ready since {format_time(since)}",
            )
            if (found := after(since, config.node_lost_grace, lost)) is not None:
                return found, None

    leader = group.leader
    # Ready once, then unready while Running: vLLM answers 503 on /health when its engine died.
    if (
        leader is not None
        and leader.phase == "Running"
        and _was_ready(leader)
        and not leader.ready
        and leader.unready_since is not None
    ):
        unready = Finding(
            Fault.LEADER_UNREADY,
            f"leader {leader.name} Running but not Ready since {format_time(leader.unready_since)}",
        )
        if (found := after(leader.unready_since, leader_unready_grace, unready)) is not None:
            return found, None

    start = _startup_clock(live)
    if start is not None and not all(_was_ready(p) for p in live):
        ready = sum(1 for p in live if p.ready)
        late = Finding(
            Fault.STARTUP_TIMEOUT,
            f"not Ready within health.startupTimeoutSeconds ({startup_timeout:g}s): "
            f"{ready} of {len(live)} pods ready",
        )
        if (found := after(start, startup_timeout, late)) is not None:
            return found, None
    return None, min(deadlines, default=None)


# ---- backoff and restart budget ----


def backoff_delay(recent: int, base: float, cap: float) -> float:
    """Seconds between a group's recreation and its new pods, given its recreations within the
    window (that one included): the first is immediate, then base, 2 x base, ... up to cap."""
    if recent <= 1:
        return 0.0
    return min(cap, base * 2 ** min(recent - 2, 62))


def create_at(history: GroupHistory, now: float, window: float, config: HealthConfig) -> float:
    """When the group's new pods may be created (now or earlier: at once)."""
    recent = history.recent(now, window)
    if not recent:
        return now
    delay = backoff_delay(len(recent), config.backoff_base, config.backoff_cap)
    return recent[-1].at + delay


def exceeds_budget(history: GroupHistory, now: float, window: float, max_restarts: int) -> bool:
    """Would one more recreation now exceed maxGroupRestarts within the window?"""
    return len(history.recent(now, window)) + 1 > max_restarts


def record(
    history: GroupHistory, recreation: Recreation, message: str, window: float, limit: int
) -> GroupHistory:
    """The history with `recreation` in it (once), trimmed to the window and to the `limit`
    latest entries: that is all the budget and the backoff ever look at."""
    if recreation in history.recreations:
        return history
    kept = (*history.recent(recreation.at, window), recreation)
    return GroupHistory(
        recreations=tuple(sorted(kept, key=lambda r: r.at))[-max(1, limit) :],
        restarts=history.restarts + 1,
        last_failure=f"{format_time(recreation.at)} {recreation.reason}: {message[:_MAX_MESSAGE]}",
    )


def failure(
    index: int, history: GroupHistory, finding: Finding, now: float, spec_health: HealthSpec
) -> Failure:
    recent = history.recent(now, spec_health.restart_window_seconds)
    reasons = (*(r.reason for r in recent), finding.fault.value)
    message = (
        f"group {index} broke {len(reasons)} times within "
        f"health.restartWindowSeconds ({spec_health.restart_window_seconds}s), more than "
        f"health.maxGroupRestarts ({spec_health.max_group_restarts}); reasons, oldest first: "
        f"{', '.join(reasons)}; last: {finding.message}. Not recreated until the spec or the "
        f"{ANNOTATION_RESTARTED_AT} annotation changes; its pods are left for inspection"
    )
    return Failure(index, reasons, message, now)
