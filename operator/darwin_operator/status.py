"""The endpoint's status, its conditions and the events its changes deserve (pure)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from darwin_operator import capacity, topology
from darwin_operator.api import Condition, DarwinEndpointSpec, DarwinEndpointStatus, GroupStatus
from darwin_operator.events import NORMAL, WARNING, EventNote, Reason
from darwin_operator.observed import format_time
from darwin_operator.planner import GroupPhase, GroupView

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

# Phases of a wanted group, least advanced first: the first one present names the progress.
_PROGRESS_ORDER = (
    (GroupPhase.TERMINATING, "RecreatingGroups"),
    (GroupPhase.PENDING, "CreatingGroups"),
    (GroupPhase.WAITING_FOR_CAPACITY, "WaitingForCapacity"),
    (GroupPhase.SCHEDULING, "Scheduling"),
    (GroupPhase.STARTING, "Starting"),
    (GroupPhase.BROKEN, "GroupBroken"),
)


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """maxUnavailable / maxSurge as a number of groups, the way Deployments resolve them."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        scaled = float(text[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(text)


def selector(name: str) -> str:
    return topology.leader_selector(name)


def endpoint_url(name: str, namespace: str, spec: DarwinEndpointSpec) -> str:
    service = topology.client_service_name(name)
    return f"http://{service}.{namespace}.svc:{spec.service.port}/v1"


def parse_old(status: Mapping[str, Any] | None) -> DarwinEndpointStatus | None:
    if not status:
        return None
    try:
        return DarwinEndpointStatus.model_validate(status)
    except ValidationError:
        return None


def to_wire(status: DarwinEndpointStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def changed(old: Mapping[str, Any] | None, new: DarwinEndpointStatus) -> bool:
    parsed = parse_old(old)
    return parsed is None or to_wire(parsed) != to_wire(new)


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
    previous = next((c for c in (old.conditions if old else []) if c.type == kind), None)
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
    views: Sequence[GroupView], old: DarwinEndpointStatus | None, now: float
) -> list[GroupStatus]:
    before = {g.index: g for g in (old.groups if old else [])}
    result = []
    for v in views:
        prev = before.get(v.index)
        same = prev is not None and prev.phase == v.phase.value and prev.phase_since
        result.append(
            GroupStatus(
                index=v.index,
                revision=v.revision,
                phase=v.phase.value,
                pods=v.pods,
                pods_ready=v.pods_ready,
                restarts=v.restarts,
                message=v.message,
                last_failure=prev.last_failure if prev else "",
                phase_since=prev.phase_since if same else format_time(now),
            )
        )
    return result


def _problem(spec: DarwinEndpointSpec, wanted: Sequence[GroupView], blocked: str):
    """(reason, message) of what needs a person's attention, or None."""
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
    return None


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
) -> DarwinEndpointStatus:
    wanted = [v for v in views if v.index < spec.replicas]
    surplus = [v for v in views if v.index >= spec.replicas]
    present = [v for v in views if v.pods > 0]
    ready = [v for v in present if v.phase == GroupPhase.READY]
    available = [v for v in ready if v.serving and v.index < spec.replicas]
    updated = [v for v in present if v.revision == revision]
    old_revisions = Counter(v.revision for v in present if v.revision != revision)
    current = old_revisions.most_common(1)[0][0] if old_revisions else revision

    max_unavailable = resolve_int_or_percent(
        spec.rollout.max_unavailable, spec.replicas, round_up=False
    )
    needed = max(1, spec.replicas - max_unavailable) if spec.replicas else 0
    is_available = len(available) >= needed
    summary = f"{len(available)} of {spec.replicas} groups available"

    converged = (
        not surplus
        and len(wanted) == spec.replicas
        and all(v.phase == GroupPhase.READY and v.revision == revision for v in wanted)
    )
    progress_reason = "Converged"
    if not converged:
        phases = {v.phase for v in wanted}
        progress_reason = next(
            (r for phase, r in _PROGRESS_ORDER if phase in phases),
            "ScalingDown" if surplus else "Reconciling",
        )
    problem = _problem(spec, wanted, blocked_reason)

    if converged and problem is None:
        phase = "Ready"
    elif problem is not None:
        phase = "Degraded"
    elif not ready:
        phase = "Pending"
    else:
        phase = "Progressing"

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
        _condition(
            old,
            PROGRESSING,
            not converged,
            progress_reason,
            f"{len(ready)} of {spec.replicas} groups ready"
            + (f", {len(surplus)} being removed" if surplus else ""),
            generation,
            now,
        ),
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
    return DarwinEndpointStatus(
        observed_generation=generation,
        phase=phase,
        replicas=len(present),
        ready_replicas=len(ready),
        ready=f"{len(ready)}/{spec.replicas}",
        updated_replicas=len(updated),
        available_replicas=len(available),
        current_revision=current,
        update_revision=revision,
        selector=selector(name),
        endpoint=endpoint_url(name, namespace, spec),
        conditions=conditions,
        groups=_groups(views, old, now),
    )


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
            "phase": "Failed",
            "selector": selector(name),
            "conditions": conditions,
        }
    )


def transitions(old: DarwinEndpointStatus | None, new: DarwinEndpointStatus) -> list[EventNote]:
    """Events for what changed between two statuses; the old one comes from the cluster, so a
    restarted operator does not repeat them."""
    notes: list[EventNote] = []
    before = {g.index: g for g in (old.groups if old else [])}
    for g in new.groups:
        prev = before.get(g.index)
        if prev is not None and prev.phase == g.phase:
            continue
        if (
            g.phase == GroupPhase.WAITING_FOR_CAPACITY.value
            and g.message != "waiting for admission"
        ):
            notes.append(
                EventNote(WARNING, Reason.WAITING_FOR_CAPACITY, f"group {g.index}: {g.message}")
            )
        elif g.phase == GroupPhase.READY.value:
            notes.append(EventNote(NORMAL, Reason.GROUP_READY, f"group {g.index} is Ready"))
    old_degraded = _find(old, DEGRADED)
    new_degraded = _find(new, DEGRADED)
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
    if new.phase == "Ready" and (old is None or old.phase != "Ready"):
        notes.append(
            EventNote(
                NORMAL,
                Reason.ENDPOINT_READY,
                f"{new.ready_replicas} of {new.ready_replicas} groups ready at {new.endpoint}",
            )
        )
    return notes


def _find(status: DarwinEndpointStatus | None, kind: str) -> Condition | None:
    return next((c for c in (status.conditions if status else []) if c.type == kind), None)
