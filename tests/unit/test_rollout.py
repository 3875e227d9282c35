"""The rollout's decisions, situation by situation: budget, order, surge, partition, pause."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from darwin_operator import rollout, status
from darwin_operator.planner import (
    DRAIN_SETTLE_SECONDS,
    CreateGroup,
    DeleteGroup,
    DrainGroup,
    GroupView,
    RestoreServing,
)
from darwin_operator.vocabulary import DeleteReason, GroupPhase
from tests.unit.planner_fixtures import T0, group_pods, make_plan, make_spec, observe, revision

OLD = "old-rev"


@dataclass(frozen=True)
class State:
    index: int
    phase: str
    serving: bool = False


def ready(*indices: int) -> list[State]:
    return [State(i, GroupPhase.READY, True) for i in indices]


def groups(spec, indices, rev=OLD, state="ready", **fields):
    return [p for i in indices for p in group_pods(spec, i, state=state, rev=rev, **fields)]


def draining(spec, index, rev=OLD):
    pods = group_pods(spec, index, state="ready", rev=rev)
    return [replace(pods[0], serving="false", drain_started_at=0.0), *pods[1:]]


def decide(spec, pods, states, rollout_in_progress=False):
    observed = observe(spec, pods)
    return rollout.decide(spec, revision(spec), observed, states, in_progress=rollout_in_progress)


def test_the_phases_the_rollout_reads_are_the_planners():
    names = {p.value for p in GroupPhase}
    assert {GroupPhase.READY} | rollout.REPLACEABLE_WHILE_DOWN | rollout.UNPLACED <= names


@pytest.mark.parametrize(
    ("replicas", "unavailable", "surge", "expected"),
    [
        (10, "25%", "25%", (2, 3)),  # unavailable rounds down, surge rounds up
        (4, 1, 0, (1, 0)),
        (4, 0, 1, (0, 1)),
        (4, "10%", "0%", (1, 0)),  # both 0 once resolved: a rollout must be able to move
        (4, "100%", 0, (4, 0)),
        (3, "50%", "50%", (1, 2)),
    ],
)
def test_limits_resolve_like_a_deployment(replicas, unavailable, surge, expected):
    spec = make_spec(replicas=replicas, rollout={"maxUnavailable": unavailable, "maxSurge": surge})
    assert tuple(rollout.limits(spec).__dict__.values()) == expected


def test_one_at_a_time_highest_index_first():
    spec = make_spec(replicas=4)
    d = decide(spec, groups(spec, range(4)), ready(0, 1, 2, 3))
    assert d.replace == {3} and d.pending == 4 and d.surge == ()

    new3 = groups(spec, [3], rev=revision(spec), state="bound")
    d = decide(spec, [*groups(spec, range(3)), *new3], [*ready(0, 1, 2), State(3, "Starting")])
    assert d.replace == set() and d.pending == 3  # group 3 is down: the budget is spent

    d = decide(spec, groups(spec, range(3)), ready(0, 1, 2))  # 3 deleted, not created yet
    assert d.replace == set()


def test_a_drain_in_flight_goes_on_and_spends_nothing_more():
    spec = make_spec(replicas=4)
    pods = [*groups(spec, range(3)), *draining(spec, 3)]
    d = decide(spec, pods, [*ready(0, 1, 2), State(3, GroupPhase.READY, serving=False)])
    assert d.replace == {3}


def test_broken_groups_count_as_unavailable_and_are_left_to_the_health_logic():
    spec = make_spec(replicas=4)
    states = [*ready(0, 2, 3), State(1, GroupPhase.BROKEN)]
    assert decide(spec, groups(spec, range(4)), states).replace == set()
    spec2 = make_spec(replicas=4, rollout={"maxUnavailable": 2})
    assert decide(spec2, groups(spec2, range(4)), states).replace == {3}


def test_old_groups_that_are_down_anyway_are_replaced_at_once():
    spec = make_spec(replicas=4)
    states = [
        *ready(0, 3),
        State(1, GroupPhase.STARTING),
        State(2, GroupPhase.WAITING_FOR_CAPACITY),
    ]
    # 2 of 4 available with maxUnavailable 1: no Ready group may go, the others cost nothing
    assert decide(spec, groups(spec, range(4)), states).replace == {1, 2}


def test_partition_keeps_the_lower_groups():
    spec = make_spec(replicas=4, rollout={"partition": 2, "maxUnavailable": 4})
    d = decide(spec, groups(spec, range(4)), ready(0, 1, 2, 3))
    assert d.replace == {2, 3} and d.pending == 2
    done = [*groups(spec, range(2)), *groups(spec, [2, 3], rev=revision(spec))]
    assert decide(spec, done, ready(0, 1, 2, 3)).pending == 0


def test_paused_starts_nothing_and_calls_a_drain_in_flight_off():
    spec = make_spec(replicas=4, rollout={"paused": True, "maxSurge": 1})
    pods = [*groups(spec, range(3)), *draining(spec, 3)]
    d = decide(spec, pods, [*ready(0, 1, 2), State(3, GroupPhase.READY, serving=False)])
    assert d.replace == set() and d.surge == () and d.paused and d.pending == 4


def test_surge_with_no_unavailability_allowed():
    spec = make_spec(replicas=4, rollout={"maxUnavailable": 0, "maxSurge": 1})
    new = revision(spec)
    d = decide(spec, groups(spec, range(4)), ready(0, 1, 2, 3))
    assert d.surge == (4,) and d.replace == set() and d.hold == set()

    starting = groups(spec, [4], rev=new, state="bound")
    d = decide(
        spec, [*groups(spec, range(4)), *starting], [*ready(0, 1, 2, 3), State(4, "Starting")]
    )
    assert d.surge == (4,) and d.replace == set()

    surge_ready = groups(spec, [4], rev=new)
    d = decide(spec, [*groups(spec, range(4)), *surge_ready], ready(0, 1, 2, 3, 4))
    assert d.surge == (4,) and d.replace == {3}

    # the last old group went; the surge group stays until the new group 0 is Ready (the
    # status tells the rollout is under way)
    last = [*groups(spec, range(1, 4), rev=new), *surge_ready]
    d = decide(
        spec, last, [State(0, GroupPhase.PENDING), *ready(1, 2, 3, 4)], rollout_in_progress=True
    )
    assert d.pending == 0 and d.surge == () and d.keep == {4} and d.rolling
    done = [*groups(spec, range(4), rev=new), *surge_ready]
    d = decide(spec, done, ready(0, 1, 2, 3, 4), rollout_in_progress=True)
    assert d.keep == set() and d.surge == () and not d.rolling  # group 4 leaves


def test_surge_groups_ask_for_gpus_only_when_every_wanted_group_is_placed():
    spec = make_spec(replicas=4, rollout={"maxUnavailable": 1, "maxSurge": 1})
    surge = groups(spec, [4], rev=revision(spec), state="gated")
    waiting = State(4, GroupPhase.WAITING_FOR_CAPACITY)
    d = decide(spec, [*groups(spec, range(4)), *surge], [*ready(0, 1, 2, 3), waiting])
    assert d.surge == (4,) and d.hold == set() and d.replace == {3}
    # group 3 deleted in place: its GPUs are for its successor
    d = decide(spec, [*groups(spec, range(3)), *surge], [*ready(0, 1, 2), waiting])
    assert d.hold == {4}


def test_no_surge_beyond_replicas_plus_max_surge_groups():
    spec = make_spec(replicas=4, rollout={"maxUnavailable": 1, "maxSurge": 1})
    leaving = [replace(p, deleting=True) for p in groups(spec, [4])]  # an old group above R
    d = decide(
        spec, [*groups(spec, range(4)), *leaving], [*ready(0, 1, 2, 3), State(4, "Terminating")]
    )
    assert d.surge == ()


def test_spare_surge_groups_leave_within_the_budget_groups_above_a_scale_down_at_once():
    spec = make_spec(replicas=2, rollout={"maxUnavailable": 0, "maxSurge": 1})
    new = revision(spec)
    pods = groups(spec, range(4), rev=new)
    states = [State(0, "Starting"), *ready(1, 2, 3)]
    d = decide(spec, pods, states, rollout_in_progress=True)
    assert d.keep == {2}  # 3 available, 2 needed: one may go, the highest
    assert decide(spec, pods, ready(0, 1, 2, 3), rollout_in_progress=True).keep == set()
    # no rollout under way: a scale-down, groups 2 and 3 go whatever the budget says
    assert decide(spec, pods, states).keep == set()


def test_a_second_change_replaces_groups_of_the_first_that_are_still_starting():
    spec = make_spec(replicas=4, engine={"image": "vllm/vllm-openai:v3"})
    first = groups(spec, [3], rev="second-rev", state="bound")
    d = decide(spec, [*groups(spec, range(3)), *first], [*ready(0, 1, 2), State(3, "Starting")])
    assert d.replace == {3} and d.pending == 4


# ---- the planner acting on the decision ----


def test_planner_drains_the_replaced_group_then_deletes_it_and_recreates_it_new():
    spec = make_spec(replicas=2)
    plan = make_plan(spec, observe(spec, groups(spec, range(2))))
    # the disruption budget counts the drain before it starts (objects are applied first)
    budget, drain = plan.actions
    assert budget.key == "PodDisruptionBudget/darwin-398b-members"
    assert budget.body["spec"]["minAvailable"] == 2  # 2 pods - 1 unavailable + 1 draining
    assert drain == DrainGroup(1, "darwin-398b-1-0")
    assert plan.requeue_after == 30 + DRAIN_SETTLE_SECONDS
    assert plan.groups[1].phase == GroupPhase.DRAINING
    assert plan.groups[1].message.startswith(f"replacing revision {OLD} with {revision(spec)}")

    drained = [*groups(spec, [0]), *draining(spec, 1)]
    drained[1] = replace(drained[1], drain_started_at=T0 - 30 - DRAIN_SETTLE_SECONDS)
    plan = make_plan(spec, observe(spec, drained))
    # deleted, and its next incarnation created and asked to be admitted in the same plan
    assert plan.actions == (
        DeleteGroup(1, DeleteReason.ROLLOUT, ("darwin-398b-1-0",)),
        CreateGroup(1, gated=True, incarnation=1),
    )
    assert plan.actions[0].leader == "darwin-398b-1-0"  # its stamp takes it out of the Service
    assert [a.pods for a in plan.admissions] == [("darwin-398b-1-0-1",)]
    assert plan.groups[1].revision == revision(spec)
    assert plan.groups[1].phase == GroupPhase.PENDING

    plan = make_plan(spec, observe(spec, groups(spec, [0])))  # had its pods gone in between
    assert plan.actions == (CreateGroup(1, gated=True),)
    assert plan.groups[1].revision == revision(spec)


def test_planner_creates_a_surge_group_and_holds_its_admission_while_a_wanted_one_waits():
    spec = make_spec(replicas=2, rollout={"maxUnavailable": 0, "maxSurge": 1})
    plan = make_plan(spec, observe(spec, groups(spec, range(2))))
    assert plan.actions == (CreateGroup(2, gated=True),)
    assert plan.rollout.surge == (2,)

    surge = groups(spec, [2], rev=revision(spec), state="gated")
    plan = make_plan(spec, observe(spec, *[groups(spec, range(2)), surge]))
    assert [a.index for a in plan.admissions] == [2]

    wanted_waits = groups(spec, [1], rev=revision(spec), state="gated")
    plan = make_plan(spec, observe(spec, groups(spec, [0]), wanted_waits, surge))
    assert [a.index for a in plan.admissions] == [1]  # the wanted group first
    assert plan.groups[2].phase == GroupPhase.WAITING_FOR_CAPACITY

    # nor does one created while a wanted index has no group: that one is admitted at once
    plan = make_plan(spec, observe(spec, groups(spec, [0])))
    assert [a.index for a in plan.actions if isinstance(a, CreateGroup)] == [1, 2]
    assert [a.index for a in plan.admissions] == [1]


def test_planner_keeps_a_group_above_replicas_serving_until_another_is_ready():
    spec = make_spec(replicas=1, rollout={"maxUnavailable": 0, "maxSurge": 1})
    new = revision(spec)
    starting = groups(spec, [0], rev=new, state="bound")
    observed = observe(spec, starting, groups(spec, [1], rev=new))
    plan = make_plan(spec, observed, rollout_in_progress=True)
    assert plan.actions == ()
    assert plan.groups[1].phase == GroupPhase.READY
    assert "serving until another is Ready" in plan.groups[1].message
    observed = observe(spec, groups(spec, range(2), rev=new))
    plan = make_plan(spec, observed, rollout_in_progress=True)
    assert plan.actions == (DrainGroup(1, "darwin-398b-1-0"),)


def test_paused_planner_puts_a_draining_leader_back():
    spec = make_spec(replicas=2, rollout={"paused": True})
    plan = make_plan(spec, observe(spec, groups(spec, [0]), draining(spec, 1)))
    assert plan.actions == (RestoreServing(1, "darwin-398b-1-0"),)


# ---- status, events ----


def view(index, phase=GroupPhase.READY, rev=None, spec=None, **kw):
    return GroupView(
        index=index,
        revision=rev or revision(spec),
        phase=phase,
        pods=1,
        pods_ready=1 if phase == GroupPhase.READY else 0,
        restarts=0,
        serving=phase == GroupPhase.READY,
        **kw,
    )


def compute(spec, views, decision, old=None, now=T0):
    return status.compute(
        name="darwin-398b",
        namespace="llm",
        generation=2,
        spec=spec,
        revision=revision(spec),
        views=views,
        old=old,
        now=now,
        decision=decision,
    )


def progressing(s):
    c = next(c for c in s.conditions if c.type == "Progressing")
    return c.status, c.reason, c.message


def test_status_of_a_rollout_from_start_to_end_with_its_events():
    spec = make_spec(replicas=4)
    mid = [view(i, rev=OLD) for i in (0, 1)] + [view(2, spec=spec), view(3, spec=spec)]
    decision = rollout.Decision(replace=frozenset({1}), pending=2, rolling=True)
    first = compute(spec, mid, decision)
    assert progressing(first) == ("True", "RollingUpdate", "2/4 groups updated")
    assert first.rollout_started_at == "2025-06-15T15:06:40.000Z"
    assert (first.current_revision, first.update_revision) == (OLD, revision(spec))
    assert first.updated_replicas == 2 and first.phase == "Progressing"
    notes = status.transitions(None, first, T0)
    assert [n.reason for n in notes if n.reason.startswith("Rollout")] == ["RolloutStarted"]

    later = compute(spec, mid, decision, old=first, now=T0 + 60)
    assert later.rollout_started_at == first.rollout_started_at  # kept across reconciles
    assert status.transitions(first, later, T0 + 60) == []

    done = compute(spec, [view(i, spec=spec) for i in range(4)], rollout.Decision(), later, T0 + 90)
    assert done.rollout_started_at is None and done.phase == "Ready"
    assert status.to_wire(done)["rolloutStartedAt"] is None  # the merge patch removes it
    assert progressing(done)[:2] == ("False", "Converged")
    (note,) = [n for n in status.transitions(later, done, T0 + 90) if n.reason.startswith("Roll")]
    assert note.message == f"revision {revision(spec)} rolled out in 90s"


def test_a_new_revision_mid_rollout_starts_the_clock_again():
    spec = make_spec(replicas=2)
    decision = rollout.Decision(pending=2, rolling=True)
    before = compute(spec, [view(0, rev=OLD), view(1, rev=OLD)], decision)
    before = before.model_copy(update={"update_revision": "another"})
    after = compute(spec, [view(0, rev=OLD), view(1, rev=OLD)], decision, before, T0 + 30)
    assert after.rollout_started_at == "2025-06-15T15:07:10.000Z"


def test_paused_surge_and_partition_in_the_progressing_condition():
    spec = make_spec(replicas=3, rollout={"paused": True})
    views = [view(0, rev=OLD), view(1, rev=OLD), view(2, rev=OLD)]
    paused = compute(spec, views, rollout.Decision(pending=3, paused=True, rolling=True))
    assert progressing(paused) == ("False", "RolloutPaused", "rollout paused: 0/3 groups updated")

    spec = make_spec(replicas=2, rollout={"maxSurge": 1})
    waiting = view(
        2,
        GroupPhase.WAITING_FOR_CAPACITY,
        spec=spec,
        message="needs 1 pod x 6 nvidia.com/gpu; free: 4 GPUs",
        reason="InsufficientCapacity",
    )
    views = [view(0, rev=OLD), view(1, GroupPhase.STARTING, spec=spec), waiting]
    s = compute(spec, views, rollout.Decision(surge=(2,), pending=1, rolling=True))
    assert progressing(s)[2] == (
        "1/2 groups updated; no room for a surge group (needs 1 pod x 6 nvidia.com/gpu; "
        "free: 4 GPUs); replacing in place, up to 1 at a time"
    )
    assert s.phase == "Progressing"  # a surge group waiting is no problem of the endpoint
    assert [g.index for g in s.groups] == [0, 1, 2]

    spec = make_spec(replicas=4, rollout={"partition": 2})
    views = [view(0, rev=OLD), view(1, rev=OLD), view(2, spec=spec), view(3, spec=spec)]
    s = compute(spec, views, rollout.Decision())
    assert s.phase == "Ready" and s.rollout_started_at is None
    assert progressing(s) == ("False", "Converged", "2/4 groups updated (partition 2)")
