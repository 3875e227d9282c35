"""Rolling updates by replica group (pure): which groups to replace now, which surge groups to run.

The planner classifies every group once (its phase, the health logic's verdicts included),
asks `decide()`, and acts on the states and the decision. Everything the decision rests on is in
the cluster: each group's revision label, the drain mark on its leader, its pods' states, and the
endpoint's status.rolloutStartedAt. So a restarted operator picks a rollout up where it stands
and never spends the same budget twice.

Limits, as a Deployment's. With R = spec.replicas, U = maxUnavailable and S = maxSurge in groups
(percentages of R, U rounded down and S up; if both come to 0, U is 1):

- Available groups (Ready and behind the client Service, any index) never drop below R - U by the
  operator's doing. Every planned takedown of an available group spends one unit of the budget
  `available - (R - U)`: a replaced old group, a surge group no longer needed, and during a
  rollout a group above replicas after a scale-down too. Every group that is not available counts
  against the limit, old and new alike: starting, missing, broken, draining (from the moment its
  leader leaves the Service, the planner's first step of every planned deletion). The health
  logic recreates broken groups without asking: they are down already, and leave less for the
  rollout. A surge group not Ready yet is above R and counts against nothing, which is what
  lets maxUnavailable 0 with maxSurge 1 make progress.
- Groups that exist (any pod, terminating ones too: they still hold GPUs) never exceed R + S
  through the rollout: surge groups are created only inside that room. (A wanted index lost
  while groups above a scale-down still drain is created again at once; it waits gated.)
- Outside a rollout, groups above a scale-down leave at once, as the user asked: held back they
  could keep the GPUs a wanted group waits for.

Order: old groups (a revision other than the update revision, index >= partition) are replaced
highest index first. An old group that is not available anyway (pending, waiting for capacity,
scheduling, starting) is replaced at once: that costs no availability. Broken groups are the
health logic's and terminating ones are already going: neither is touched.

Indices and incarnations. A replaced group is drained (drainSeconds > 0), deleted, and in the same
reconcile created again at the same index as its next incarnation, whose pod names are its own
(vocabulary.pod_name): it waits gated while the old pods still hold the GPUs, and is admitted as
soon as they are free. An index counts once whatever incarnations it has: the new one is not
available, the old one serves no more (the delete stamp takes it out of the Service). Surge
groups take the lowest free indices >= R and are spare capacity, not replacements: while one is
Ready, one more old group may go down in place. Once no old group
>= partition is left, surge groups leave, highest first, within the budget. Indices therefore
settle to 0..R-1 by themselves: an index keeps one identity (DARWIN_GROUP_INDEX, partition,
status.groups, `kubectl scale`), nothing is renumbered, and a scale-up during a rollout adopts a
Ready surge group at its index. The price is one extra group start per surge group per rollout,
next to the R starts in place, and one extra drain at the end.

A rollout is under way from the first old group until no old group is left, no group is held
back for the budget and every group >= partition is Ready; status.rolloutStartedAt marks it
meanwhile (the start of the duration metric, and how a restarted operator knows the groups above
replicas are surge groups still to retire within the budget).

GPUs. A surge group asks for admission (gang: Gate) only while no wanted group (index < R) is
unplaced (missing, pending, waiting for capacity, terminating, backing off): GPUs an in-place
replacement frees go to the wanted group. Without room for it a surge group waits gated, holding
nothing, the status says so, and the rollout goes on in place as far as maxUnavailable allows
(with maxUnavailable 0 it waits: that is what the user asked for).

`paused` freezes the rollout where it stands: nothing new is drained or created for it, and a
drain in flight is called off (the leader returns to the Service). Scaling still works; groups
already deleted are created again, at the update revision. A group below `partition` that is
lost comes back on the revision it had, from the spec kept for it (revisions.py).

A second spec change retargets the rollout: every group of another revision is old, those the
rollout just created included; the ones still starting are replaced at once, Ready ones in turn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import count, islice
from typing import Protocol

from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.observed import Observed, ObservedGroup
from darwin_operator.vocabulary import GroupPhase

# Down, holding no traffic, and not in anyone else's hands: replacing them costs nothing.
REPLACEABLE_WHILE_DOWN = frozenset(
    {
        GroupPhase.PENDING,
        GroupPhase.WAITING_FOR_CAPACITY,
        GroupPhase.SCHEDULING,
        GroupPhase.STARTING,
    }
)
# A wanted group in one of these phases (or missing) still needs GPUs that are not its own yet.
UNPLACED = frozenset(
    {
        GroupPhase.PENDING,
        GroupPhase.WAITING_FOR_CAPACITY,
        GroupPhase.TERMINATING,
        GroupPhase.BACKING_OFF,
    }
)


class GroupState(Protocol):
    """What the planner's classification tells about a group (planner.GroupView)."""

    index: int
    phase: GroupPhase
    serving: bool


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """maxUnavailable / maxSurge as a number of groups, the way Deployments resolve them."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        scaled = float(text[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(text)


@dataclass(frozen=True)
class Limits:
    max_unavailable: int
    max_surge: int


def limits(spec: DarwinEndpointSpec) -> Limits:
    total = spec.replicas
    unavailable = resolve_int_or_percent(spec.rollout.max_unavailable, total, round_up=False)
    surge = resolve_int_or_percent(spec.rollout.max_surge, total, round_up=True)
    if unavailable == 0 and surge == 0:  # e.g. 10% of 4: a rollout must be able to move
        unavailable = 1
    return Limits(unavailable, surge)


@dataclass(frozen=True)
class Decision:
    replace: frozenset[int] = frozenset()  # wanted groups to drain and delete (or keep draining)
    surge: tuple[int, ...] = ()  # groups >= replicas to plan as wanted: kept or created
    keep: frozenset[int] = frozenset()  # groups >= replicas left serving: the budget is spent
    hold: frozenset[int] = frozenset()  # surge groups that may not ask for GPUs yet
    pending: int = 0  # groups >= partition (and < replicas) on another revision
    paused: bool = False
    rolling: bool = False  # a rollout is under way: groups pending, or new ones not all Ready


def _leaving(g: ObservedGroup) -> bool:
    leader = g.leader
    return any(p.deleting for p in g.pods) or (leader is not None and leader.serving == "false")


def _draining(g: ObservedGroup) -> bool:
    """Its leader left the Service (a drain in flight) and nothing is deleted yet."""
    leader = g.leader
    return leader is not None and leader.serving == "false" and not any(p.deleting for p in g.pods)


def decide(
    spec: DarwinEndpointSpec,
    revision: str,
    observed: Observed,
    states: Iterable[GroupState],
    *,
    in_progress: bool = False,
) -> Decision:
    """`in_progress`: the status remembers a rollout under way (status.rolloutStartedAt)."""
    replicas, partition, paused = spec.replicas, spec.rollout.partition, spec.rollout.paused
    lim = limits(spec)
    state = {s.index: s for s in states}
    groups = {g.index: g for g in observed.groups}

    def available(index: int) -> bool:
        s = state.get(index)
        return s is not None and s.phase == GroupPhase.READY and s.serving

    old = sorted(
        i for i, g in groups.items() if partition <= i < replicas and g.revision != revision
    )
    # Begun and not done: the status remembers a rollout once no old group is left, while the
    # last new groups start and surge groups wait to leave.
    under_way = bool(old) or in_progress
    target = min(lim.max_surge, len(old))
    fresh = [
        i
        for i, g in sorted(groups.items())
        if under_way and i >= replicas and g.revision == revision and not _leaving(g)
    ]
    surge = fresh[:target]
    budget = sum(1 for i in groups if available(i)) - (replicas - lim.max_unavailable)

    # During a rollout, groups above replicas that are not kept as surge (spare surge groups,
    # surge groups of an earlier target, groups above a scale-down) leave highest index first
    # as far as the budget allows. Without a rollout, groups above a scale-down leave at once,
    # as the user asked: held back, they could keep GPUs a wanted group waits for.
    keep: set[int] = set()
    spare = [i for i in groups if under_way and i >= replicas and i not in surge and available(i)]
    for index in sorted(spare, reverse=True):
        if budget > 0:
            budget -= 1
        else:
            keep.add(index)

    replace: set[int] = set()
    if not paused:
        for index in reversed(old):
            s = state.get(index)
            if _draining(groups[index]):
                replace.add(index)  # chosen before: unavailable since, it spends nothing more
            elif available(index):
                if budget > 0:
                    budget -= 1
                    replace.add(index)
            elif s is not None and s.phase in REPLACEABLE_WHILE_DOWN:
                replace.add(index)
        leaving = {g.index for g in observed.leaving}  # still there, still holding GPUs
        surge += _new_surge(groups.keys() | leaving, replicas, lim.max_surge, target - len(surge))

    # Done once no old group is left, none is held back, and the new ones are Ready.
    rolling = (
        bool(old)
        or bool(keep)
        or (under_way and not all(available(i) for i in range(partition, replicas)))
    )
    unplaced = any(
        i not in groups or (s := state.get(i)) is None or s.phase in UNPLACED
        for i in range(replicas)
    )
    return Decision(
        replace=frozenset(replace),
        surge=tuple(surge),
        keep=frozenset(keep),
        hold=frozenset(surge) if unplaced else frozenset(),
        pending=len(old),
        paused=paused,
        rolling=rolling,
    )


def _new_surge(groups: Iterable[int], replicas: int, max_surge: int, wanted: int) -> Sequence[int]:
    """Lowest free indices >= replicas for new surge groups, within replicas + maxSurge groups
    (`groups`: the indices that have pods)."""
    present = set(groups) | set(range(replicas))
    room = replicas + max_surge - len(present)
    free = (i for i in count(replicas) if i not in present)
    return list(islice(free, max(0, min(wanted, room))))
