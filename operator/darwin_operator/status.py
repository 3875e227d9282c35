"""The endpoint's status, its conditions and the events its changes deserve (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from darwin_operator import capacity, health, rollout, vocabulary
from darwin_operator.api import (
    Condition,
    DarwinEndpointSpec,
    DarwinEndpointStatus,
    GroupStatus,
    HealthFailure,
    HealthStatus,
    PhaseTime,
    Recreation,
)
from darwin_operator.events import NORMAL, WARNING, EventNote, Reason
from darwin_operator.planner import GroupView
from darwin_operator.vocabulary import (
    STARTUP_ORDER,
    EndpointPhase,
    GroupPhase,
    find_condition,
    format_time,
    parse_time,
)

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
WEIGHTS_CACHED = "WeightsCached"  # present only as a warning: False without model.cache

# Phases of a wanted group, least advanced first: the first one present names the progress.
_PROGRESS_ORDER = (
    (GroupPhase.TERMINATING, "RecreatingGroups"),
    (GroupPhase.BACKING_OFF, "BackingOff"),
    (GroupPhase.PENDING, "CreatingGroups"),
    (GroupPhase.DOWNLOADING, "Downloading"),
    (GroupPhase.WAITING_FOR_CAPACITY, "WaitingForCapacity"),
    (GroupPhase.SCHEDULING, "Scheduling"),
    (GroupPhase.STARTING, "Starting"),
    (GroupPhase.LOADING, "Loading"),
    (GroupPhase.BROKEN, "GroupBroken"),
)


resolve_int_or_percent = rollout.resolve_int_or_percent  # maxUnavailable / maxSurge in groups


def selector(name: str) -> str:
    return vocabulary.leader_selector(name)


def endpoint_url(name: str, namespace: str, spec: DarwinEndpointSpec) -> str:
    service = vocabulary.client_service_name(name)
    return f"http://{service}.{namespace}.svc:{spec.service.port}/v1"


def parse_old(status: Mapping[str, Any] | None) -> DarwinEndpointStatus | None:
    if not status:
        return None
    try:
        return DarwinEndpointStatus.model_validate(status)
    except ValidationError:
        return None


def to_wire(status: DarwinEndpointStatus) -> dict[str, Any]:
    wire = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    if "health" in wire:
        # Status is written as a merge patch, where only null removes a field: a Failed that a
        # spec change or restartedAt ended must not survive in the stored status.
        wire["health"].setdefault("failure", None)
    wire.setdefault("rolloutStartedAt", None)  # likewise: a finished rollout's start must go
    return wire


def remembered(parsed: DarwinEndpointStatus | None) -> Any:
    """What later reconciles decide from and the pods cannot tell again: the health record and
    each group's recreations, the rollout's start and revisions, each group's revision and
    nodes, where the weights are. A status that changes it is written before its reconcile
    ends (reconciler._write_status): a group is deleted only once the status holds its
    recreation. Phases and counts are left out: they change with every pod event, and a status
    that reports them may trail."""
    if parsed is None:
        return None
    groups = [
        (g.index, g.revision, g.restarts, g.last_failure, g.recreations, g.nodes)
        for g in parsed.groups
    ]
    kept = (parsed.health, parsed.rollout_started_at, parsed.current_revision)
    return (*kept, parsed.update_revision, parsed.weights, groups)


def changed(old: DarwinEndpointStatus | None, new: DarwinEndpointStatus) -> bool:
    """`old` as parse_old read it: None (none stored, or unreadable) is rewritten."""
    return old is None or old != new


def _condition(
    old: DarwinEndpointStatus | None,
    kind: str,
    value: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: float,
) -> Condition:
    status = "True" if value else "False"
    previous = find_condition(old.conditions if old else None, kind)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else format_time(now)
    )
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def _groups(
    views: Sequence[GroupView],
    old: DarwinEndpointStatus | None,
    now: float,
    history: health.History,
) -> list[GroupStatus]:
    before = {g.index: g for g in (old.groups if old else [])}
    result = []
    for v in views:
        prev = before.get(v.index)
        same = prev is not None and prev.phase == v.phase.value and prev.phase_since
        past = history.of(v.index)
        was_ready = prev is not None and prev.phase == GroupPhase.READY.value
        last_ready = prev.last_ready_time if prev else None
        if v.phase == GroupPhase.READY and not (was_ready and last_ready):
            last_ready = format_time(now)
        result.append(
            GroupStatus(
                index=v.index,
                revision=v.revision,
                phase=v.phase.value,
                pods=v.pods,
                pods_ready=v.pods_ready,
                restarts=past.restarts,
                message=v.message,
                last_failure=past.last_failure,
                phase_since=prev.phase_since if same else format_time(now),
                recreations=[
                    Recreation(at=format_time(r.at), reason=r.reason) for r in past.recreations
                ],
                last_ready_time=last_ready,
                startup=_startup(prev.startup if prev else [], v.phase.value, now),
                whole_incarnation=v.whole_incarnation,
            )
        )
    return result


# The phases of a start, in order; the time spent in each is kept in groups[].startup.
_STARTUP = tuple(p.value for p in STARTUP_ORDER)


def _startup(spans: Sequence[PhaseTime], phase: str, now: float) -> list[PhaseTime]:
    """The phases of the group's latest start: a phase further along closes the one before,
    one further back (or the first) begins a new start; Ready ends it."""
    spans = list(spans)
    last = spans[-1] if spans else None
    running = last is not None and last.seconds is None and last.phase != GroupPhase.READY
    if last is not None and running:
        started = parse_time(last.since) or now
        closed = last.model_copy(update={"seconds": max(0, round(now - started))})
    if phase not in _STARTUP:  # Draining, Terminating, Broken, BackingOff
        return [*spans[:-1], closed] if running else spans
    if last is not None and last.phase == phase and last.seconds is None:
        return spans
    begun = PhaseTime(phase=phase, since=format_time(now))
    if running and _STARTUP.index(phase) > _STARTUP.index(last.phase):
        return [*spans[:-1], closed, begun]
    return [begun]


def history_of(
    old: DarwinEndpointStatus | None, generation: int | None, restarted_at: str | None
) -> health.History:
    """The recreation history kept in the status; a fresh one when the spec (generation) or
    the restartedAt annotation changed since it was written: either starts the counts over."""
    fresh = health.History(generation=generation, restarted_at=restarted_at or "")
    kept = old.health if old else None
    if kept is None or (kept.generation, kept.restarted_at) != (
        fresh.generation,
        fresh.restarted_at,
    ):
        return fresh
    groups = tuple(
        (
            g.index,
            health.GroupHistory(
                recreations=tuple(
                    health.Recreation(at, r.reason)
                    for r in g.recreations
                    if (at := parse_time(r.at)) is not None
                ),
                restarts=g.restarts,
                last_failure=g.last_failure,
            ),
        )
        for g in old.groups
    )
    failure = kept.failure and health.Failure(
        group=kept.failure.group,
        reasons=tuple(kept.failure.reasons),
        message=kept.failure.message,
        since=parse_time(kept.failure.since) or 0.0,
    )
    return replace(fresh, groups=groups, failure=failure or None)


def _health(history: health.History) -> HealthStatus:
    failure = history.failure
    return HealthStatus(
        generation=history.generation,
        restarted_at=history.restarted_at,
        failure=failure
        and HealthFailure(
            group=failure.group,
            reasons=list(failure.reasons),
            message=failure.message,
            since=format_time(failure.since),
        ),
    )


def _problem(
    spec: DarwinEndpointSpec,
    wanted: Sequence[GroupView],
    blocked: str,
    groups: Sequence[GroupStatus] = (),
    failure: health.Failure | None = None,
    rejected: str = "",
):
    """(reason, message) of what needs a person's attention, or None."""
    if failure is not None:
        return Reason.MAX_GROUP_RESTARTS_EXCEEDED, failure.message
    if rejected:
        return Reason.WRITE_REJECTED, rejected
    if blocked:
        return Reason.SECRET_NOT_FOUND, blocked
    waiting = [v for v in wanted if v.phase == GroupPhase.WAITING_FOR_CAPACITY and v.reason]
    if waiting:
        v = waiting[0]
        reason = (
            Reason.NO_ELIGIBLE_NODES
            if v.reason == capacity.NO_ELIGIBLE_NODES
            else Reason.INSUFFICIENT_CAPACITY
        )
        return reason, f"{len(waiting)} group(s) waiting for capacity: {v.message}"
    broken = [v for v in wanted if v.phase == GroupPhase.BROKEN]
    if broken:
        return Reason.GROUP_BROKEN, f"group {broken[0].index}: {broken[0].message}"
    recovering = [g for g in groups if g.index < spec.replicas and _recovering(g)]
    if recovering:
        g = recovering[0]
        return Reason.GROUP_BROKEN, (
            f"group {g.index} recreated, not Ready since: {g.last_failure}; now {g.phase}"
            + (f": {g.message}" if g.message else "")
        )
    return None


def _recovering(group: GroupStatus) -> bool:
    """Recreated after a failure and not Ready since."""
    if group.phase == GroupPhase.READY.value or not group.recreations:
        return False
    failed_at = parse_time(group.recreations[-1].at) or 0.0
    return failed_at > (parse_time(group.last_ready_time) or 0.0)


def compute(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    spec: DarwinEndpointSpec,
    revision: str,
    views: Sequence[GroupView],
    old: DarwinEndpointStatus | None,
    now: float,
    blocked_reason: str = "",
    history: health.History | None = None,
    decision: rollout.Decision | None = None,
    rejected: str = "",
) -> DarwinEndpointStatus:
    """`decision`: the plan's rollout decision (surge groups above replicas are not surplus);
    `rejected`: the API server's message for a write it refused in this reconcile."""
    past = history or health.History(generation=generation)
    groups = _groups(views, old, now, past)
    spare = set(decision.surge) | set(decision.keep) if decision else set()
    wanted = [v for v in views if v.index < spec.replicas]
    surplus = [v for v in views if v.index >= spec.replicas and v.index not in spare]
    present = [v for v in views if v.pods > 0]
    ready = [v for v in present if v.phase == GroupPhase.READY]
    available = [v for v in ready if v.serving]  # a Ready surge group serves too
    updated = [v for v in present if v.revision == revision]
    old_revisions = Counter(v.revision for v in present if v.revision != revision)
    current = old_revisions.most_common(1)[0][0] if old_revisions else revision

    max_unavailable = rollout.limits(spec).max_unavailable
    needed = max(1, spec.replicas - max_unavailable) if spec.replicas else 0
    is_available = len(available) >= needed
    summary = f"{len(available)} of {spec.replicas} groups available"

    if decision is not None:
        rolling = decision.rolling
    else:
        partition = spec.rollout.partition
        rolling = any(v.revision != revision for v in wanted if v.index >= partition)
    settled = (
        not surplus
        and len(wanted) == spec.replicas
        and all(v.phase == GroupPhase.READY for v in wanted)
    )
    converged = settled and not rolling
    progress_reason = "Converged"
    if not converged:
        phases = {v.phase for v in wanted}
        progress_reason = next(
            (r for phase, r in _PROGRESS_ORDER if phase in phases),
            "ScalingDown" if surplus else "Reconciling",
        )
    problem = _problem(spec, wanted, blocked_reason, groups, past.failure, rejected)

    if past.failure is not None:
        phase = EndpointPhase.FAILED  # terminal until the spec or restartedAt changes
        converged, progress_reason = True, Reason.MAX_GROUP_RESTARTS_EXCEEDED.value
    elif converged and problem is None:
        phase = EndpointPhase.READY
    elif problem is not None:
        phase = EndpointPhase.DEGRADED
    elif not ready:
        phase = EndpointPhase.PENDING
    else:
        phase = EndpointPhase.PROGRESSING

    progress = (
        not converged,
        progress_reason,
        f"{len(ready)} of {spec.replicas} groups ready"
        + (f", {len(surplus)} being removed" if surplus else ""),
    )
    behind = sum(1 for v in wanted if v.revision != revision)
    if past.failure is None and (rolling or behind):
        progress = _rollout_progress(spec, revision, views, decision, settled, rolling, progress)
    started = None
    if rolling:
        same = old is not None and old.rollout_started_at and old.update_revision == revision
        started = old.rollout_started_at if same else format_time(now)
    conditions = [
        _condition(
            old,
            AVAILABLE,
            is_available,
            "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
            summary,
            generation,
            now,
        ),
        _condition(old, PROGRESSING, *progress, generation, now),
        _condition(
            old,
            DEGRADED,
            problem is not None,
            problem[0].value if problem else "AsExpected",
            problem[1] if problem else "",
            generation,
            now,
        ),
    ]
    no_cache = _no_cache_warning(spec)
    if no_cache is not None:
        conditions.append(_condition(old, WEIGHTS_CACHED, False, *no_cache, generation, now))
    return DarwinEndpointStatus(
        observed_generation=generation,
        phase=phase.value,
        replicas=len(present),
        ready_replicas=len(ready),
        ready=f"{len(ready)}/{spec.replicas}",
        updated_replicas=len(updated),
        available_replicas=len(available),
        current_revision=current,
        update_revision=revision,
        rollout_started_at=started,
        selector=selector(name),
        endpoint=endpoint_url(name, namespace, spec),
        conditions=conditions,
        groups=groups,
        health=_health(past) if history is not None else None,
    )


def _no_cache_warning(spec: DarwinEndpointSpec) -> tuple[str, str] | None:
    """(reason, message) of the WeightsCached=False warning, or None with a cache."""
    if spec.model.cache is not None:
        return None
    if spec.model.size is not None:
        room = f" ({spec.model.size}), and each requests that much ephemeral storage"
    else:
        room = ", with no room for it requested (set model.size)"
    return (
        Reason.EVERY_POD_DOWNLOADS.value,
        f"model.cache is not set: every pod downloads the whole model on every start{room}; "
        "set model.cache (staging PerNode: once per node) to keep the weights across restarts",
    )


def _rollout_progress(
    spec: DarwinEndpointSpec,
    revision: str,
    views: Sequence[GroupView],
    decision: rollout.Decision | None,
    settled: bool,
    rolling: bool,
    otherwise: tuple[bool, str, str],
) -> tuple[bool, str, str]:
    """The Progressing condition (status, reason, message) of a rollout, under way or done as
    far as the partition allows."""
    wanted = [v for v in views if v.index < spec.replicas]
    text = f"{sum(1 for v in wanted if v.revision == revision)}/{spec.replicas} groups updated"
    if not rolling:  # the groups below the partition stay
        return otherwise[0], otherwise[1], f"{text} (partition {spec.rollout.partition})"
    if spec.rollout.paused:
        return not settled, "RolloutPaused", f"rollout paused: {text}"
    surge = set(decision.surge) if decision else set()
    waiting = [
        v
        for v in views
        if v.index in surge and v.phase == GroupPhase.WAITING_FOR_CAPACITY and v.reason
    ]
    if waiting:
        lim = rollout.limits(spec)
        how = (
            f"replacing in place, up to {lim.max_unavailable} at a time"
            if lim.max_unavailable
            else "maxUnavailable is 0: waiting for room"
        )
        text += f"; no room for a surge group ({waiting[0].message}); {how}"
    return True, "RollingUpdate", text


def failed(
    *,
    name: str,
    generation: int | None,
    old: DarwinEndpointStatus | None,
    reason: Reason,
    message: str,
    now: float,
) -> DarwinEndpointStatus:
    """A spec the operator cannot act on: Failed, with the reason where a person looks first."""
    base = old.model_copy() if old else DarwinEndpointStatus()
    conditions = [
        _condition(old, AVAILABLE, False, "SpecInvalid", message, generation, now),
        _condition(old, PROGRESSING, False, "SpecInvalid", message, generation, now),
        _condition(old, DEGRADED, True, reason.value, message, generation, now),
    ]
    return base.model_copy(
        update={
            "observed_generation": generation,
            "phase": EndpointPhase.FAILED.value,
            "selector": selector(name),
            "conditions": conditions,
        }
    )


def transitions(
    old: DarwinEndpointStatus | None, new: DarwinEndpointStatus, now: float | None = None
) -> list[EventNote]:
    """Events for what changed between two statuses; the old one comes from the cluster, so a
    restarted operator does not repeat them."""
    notes: list[EventNote] = _rollout_transitions(old, new, now)
    before = {g.index: g for g in (old.groups if old else [])}
    for g in new.groups:
        prev = before.get(g.index)
        for _ in new_recreations(prev, g):
            notes.append(
                EventNote(
                    WARNING,
                    Reason.GROUP_RECREATING,
                    f"group {g.index} is broken and is recreated whole: {g.last_failure} "
                    f"({g.restarts} recreation(s) since the spec last changed)",
                )
            )
        if prev is not None and prev.phase == g.phase:
            continue
        if g.phase == GroupPhase.WAITING_FOR_CAPACITY.value and not g.message.startswith(
            "waiting for admission"
        ):
            notes.append(
                EventNote(WARNING, Reason.WAITING_FOR_CAPACITY, f"group {g.index}: {g.message}")
            )
        elif g.phase == GroupPhase.READY.value:
            notes.append(EventNote(NORMAL, Reason.GROUP_READY, f"group {g.index} is Ready"))
    old_degraded = find_condition(old.conditions if old else None, DEGRADED)
    new_degraded = find_condition(new.conditions, DEGRADED)
    if (
        new_degraded is not None
        and new_degraded.status == "True"
        and (
            old_degraded is None
            or old_degraded.status != "True"
            or old_degraded.reason != new_degraded.reason
        )
        and new_degraded.reason in Reason._value2member_map_
    ):
        notes.append(EventNote(WARNING, Reason(new_degraded.reason), new_degraded.message))
    old_cached = find_condition(old.conditions if old else None, WEIGHTS_CACHED)
    new_cached = find_condition(new.conditions, WEIGHTS_CACHED)
    if new_cached is not None and (old_cached is None or old_cached.status != new_cached.status):
        notes.append(EventNote(WARNING, Reason.EVERY_POD_DOWNLOADS, new_cached.message))
    if new.phase == EndpointPhase.READY and (old is None or old.phase != EndpointPhase.READY):
        notes.append(
            EventNote(
                NORMAL,
                Reason.ENDPOINT_READY,
                f"{new.ready_replicas} of {new.ready_replicas} groups ready at {new.endpoint}",
            )
        )
    return notes


def _rollout_transitions(
    old: DarwinEndpointStatus | None, new: DarwinEndpointStatus, now: float | None
) -> list[EventNote]:
    began, before = new.rollout_started_at, old.rollout_started_at if old else None
    if began and began != before:
        return [EventNote(NORMAL, Reason.ROLLOUT_STARTED, f"rolling out {new.update_revision}")]
    if before and not began and old.update_revision == new.update_revision:
        start = parse_time(before)
        took = f" in {now - start:.0f}s" if now is not None and start is not None else ""
        message = f"revision {new.update_revision} rolled out{took}"
        return [EventNote(NORMAL, Reason.ROLLOUT_COMPLETE, message)]
    return []


def new_recreations(old: GroupStatus | None, new: GroupStatus) -> list[str]:
    """Reasons of the recreations in `new` that `old` did not have yet."""
    seen = {(r.at, r.reason) for r in (old.recreations if old else [])}
    return [r.reason for r in new.recreations if (r.at, r.reason) not in seen]
