"""Group health: when a group is broken, how it is recreated (whole, once, after its backoff),
when the endpoint gives up, and what the status says. Table tests, then properties."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from darwin_operator import health, status
from darwin_operator.events import Reason
from darwin_operator.health import GroupHistory, HealthConfig, Recreation
from darwin_operator.observed import NodeInfo, groups_from_pods
from darwin_operator.planner import (
    CreateGroup,
    DeleteGroup,
    GroupMemory,
    MarkBroken,
)
from darwin_operator.vocabulary import DeleteReason, Fault, GroupPhase, format_time
from tests.unit.planner_fixtures import (
    REF,
    T0,
    group_pods,
    make_plan,
    make_spec,
    observe,
    revision,
)
from tests.unit.test_planner_properties import World, converge, reconcile

CONFIG = HealthConfig(backoff_base=5, backoff_cap=40, node_lost_grace=30)
NODES = {f"kwok-node-{i}": NodeInfo(f"kwok-node-{i}") for i in range(4)}


def group(pods):
    (g,) = groups_from_pods(pods, REF.uid)
    return g


def diagnose(pods, *, now=T0, nodes=NODES, pods_per_group=3, startup_timeout=600, seen_whole=True):
    return health.diagnose(
        group(pods),
        pods_per_group=pods_per_group,
        seen_whole=seen_whole,
        nodes=nodes,
        startup_timeout=startup_timeout,
        leader_unready_grace=20,
        now=now,
        config=CONFIG,
    )


SPEC3 = make_spec(placement={"podsPerGroup": 3}, replicas=2)


def ready3(**fields):
    return group_pods(SPEC3, 0, state="ready", admitted_at=T0 - 100, **fields)


def with_pod(pods, rank, **fields):
    pods = list(pods)
    pods[rank] = replace(pods[rank], **fields)
    return pods


# ---- what breaks a group ----

BROKEN_CASES = {
    "a member Failed": (
        with_pod(ready3(), 1, phase="Failed", termination="vllm exited 1 (Error)"),
        Fault.POD_FAILED,
        "pod darwin-398b-0-1 failed: vllm exited 1 (Error)",
    ),
    "a member Succeeded (its container exited 0)": (
        with_pod(ready3(), 0, phase="Succeeded", termination="vllm exited 0 (Completed)"),
        Fault.POD_FAILED,
        "pod darwin-398b-0-0 exited: vllm exited 0 (Completed)",
    ),
    "a member evicted by the kubelet": (
        with_pod(ready3(), 2, phase="Failed", status_reason="Evicted: low on memory"),
        Fault.EVICTED,
        "pod darwin-398b-0-2 evicted: Evicted: low on memory",
    ),
    "a member deleted by someone else, still terminating": (
        with_pod(ready3(), 1, deleting=True),
        Fault.MEMBER_DELETED,
        "rank 1 deleted by another client (pod darwin-398b-0-1, terminating)",
    ),
    "a member evicted through the Eviction API": (
        with_pod(ready3(), 1, deleting=True, disruption="EvictionByEvictionAPI: drain"),
        Fault.EVICTED,
        "pod darwin-398b-0-1 evicted: EvictionByEvictionAPI: drain",
    ),
    "a member gone without the operator's stamp": (
        [p for p in ready3() if p.rank != 1],
        Fault.MEMBER_DELETED,
        "rank 1 deleted by another client",
    ),
    "a container restarted": (
        with_pod(ready3(), 2, restarts=1, termination="vllm exited 1 (Error)"),
        Fault.CONTAINER_RESTARTED,
        "pod darwin-398b-0-2 restarted a container 1 time(s) (last: vllm exited 1 (Error))",
    ),
}


@pytest.mark.parametrize("case", BROKEN_CASES)
def test_a_group_is_broken_when_a_member(case):
    pods, fault, message = BROKEN_CASES[case]
    finding, _ = diagnose(pods)
    assert (finding.fault, finding.message) == (fault, message)


def test_a_rank_missing_from_a_group_never_seen_whole_is_no_member_removed():
    """Released at creation (a successor admitted before its pods exist), a group cut short by
    a kill between its POSTs has a rank missing that nobody deleted: the planner redoes it."""
    cut_short = [p for p in group_pods(SPEC3, 0, state="bound", admitted_at=T0) if p.rank != 1]
    assert diagnose(cut_short, seen_whole=False)[0] is None
    assert diagnose(cut_short, seen_whole=True)[0].fault == Fault.MEMBER_DELETED


HEALTHY_CASES = {
    "all Ready": ready3(),
    "gated, a pod missing (the operator was killed while creating it)": [
        p for p in group_pods(SPEC3, 0) if p.rank != 2
    ],
    "loading weights, within the startup timeout": group_pods(
        SPEC3, 0, state="bound", admitted_at=T0 - 500
    ),
    "waiting for capacity for hours (gated: no startup clock)": group_pods(
        SPEC3, 0, created_at=T0 - 86_400
    ),
}


@pytest.mark.parametrize("case", HEALTHY_CASES)
def test_a_group_is_not_broken_when(case):
    assert diagnose(HEALTHY_CASES[case])[0] is None


def test_the_operators_own_interrupted_deletion_is_finished_not_counted():
    spec = SPEC3
    survivors = [p for p in ready3(marked_deleted="SchedulingTimeout") if p.rank != 0]
    plan = make_plan(spec, observe(spec, survivors, group_pods(spec, 1, state="ready")))
    assert plan.actions == (
        DeleteGroup(0, DeleteReason.UNFINISHED_DELETE, tuple(p.name for p in survivors)),
        CreateGroup(0, gated=True, incarnation=1),  # its successor does not wait for them
    )
    assert plan.health.of(0) == GroupHistory()


def test_a_lost_node_breaks_the_group_after_its_grace_period():
    nodes = {**NODES, "kwok-node-0": NodeInfo("kwok-node-0", ready=False, ready_changed_at=T0)}
    pods = ready3()
    finding, deadline = diagnose(pods, nodes=nodes, now=T0 + 10)
    assert (finding, deadline) == (None, T0 + 30)
    finding, _ = diagnose(pods, nodes=nodes, now=T0 + 30)
    assert finding.fault == Fault.NODE_LOST
    assert "node kwok-node-0 of pod darwin-398b-0-0 not Ready since" in finding.message
    gone = {k: v for k, v in NODES.items() if k != "kwok-node-0"}
    assert diagnose(pods, nodes=gone)[0].fault == Fault.NODE_LOST
    assert diagnose(pods, nodes=None)[0] is None  # nodes unreadable: no node verdicts


def test_a_leader_unready_while_running_after_it_was_ready_breaks_the_group_after_grace():
    # Ready=False since T0, later than the container's start: it had been Ready (vLLM's engine
    # died and /health answers 503).
    pods = with_pod(ready3(), 0, ready=False, running_since=T0 - 50, unready_since=T0)
    finding, deadline = diagnose(pods, now=T0 + 5)
    assert (finding, deadline) == (None, T0 + 20)
    finding, _ = diagnose(pods, now=T0 + 20)
    assert finding.fault == Fault.LEADER_UNREADY
    # Still loading: Ready=False since before the container started. Not this rule.
    loading = with_pod(ready3(), 0, ready=False, running_since=T0 - 50, unready_since=T0 - 60)
    assert diagnose(loading, now=T0 + 100)[0] is None


def test_the_leader_unready_grace_is_the_specs_and_generous_by_default():
    # A leader Ready once, unready since T0: a blip under load is not a broken engine.
    def unready(spec):
        pods = with_pod(
            group_pods(spec, 0, state="ready", admitted_at=T0 - 100),
            0,
            ready=False,
            running_since=T0 - 50,
            unready_since=T0,
        )
        return observe(spec, pods, group_pods(spec, 1, state="ready"))

    default = make_spec(placement={"podsPerGroup": 3}, replicas=2)
    assert default.health.leader_unready_seconds == 300
    assert not make_plan(default, unready(default), now=T0 + 299).actions
    (mark,) = make_plan(default, unready(default), now=T0 + 300).actions
    assert isinstance(mark, MarkBroken) and mark.mark.startswith("LeaderUnready")
    quick = make_spec(placement={"podsPerGroup": 3}, replicas=2, health={"leaderUnreadySeconds": 5})
    assert isinstance(make_plan(quick, unready(quick), now=T0 + 5).actions[0], MarkBroken)


def test_a_group_not_ready_within_the_startup_timeout_of_its_release_is_broken():
    pods = group_pods(SPEC3, 0, state="bound", admitted_at=T0 - 100)
    finding, deadline = diagnose(pods, startup_timeout=60, now=T0 - 50)
    assert (finding, deadline) == (None, T0 - 40)
    finding, _ = diagnose(pods, startup_timeout=60)
    assert finding.fault == Fault.STARTUP_TIMEOUT
    assert finding.message == (
        "not Ready within health.startupTimeoutSeconds (60s): 0 of 3 pods ready"
    )
    # without our gate (gang None), the clock starts when the last pod is bound
    ungated = [replace(p, admitted_at=None, scheduled_at=T0 - 30) for p in pods]
    assert diagnose(ungated, startup_timeout=60)[1] == T0 + 30


# ---- the recreation, step by step ----


def broken_pods(spec, index=0, **fields):
    return with_pod(group_pods(spec, index, state="ready", **fields), 0, restarts=1)


def test_broken_group_is_marked_and_recorded_then_deleted_whole_then_created_at_once():
    spec = SPEC3
    healthy = group_pods(spec, 1, state="ready")
    broken = broken_pods(spec)
    plan = make_plan(spec, observe(spec, broken, healthy))
    (mark,) = plan.actions
    assert isinstance(mark, MarkBroken) and mark.pods == tuple(p.name for p in broken)
    assert mark.mark.startswith("ContainerRestarted 2025-06-15T15:06:40.000Z pod darwin-398b-0-0")
    recorded = plan.health.of(0)
    assert recorded.restarts == 1
    assert recorded.recreations == (Recreation(T0, "ContainerRestarted"),)
    assert recorded.last_failure.startswith("2025-06-15T15:06:40.000Z ContainerRestarted: pod")
    assert plan.groups[0].phase == GroupPhase.BROKEN

    marked = [replace(p, marked_broken=mark.mark) for p in broken]
    plan = make_plan(spec, observe(spec, marked, healthy), now=T0 + 1, history=plan.health)
    # the first recreation is immediate: the next incarnation does not wait for the old pods
    assert plan.actions == (
        DeleteGroup(0, DeleteReason.BROKEN, tuple(p.name for p in broken)),
        CreateGroup(0, gated=True, incarnation=1),
    )
    assert plan.health.of(0).restarts == 1  # recorded once
    assert plan.groups[0].phase == GroupPhase.PENDING

    plan = make_plan(spec, observe(spec, healthy), now=T0 + 2, history=plan.health)
    assert plan.actions == (CreateGroup(0, gated=True),)  # had they all gone in between


def test_killed_between_marking_and_the_status_write_the_recreation_is_recorded_once():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    plan = make_plan(spec, observe(spec, broken_pods(spec)))
    (mark,) = plan.actions
    # only two of three pods were stamped, and the status was never written
    pods = broken_pods(spec)
    pods[0] = replace(pods[0], marked_broken=mark.mark)
    pods[1] = replace(pods[1], marked_broken=mark.mark)
    plan = make_plan(spec, observe(spec, pods), now=T0 + 5)
    assert plan.actions == (MarkBroken(0, mark.mark, ("darwin-398b-0-2",)),)  # nothing deleted
    assert plan.health.of(0).recreations == (Recreation(T0, "ContainerRestarted"),)
    assert plan.health.of(0).restarts == 1


def test_recreations_back_off_exponentially_per_group_up_to_the_cap():
    spec = SPEC3
    past = GroupHistory(
        recreations=(Recreation(T0 - 30, "PodFailed"), Recreation(T0 - 2, "PodFailed")),
        restarts=2,
        last_failure="2025-06-15T15:06:38Z PodFailed: pod darwin-398b-0-0 failed",
    )
    history = health.History().with_group(0, past)
    plan = make_plan(spec, observe(spec, group_pods(spec, 1, state="ready")), history=history)
    assert plan.actions == ()
    (waiting,) = [v for v in plan.groups if v.index == 0]
    assert waiting.phase == GroupPhase.BACKING_OFF
    assert waiting.message.startswith("created again at 2025-06-15T15:06:43.000Z: backoff after 2")
    assert plan.requeue_after == pytest.approx(3)
    later = make_plan(spec, observe(spec), now=T0 + 3, history=history)
    assert CreateGroup(0, gated=True) in later.actions
    assert [health.backoff_delay(n, 5, 40) for n in range(1, 7)] == [0, 5, 10, 20, 40, 40]


def test_past_the_restart_budget_the_endpoint_is_failed_and_nothing_more_is_recreated():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=2, health={"maxGroupRestarts": 2})
    past = GroupHistory(
        recreations=(Recreation(T0 - 300, "StartupTimeout"), Recreation(T0 - 100, "PodFailed")),
        restarts=2,
    )
    history = health.History(generation=3).with_group(1, past)
    broken = broken_pods(spec, 1)
    plan = make_plan(
        spec, observe(spec, group_pods(spec, 0, state="ready"), broken), history=history
    )
    assert plan.actions == ()  # the broken group is left for inspection, the other untouched
    failure = plan.health.failure
    assert (failure.group, failure.reasons) == (
        1,
        ("StartupTimeout", "PodFailed", "ContainerRestarted"),
    )
    assert "group 1 broke 3 times within health.restartWindowSeconds (3600s)" in failure.message

    s = status.compute(
        name="darwin-398b",
        namespace="llm",
        generation=3,
        spec=spec,
        revision="r",
        views=plan.groups,
        old=None,
        now=T0,
        history=plan.health,
    )
    assert s.phase == "Failed"
    degraded = next(c for c in s.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "MaxGroupRestartsExceeded")
    assert "group 1 broke 3 times" in degraded.message and "ContainerRestarted" in degraded.message
    assert s.health.failure.group == 1
    notes = status.transitions(None, s)
    assert any(n.reason == Reason.MAX_GROUP_RESTARTS_EXCEEDED for n in notes)

    # the next reconcile reads it back from the status: still Failed, still no action
    again = status.history_of(s, 3, None)
    assert again.failure is not None
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready"), broken), history=again)
    assert plan.actions == () and plan.health.failure == again.failure
    # a group deleted before the endpoint failed is not created again either
    gone = again.with_group(0, GroupHistory((Recreation(T0 - 10, "PodFailed"),), 1))
    plan = make_plan(spec, observe(spec, broken), now=T0 + 600, history=gone)
    assert plan.actions == ()


def test_a_spec_change_or_a_restart_request_starts_the_counts_over():
    spec = make_spec(health={"maxGroupRestarts": 1})
    failure = health.Failure(0, ("PodFailed", "PodFailed"), "group 0 broke", T0)
    history = health.History(generation=3, restarted_at="", failure=failure).with_group(
        0, GroupHistory((Recreation(T0, "PodFailed"),), 1)
    )
    s = status.compute(
        name="darwin-398b",
        namespace="llm",
        generation=3,
        spec=spec,
        revision="r",
        views=make_plan(spec, observe(spec), history=history).groups,
        old=None,
        now=T0,
        history=history,
    )
    assert status.history_of(s, 3, None).failure is not None
    assert status.history_of(s, 4, None) == health.History(generation=4)
    restarted = status.history_of(s, 3, "2025-06-16T00:00:00Z")
    assert restarted == health.History(generation=3, restarted_at="2025-06-16T00:00:00Z")


# ---- what the status and the events say ----


def compute(views, old, history, now, spec=SPEC3):
    return status.compute(
        name="darwin-398b",
        namespace="llm",
        generation=1,
        spec=spec,
        revision=revision(spec),
        views=views,
        old=old,
        now=now,
        history=history,
    )


def test_status_walks_the_startup_phases_with_time_in_each_and_degrades_while_recovering():
    spec = SPEC3
    ready = group_pods(spec, 1, state="ready")
    first = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready"), ready))
    s = compute(first.groups, None, first.health, T0)
    assert s.phase == "Ready"

    broken = make_plan(spec, observe(spec, broken_pods(spec), ready), now=T0 + 100)
    s = compute(broken.groups, s, broken.health, T0 + 100)
    assert s.phase == "Degraded"
    assert s.groups[0].restarts == 1 and s.groups[0].recreations[0].reason == "ContainerRestarted"
    notes = status.transitions(None, s)
    recreating = [n for n in notes if n.reason == Reason.GROUP_RECREATING]
    assert (
        len(recreating) == 1 and "group 0 is broken and is recreated whole" in recreating[0].message
    )

    history = broken.health
    steps = [
        (T0 + 101, group_pods(spec, 0, state="gated"), "WaitingForCapacity"),
        (T0 + 110, group_pods(spec, 0, state="released"), "Scheduling"),
        (T0 + 112, group_pods(spec, 0, state="bound"), "Starting"),
        (T0 + 900, group_pods(spec, 0, state="ready"), "Ready"),
    ]
    for now, pods, phase in steps:
        pods = [replace(p, admitted_at=T0 + 110) if not p.gated else p for p in pods]
        plan = make_plan(spec, observe(spec, pods, ready), now=now, history=history)
        s = compute(plan.groups, s, plan.health, now)
        assert s.groups[0].phase == phase
        assert s.phase == ("Ready" if phase == "Ready" else "Degraded")
    assert [(p.phase, p.seconds) for p in s.groups[0].startup] == [
        ("WaitingForCapacity", 9),
        ("Scheduling", 2),
        ("Starting", 788),
        ("Ready", None),
    ]
    degraded = next(c for c in s.conditions if c.type == "Degraded")
    assert degraded.status == "False"
    assert s.groups[0].last_failure.startswith("2025-06-15T15:08:20.000Z ContainerRestarted")


# ---- properties ----


@settings(max_examples=200, deadline=None)
@given(
    pods_per_group=st.integers(1, 4),
    data=st.data(),
)
def test_a_broken_group_is_recreated_whole_never_in_part(pods_per_group, data):
    """Whatever state its pods are in, a wanted group the planner deletes is deleted entirely
    (every pod not already going), and no pod is ever added to a group that has started: what
    follows it is a new incarnation."""
    spec = make_spec(placement={"podsPerGroup": pods_per_group}, replicas=1)
    state = data.draw(st.sampled_from(["gated", "released", "bound", "ready"]))
    pods = group_pods(spec, 0, state=state)
    present = data.draw(st.lists(st.booleans(), min_size=len(pods), max_size=len(pods)))
    pods = [p for p, keep in zip(pods, present, strict=True) if keep] or pods[:1]
    faults = st.fixed_dictionaries(
        {},
        optional={
            "restarts": st.integers(0, 2),
            "phase": st.sampled_from(["Running", "Failed", "Pending"]),
            "deleting": st.booleans(),
            "marked_deleted": st.sampled_from(["", "ScaleDown"]),
            "marked_broken": st.sampled_from(["", f"PodFailed {format_time(T0)} x"]),
        },
    )
    pods = [replace(p, **data.draw(faults)) for p in pods]
    persisted = data.draw(st.booleans())
    history = health.History()
    if persisted:
        history = history.with_group(0, GroupHistory((Recreation(T0, "PodFailed"),), 1))
    plan = make_plan(spec, observe(spec, pods), now=T0 + 1, history=history)

    live = {p.name for p in pods if not p.deleting}
    for action in plan.actions:
        if isinstance(action, DeleteGroup):
            assert set(action.pods) == live, "a group is deleted whole"
        if isinstance(action, CreateGroup) and action.incarnation == 0:
            started = any(p.admitted_at is not None or p.bound for p in pods)
            assert not started, "no member is ever added to a started group"
            assert not any(p.marked_deleted for p in pods), "nor to one being deleted"
        if isinstance(action, MarkBroken):
            assert set(action.pods) <= {p.name for p in pods}


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 300), min_size=1, max_size=11),
    base=st.floats(0.5, 30),
    cap=st.floats(30, 900),
)
def test_backoff_delays_never_shrink_within_a_window(gaps, base, cap):
    """Recreations of one group, all within one window: each waits at least as long as the
    one before, and never longer than the cap."""
    window = 3600.0  # the gaps add up to less
    config = HealthConfig(backoff_base=base, backoff_cap=cap)
    history, at, delays = GroupHistory(), T0, []
    for gap in gaps:
        at += gap
        history = health.record(history, Recreation(at, "PodFailed"), "x", window, limit=100)
        delays.append(health.create_at(history, at, window, config) - at)
    assert delays[0] == 0
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert all(d <= cap + 1e-6 for d in delays)


@settings(max_examples=40, deadline=None)
@given(
    pods_per_group=st.sampled_from([1, 3]),
    faults=st.lists(
        st.tuples(st.integers(0, 1), st.lists(st.integers(0, 10_000), max_size=3)),
        min_size=1,
        max_size=3,
    ),
)
def test_killed_anywhere_in_a_recreation_it_counts_each_failure_once_and_leaves_no_half_group(
    pods_per_group, faults
):
    """On the simulated cluster: a member of a group crashes; the operator is killed after a
    random subset of its writes, any number of times; in the end each failure is on record
    exactly once and every group is whole, made only of pods created after its failure."""
    spec = make_spec(replicas=2, placement={"podsPerGroup": pods_per_group})
    world = World()
    converge(world, spec)
    counts = {0: 0, 1: 0}
    for index, crash_seeds in faults:
        broke_at = world.now
        member = next(
            n for n, p in sorted(world.pods.items()) if p.group == index and not p.deleting
        )
        world.pods[member] = replace(world.pods[member], restarts=1)
        counts[index] += 1
        for seed in crash_seeds:
            reconcile(world, spec, random.Random(seed))
            world.tick()
        converge(world, spec)
        groups = groups_from_pods(world.pods.values(), REF.uid)
        assert [sorted(g.ranks()) for g in groups] == [list(range(pods_per_group))] * 2
        fresh = [p for p in world.pods.values() if p.group == index]
        assert all(p.created_at > broke_at for p in fresh), "the broken group is replaced whole"
        assert all(p.ready and p.restarts == 0 for p in world.pods.values())
    for index, count in counts.items():
        assert world.history.of(index).restarts == count


def test_a_failure_that_ended_is_written_as_null_so_that_the_merge_patch_removes_it():
    history = health.History(generation=4)
    s = compute([], None, history, T0, spec=make_spec(replicas=0))
    wire = status.to_wire(s)
    assert wire["health"] == {"generation": 4, "restartedAt": "", "failure": None}
    stored = {**wire, "health": {"generation": 4, "restartedAt": ""}}  # what the server keeps
    assert not status.changed(status.parse_old(stored), s)


# ---- a group whose pods are all gone (a 1-pod group deleted by hand, or lost with its node) ----


def test_a_started_group_whose_pods_all_vanished_is_a_recorded_recreation():
    spec = make_spec(replicas=1)
    seen_ready = {0: GroupMemory(revision(spec), "Ready", 1)}
    plan = make_plan(spec, observe(spec), remembered=seen_ready)
    # first on record (no pod can carry the mark), nothing created yet
    assert plan.actions == ()
    (view,) = plan.groups
    assert view.phase == GroupPhase.BROKEN and view.message.startswith("MemberDeleted: all 1 pod")
    assert [r.reason for r in plan.health.of(0).recreations] == ["MemberDeleted"]
    assert plan.health.of(0).restarts == 1
    # once the status holds it, the group is created again (the first recreation at once)
    on_record = {0: GroupMemory(revision(spec), "Broken", 0)}
    again = make_plan(spec, observe(spec), now=T0 + 1, history=plan.health, remembered=on_record)
    assert again.actions == (CreateGroup(0, gated=True),)
    assert again.health == plan.health  # counted once


def test_groups_the_operator_deleted_or_never_started_are_just_created():
    spec = make_spec(replicas=1)
    for phase in ("Terminating", "Draining", "Pending", "WaitingForCapacity", "Broken"):
        plan = make_plan(spec, observe(spec), remembered={0: GroupMemory("r", phase, 1)})
        assert plan.actions == (CreateGroup(0, gated=True),), phase
        assert plan.health.of(0).recreations == ()


def test_a_vanished_group_spends_the_restart_budget():
    spec = make_spec(replicas=1, health={"maxGroupRestarts": 0})
    plan = make_plan(spec, observe(spec), remembered={0: GroupMemory("r", "Ready", 1)})
    assert plan.health.failure is not None and plan.health.failure.group == 0
    assert "not recreated: the endpoint is Failed" in plan.groups[0].message
