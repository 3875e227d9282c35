"""The planner's plan bent around staged weights, and what the status says of them (pure).

With model.cache.staging a group's gates are lifted only onto nodes that hold its weights (its
last nodes first, for a warm page cache), a group none of whose candidate nodes holds them yet
shows Downloading, a rollout drains a group only once all its nodes hold the new weights, and a
started group shows Loading (its clock, startupTimeoutSeconds, no longer covers a download).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from darwin_operator import planner, weights
from darwin_operator.api import Condition, DarwinEndpointStatus, NodeWeights
from darwin_operator.events import WARNING, EventNote, Reason
from darwin_operator.observed import Observed
from darwin_operator.vocabulary import GroupPhase, find_condition, format_time

_LOADING_FROM = {GroupPhase.STARTING: GroupPhase.LOADING}


def _summary(plan: weights.WeightsPlan) -> str:
    if plan.shared:
        return f"{plan.copy} on the shared volume: {plan.nodes[0].state if plan.nodes else '-'}"
    return f"{plan.copy} staged on {len(plan.staged)} of {len(plan.nodes)} eligible nodes"


def restrict(
    plan: planner.Plan,
    wplan: weights.WeightsPlan,
    observed: Observed,
    copies: Mapping[str, weights.Copy | None],
    last_nodes: Mapping[int, Sequence[str]],
) -> planner.Plan:
    """`copies`: the copy each group revision loads from (a revision not in it: the update
    copy); `last_nodes`: status.groups[].nodes."""
    views = {v.index: v for v in plan.groups}
    admissions = []
    for a in plan.admissions:
        g = observed.group(a.index)
        copy = copies.get(g.revision, wplan.copy) if g is not None else wplan.copy
        held = wplan.holders.get(copy.key, frozenset()) if copy is not None else None
        if wplan.shared:
            if held is not None and "" not in held:
                views[a.index] = replace(
                    views[a.index],
                    phase=GroupPhase.DOWNLOADING,
                    message=f"waiting for weights: {_summary(wplan)}",
                )
                continue
            held = None
        if held is not None and not held:
            views[a.index] = replace(
                views[a.index],
                phase=GroupPhase.DOWNLOADING,
                message=f"waiting for weights: {_summary(wplan)}",
            )
            continue
        demand = replace(a.demand, only_nodes=held, prefer=tuple(last_nodes.get(a.index, ())))
        admissions.append(replace(a, demand=demand))

    actions = []
    for action in plan.actions:
        if isinstance(action, planner.DrainGroup) and action.index in plan.rollout.replace:
            g = observed.group(action.index)
            nodes = weights.group_nodes(g.pods) if g is not None else ()
            held = wplan.holders.get(wplan.copy.key, frozenset())
            missing = [n for n in nodes if n not in held and not wplan.shared]
            if wplan.shared and "" not in held:
                missing = ["the shared volume"]
            if missing:
                view = views[action.index]
                views[action.index] = replace(
                    view,
                    phase=GroupPhase.READY if view.serving else view.phase,
                    message=(
                        f"replaced once {', '.join(missing)} hold {wplan.copy} "
                        f"(staging first; {_summary(wplan)})"
                    ),
                )
                continue
        actions.append(action)
    return replace(
        plan,
        actions=tuple(actions),
        admissions=tuple(admissions),
        groups=tuple(_loading(views[i]) for i in sorted(views)),
    )


def _loading(view: planner.GroupView) -> planner.GroupView:
    phase = _LOADING_FROM.get(view.phase)
    return replace(view, phase=phase) if phase else view


def settle(plan: planner.Plan, wplan: weights.WeightsPlan) -> planner.Plan:
    """After admission: a group that found no room while some eligible nodes are still
    downloading (or failed to) waits for the weights, not for capacity."""
    if wplan.complete:
        return plan
    groups = []
    for v in plan.groups:
        if v.phase == GroupPhase.WAITING_FOR_CAPACITY and v.reason:
            v = replace(
                v,
                phase=GroupPhase.DOWNLOADING,
                message=f"waiting for weights: {_summary(wplan)}; {v.message}",
                reason="",
            )
        groups.append(_loading(v))
    return replace(plan, groups=tuple(groups))


def last_nodes(old: DarwinEndpointStatus | None) -> dict[int, tuple[str, ...]]:
    return {g.index: tuple(g.nodes) for g in (old.groups if old else ())}


def report(
    new: DarwinEndpointStatus,
    old: DarwinEndpointStatus | None,
    wplan: weights.WeightsPlan,
    observed: Observed,
    now: float,
) -> list[EventNote]:
    """Put the copies, the groups' nodes and the WeightsReady condition into `new` (in place);
    the Events for what changed."""
    remembered = last_nodes(old)
    for g in new.groups:
        seen = observed.group(g.index)
        nodes = weights.group_nodes(seen.pods) if seen is not None else ()
        g.nodes = list(nodes or remembered.get(g.index, ()))
    new.weights = [
        NodeWeights(
            node=n.node,
            model=wplan.copy.model,
            revision=wplan.copy.revision,
            state=n.state,
            since=format_time(n.since) if n.since else None,
            message=n.message,
            pod=n.pod,
        )
        for n in wplan.nodes
    ]
    if wplan.problem is not None:
        status, (reason, message) = "False", wplan.problem
    elif wplan.complete:
        status, reason, message = "True", "Staged", _summary(wplan)
    else:
        status, reason, message = "False", "Downloading", _summary(wplan)
    before = find_condition(old.conditions if old else None, weights.CONDITION)
    since = (
        before.last_transition_time
        if before is not None and before.status == status and before.last_transition_time
        else format_time(now)
    )
    new.conditions = [c for c in new.conditions if c.type != weights.CONDITION] + [
        Condition(
            type=weights.CONDITION,
            status=status,
            reason=reason,
            message=message[:1024],
            last_transition_time=since,
            observed_generation=new.observed_generation,
        )
    ]
    notes = []
    if wplan.problem is not None and (
        before is None or before.reason != reason or before.status != "False"
    ):
        notes.append(EventNote(WARNING, Reason.STAGING_FAILED, f"{reason}: {message}"))
    return notes
