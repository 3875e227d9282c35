"""The planner decides from spec and observed state alone: table tests of each situation."""

from __future__ import annotations

from dataclasses import replace

from darwin_operator import capacity, health, vocabulary
from darwin_operator.observed import Observed, Toleration
from darwin_operator.planner import (
    DRAIN_SETTLE_SECONDS,
    ApplyObject,
    CreateGroup,
    DeleteGroup,
    DrainGroup,
    GroupMemory,
    MarkBroken,
    RestoreServing,
    UngateGroup,
    admitted,
)
from darwin_operator.vocabulary import DeleteReason, GroupPhase
from tests.unit.planner_fixtures import (
    T0,
    group_pods,
    make_plan,
    make_spec,
    observe,
)


def kinds(plan):
    return [type(a).__name__ for a in plan.actions]


def phases(plan):
    return {v.index: v.phase for v in plan.groups}


def test_new_endpoint_gets_services_pdb_and_gated_groups_in_index_order():
    spec = make_spec()
    plan = make_plan(spec, observe(spec, applied=False))
    applies = [a.key for a in plan.actions if isinstance(a, ApplyObject)]
    assert applies == [
        "Service/darwin-398b-pods",
        "Service/darwin-398b",
        "PodDisruptionBudget/darwin-398b-members",
    ]
    creates = [a for a in plan.actions if isinstance(a, CreateGroup)]
    assert creates == [CreateGroup(0, gated=True), CreateGroup(1, gated=True)]
    # admitted in the same reconcile, once created: the pods they will be
    assert [a.pods for a in plan.admissions] == [
        tuple(f"darwin-398b-{g}-{r}" for r in range(1)) for g in (0, 1)
    ]
    assert (
        plan.admissions[0].demand
        == make_plan(spec, observe(spec, group_pods(spec, 0))).admissions[0].demand
    )
    assert phases(plan) == {0: GroupPhase.PENDING, 1: GroupPhase.PENDING}


def test_applied_objects_with_the_current_hash_are_left_alone_and_a_changed_one_is_applied():
    spec = make_spec()
    assert make_plan(spec, observe(spec)).actions == (
        CreateGroup(0, gated=True),
        CreateGroup(1, gated=True),
    )
    new_port = make_spec(service={"port": 9000})
    plan = make_plan(new_port, observe(spec))  # observed hashes are those of the old spec
    assert [a.key for a in plan.actions if isinstance(a, ApplyObject)] == ["Service/darwin-398b"]


def test_complete_gated_groups_ask_for_admission_in_index_order_with_their_demand():
    spec = make_spec(replicas=3)
    plan = make_plan(spec, observe(spec, *(group_pods(spec, i) for i in (2, 0, 1))))
    assert plan.actions == ()
    assert [a.index for a in plan.admissions] == [0, 1, 2]
    demand = plan.admissions[0].demand
    assert (demand.pods, demand.gpus_per_pod, demand.resource) == (1, 6, "nvidia.com/gpu")
    assert demand.placement.node_selector == (("nvidia.com/gpu.product", "NVIDIA-B200"),)
    assert plan.admissions[1].pods == ("darwin-398b-1-0",)
    assert set(phases(plan).values()) == {GroupPhase.WAITING_FOR_CAPACITY}


def test_demand_of_a_pod_per_stage_group_comes_from_its_pods():
    spec = make_spec(
        placement={"podsPerGroup": 3, "tolerations": [{"key": "gpu", "operator": "Exists"}]},
        replicas=1,
    )
    plan = make_plan(spec, observe(spec, group_pods(spec, 0)))
    (admission,) = plan.admissions
    assert (admission.demand.pods, admission.demand.gpus_per_pod) == (3, 2)
    assert admission.pods == ("darwin-398b-0-0", "darwin-398b-0-1", "darwin-398b-0-2")
    assert admission.demand.placement.tolerations == (Toleration(key="gpu", operator="Exists"),)


def test_group_interrupted_while_being_created_is_completed_not_recreated():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, ranks=[0, 2])))
    assert plan.actions == (CreateGroup(0, gated=True),)
    assert plan.admissions == ()
    assert plan.groups[0].message == "2 of 3 pods created"


SEEN_WHOLE = {0: GroupMemory("", "Ready", 3, whole_incarnation=0)}  # as status.groups keeps it


def test_released_group_that_lost_a_member_is_marked_broken_then_deleted_whole():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    pods = group_pods(spec, 0, state="ready", ranks=[0, 1])
    plan = make_plan(spec, observe(spec, pods), remembered=SEEN_WHOLE)
    (mark,) = plan.actions
    assert isinstance(mark, MarkBroken) and mark.pods == ("darwin-398b-0-0", "darwin-398b-0-1")
    assert mark.mark.startswith("MemberDeleted ")
    assert "rank 2 deleted by another client" in mark.mark
    # once the status holds the recreation, the whole group goes
    marked = [replace(p, marked_broken=mark.mark) for p in pods]
    plan = make_plan(spec, observe(spec, marked), history=plan.health)
    assert plan.actions == (
        DeleteGroup(0, DeleteReason.BROKEN, ("darwin-398b-0-0", "darwin-398b-0-1")),
        CreateGroup(0, gated=True, incarnation=1),
    )
    assert plan.admissions[0].pods == tuple(f"darwin-398b-0-{r}-1" for r in range(3))


def test_released_group_never_seen_whole_is_redone_not_counted_as_a_recreation():
    """A successor is created released (admitted before its pods exist): an operator killed
    between its POSTs leaves released pods with a rank missing that nobody deleted."""
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    cut_short = group_pods(spec, 0, state="bound", admitted_at=T0 - 1, ranks=[0, 1], incarnation=1)
    plan = make_plan(spec, observe(spec, cut_short), remembered=SEEN_WHOLE)
    assert plan.actions == (
        DeleteGroup(0, DeleteReason.INCOMPLETE, ("darwin-398b-0-0-1", "darwin-398b-0-1-1")),
    )
    assert plan.health.of(0).recreations == ()
    assert plan.groups[0].whole_incarnation == 0  # still the one seen whole before


def test_a_group_seen_whole_is_remembered_by_its_incarnation():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    whole = group_pods(spec, 0, state="bound", admitted_at=T0 - 1, incarnation=1)
    plan = make_plan(spec, observe(spec, whole), remembered=SEEN_WHOLE)
    assert plan.groups[0].whole_incarnation == 1
    # the status keeps it for the next reconcile, which then counts a missing rank as removed
    remembered = {0: GroupMemory("", "Scheduling", 3, whole_incarnation=1)}
    plan = make_plan(spec, observe(spec, whole[:2]), remembered=remembered)
    (mark,) = plan.actions
    assert isinstance(mark, MarkBroken) and "rank 2 deleted by another client" in mark.mark


def test_incomplete_group_of_an_old_revision_is_deleted_rather_than_mixed():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    old = group_pods(spec, 0, rev="old", ranks=[0])
    plan = make_plan(spec, observe(spec, old))
    assert plan.actions == (DeleteGroup(0, DeleteReason.INCOMPLETE, ("darwin-398b-0-0",)),)


def test_admission_interrupted_part_way_is_finished():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    pods = group_pods(spec, 0)
    pods[0] = replace(pods[0], gated=False)
    plan = make_plan(spec, observe(spec, pods))
    assert plan.actions == (UngateGroup(0, ("darwin-398b-0-1", "darwin-398b-0-2")),)
    assert plan.admissions == ()


def test_released_group_stuck_unschedulable_past_the_timeout_is_torn_down():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    pods = group_pods(spec, 0, state="released", admitted_at=T0 - 200)
    pods[0] = replace(pods[0], node_name="kwok-node-0")  # one bound, holding GPUs
    pods[2] = replace(pods[2], unschedulable=True, unschedulable_message="0/4 nodes available")
    plan = make_plan(spec, observe(spec, pods), scheduling_timeout=120)
    assert plan.actions == (
        DeleteGroup(0, DeleteReason.SCHEDULING_TIMEOUT, tuple(p.name for p in pods)),
    )
    assert "0/4 nodes available" in plan.groups[0].message


def test_released_group_within_the_timeout_waits_and_asks_to_be_woken_at_the_deadline():
    spec = make_spec(replicas=1)
    pods = group_pods(spec, 0, state="released", admitted_at=T0 - 100, unschedulable=True)
    plan = make_plan(spec, observe(spec, pods), scheduling_timeout=120)
    assert plan.actions == ()
    assert plan.groups[0].phase == GroupPhase.SCHEDULING
    assert plan.requeue_after == 20


def test_without_gang_pods_are_created_ungated_and_never_admitted_or_timed_out():
    spec = make_spec(placement={"gang": "None"}, replicas=2)
    plan = make_plan(
        spec,
        observe(spec, group_pods(spec, 0, state="released", unschedulable=True, admitted_at=None)),
    )
    assert plan.actions == (CreateGroup(1, gated=False),)
    assert plan.admissions == ()
    assert plan.groups[0].phase == GroupPhase.SCHEDULING


def test_group_phases_follow_its_pods():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=4)
    starting = group_pods(spec, 1, state="bound")
    starting[1] = replace(starting[1], ready=True)
    broken = group_pods(spec, 3, state="bound")
    broken[2] = replace(broken[2], phase="Failed")
    plan = make_plan(
        spec,
        observe(
            spec,
            group_pods(spec, 0, state="ready"),
            starting,
            group_pods(spec, 2, state="released"),
            broken,
        ),
    )
    assert phases(plan) == {
        0: GroupPhase.READY,
        1: GroupPhase.STARTING,
        2: GroupPhase.SCHEDULING,
        3: GroupPhase.BROKEN,
    }
    assert plan.groups[1].message == "1 of 3 pods ready"
    assert plan.groups[0].serving and not plan.groups[1].serving
    assert (plan.groups[0].pods, plan.groups[0].pods_ready) == (3, 3)


def test_starting_group_reports_why_a_container_waits():
    from darwin_operator.observed import Waiting

    spec = make_spec(replicas=1)
    pods = group_pods(
        spec,
        0,
        state="bound",
        waiting=(Waiting("vllm", "CreateContainerConfigError", 'secret "hf-token" not found'),),
    )
    plan = make_plan(spec, observe(spec, pods))
    assert plan.groups[0].message == (
        "0 of 1 pods ready; pod darwin-398b-0-0: CreateContainerConfigError: "
        'secret "hf-token" not found'
    )


def test_missing_secret_keeps_complete_groups_gated_with_the_reason():
    spec = make_spec(model={"name": "m", "tokenSecretRef": {"name": "hf-token"}}, replicas=1)
    plan = make_plan(spec, observe(spec, group_pods(spec, 0), secret_missing=True))
    assert plan.admissions == ()
    assert "Secret hf-token (spec.model.tokenSecretRef) not found" in plan.blocked_reason
    assert plan.groups[0].phase == GroupPhase.PENDING


def test_scale_down_drains_ready_leaders_of_the_highest_groups_first():
    spec = make_spec(replicas=1)
    ready = [group_pods(spec, i, state="ready") for i in range(4)]
    plan = make_plan(spec, observe(spec, *ready))
    assert plan.actions == (
        DrainGroup(3, "darwin-398b-3-0"),
        DrainGroup(2, "darwin-398b-2-0"),
        DrainGroup(1, "darwin-398b-1-0"),
    )
    assert plan.requeue_after == 30 + DRAIN_SETTLE_SECONDS
    assert phases(plan)[0] == GroupPhase.READY
    assert all(phases(plan)[i] == GroupPhase.DRAINING for i in (1, 2, 3))


def test_drained_group_is_deleted_once_drain_seconds_and_the_settle_time_have_passed():
    spec = make_spec(replicas=1)
    draining = group_pods(spec, 1, state="ready")
    draining[0] = replace(draining[0], serving="false", drain_started_at=T0 - 10)
    done = group_pods(spec, 2, state="ready")
    done[0] = replace(done[0], serving="false", drain_started_at=T0 - 30 - DRAIN_SETTLE_SECONDS)
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready"), draining, done))
    assert plan.actions == (DeleteGroup(2, DeleteReason.SCALE_DOWN, ("darwin-398b-2-0",)),)
    assert plan.requeue_after == 20 + DRAIN_SETTLE_SECONDS
    assert phases(plan)[1] == GroupPhase.DRAINING


def test_groups_that_serve_nothing_or_need_no_drain_go_at_once():
    # No request to wait for: the delete stamp takes the leader out of the Service in its
    # first write, and from then on the group counts as gone (a kill part way through is
    # finished later without a second look).
    spec = make_spec(replicas=0, rollout={"drainSeconds": 30})
    gated, starting = group_pods(spec, 0), group_pods(spec, 1, state="bound")
    plan = make_plan(spec, observe(spec, gated, starting))
    assert plan.actions == (
        DeleteGroup(1, DeleteReason.SCALE_DOWN, ("darwin-398b-1-0",)),
        DeleteGroup(0, DeleteReason.SCALE_DOWN, ("darwin-398b-0-0",)),
    )
    zero_drain = make_spec(replicas=0, rollout={"drainSeconds": 0})
    serving = group_pods(zero_drain, 0, state="ready")
    plan = make_plan(zero_drain, observe(zero_drain, serving))
    assert kinds(plan) == ["DeleteGroup"]
    assert plan.requeue_after is None
    # a Ready leader with drainSeconds > 0 still drains first
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready")))
    assert plan.actions == (DrainGroup(0, "darwin-398b-0-0"),)


def test_group_wanted_again_while_draining_returns_to_the_service():
    spec = make_spec(replicas=2)
    draining = group_pods(spec, 1, state="ready")
    draining[0] = replace(draining[0], serving="false", drain_started_at=T0 - 10)
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready"), draining))
    assert plan.actions == (RestoreServing(1, "darwin-398b-1-0"),)


def test_terminating_group_is_waited_for_and_an_unfinished_delete_is_finished():
    # The operator stamps every pod of a group before deleting any (writes.of): a
    # delete it was killed in the middle of shows on the pods it did not reach.
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=3)
    ours = {"marked_deleted": "Incomplete"}
    gone = group_pods(spec, 0, state="ready", deleting=True, **ours)
    half = group_pods(spec, 1, state="ready", **ours)
    half[0] = replace(half[0], deleting=True)
    stamped = group_pods(spec, 2, state="ready", **ours)
    plan = make_plan(spec, observe(spec, gone, half, stamped))
    # the deletions are finished, and each index gets its next incarnation at once
    assert plan.actions == (
        DeleteGroup(1, DeleteReason.UNFINISHED_DELETE, ("darwin-398b-1-1", "darwin-398b-1-2")),
        DeleteGroup(2, DeleteReason.UNFINISHED_DELETE, tuple(p.name for p in stamped)),
        *(CreateGroup(i, gated=True, incarnation=1) for i in range(3)),
    )
    assert set(phases(plan).values()) == {GroupPhase.PENDING}
    assert plan.groups[0].pods == 0  # pods being deleted do not count


def test_pods_of_another_owner_are_not_the_endpoints():
    spec = make_spec(replicas=1)
    stranger = [replace(p, owner_uid="someone-else") for p in group_pods(spec, 0, state="ready")]
    plan = make_plan(spec, observe(spec, stranger))
    assert plan.actions == (CreateGroup(0, gated=True),)


def test_replicas_zero_with_nothing_observed_plans_only_the_services():
    spec = make_spec(replicas=0)
    assert make_plan(spec, observe(spec)).actions == ()
    assert kinds(make_plan(spec, Observed())) == ["ApplyObject"] * 3


def test_labels_the_planner_reads_are_the_ones_render_writes():
    spec = make_spec(placement={"podsPerGroup": 3}, replicas=1)
    pods = group_pods(spec, 0)
    assert [(p.group, p.rank, p.role) for p in pods] == [
        (0, 0, vocabulary.ROLE_LEADER),
        (0, 1, vocabulary.ROLE_WORKER),
        (0, 2, vocabulary.ROLE_WORKER),
    ]
    assert pods[0].serving == "true" and all(p.gated for p in pods)


# ---- the stages: classify once, decide the rollout, act, then admission's answer ----


def test_every_group_is_classified_once_per_plan(monkeypatch):
    """One pass: the health check (the costliest part of classifying) runs once per group,
    also for groups above replicas that the rollout decides about."""
    spec = make_spec(replicas=2, rollout={"maxSurge": 1})
    calls = []
    real = health.diagnose
    monkeypatch.setattr(health, "diagnose", lambda g, **kw: calls.append(g.index) or real(g, **kw))
    old = group_pods(spec, 0, state="ready", rev="old-rev")
    plan = make_plan(
        spec,
        observe(spec, old, group_pods(spec, 1, state="ready"), group_pods(spec, 2, state="ready")),
        rollout_in_progress=True,
    )
    assert sorted(calls) == [0, 1, 2]
    assert {v.index for v in plan.groups} == {0, 1, 2}


def test_admission_answers_settle_the_phases_of_the_groups_that_asked():
    spec = make_spec(replicas=3)
    pods = [group_pods(spec, i) for i in range(3)]
    plan = make_plan(spec, observe(spec, *pods))
    assert [a.index for a in plan.admissions] == [0, 1, 2]
    fits = [
        capacity.Fit(True, ("n-0",), "fits on n-0"),
        capacity.Fit(False, (), "needs 6 GPUs", capacity.INSUFFICIENT_CAPACITY),
        capacity.Fit(False, (), "needs 6 GPUs", capacity.INSUFFICIENT_CAPACITY),
    ]
    answered = admitted(plan, fits)
    assert [(v.phase, v.message, v.reason) for v in answered.groups] == [
        (GroupPhase.SCHEDULING, "gates lifted", ""),
        (GroupPhase.WAITING_FOR_CAPACITY, "needs 6 GPUs", capacity.INSUFFICIENT_CAPACITY),
        (GroupPhase.WAITING_FOR_CAPACITY, "needs 6 GPUs", capacity.INSUFFICIENT_CAPACITY),
    ]
    assert answered.actions == plan.actions and answered.admissions == plan.admissions


def test_a_broken_group_being_scaled_away_does_not_fail_the_endpoint():
    """Classification sees every group, but only groups the endpoint still wants spend the
    restart budget: one above replicas is drained and deleted as the scale-down asked."""
    spec = make_spec(replicas=1, health={"maxGroupRestarts": 0})
    broken = [replace(p, restarts=1) for p in group_pods(spec, 1, state="ready")]
    plan = make_plan(spec, observe(spec, group_pods(spec, 0, state="ready"), broken))
    assert plan.health.failure is None
    assert plan.actions == (DrainGroup(1, "darwin-398b-1-0"),)
    assert phases(plan) == {0: GroupPhase.READY, 1: GroupPhase.DRAINING}
    # the same fault in a wanted group spends the budget: the endpoint is Failed
    wanted = [replace(p, restarts=1) for p in group_pods(spec, 0, state="ready")]
    plan = make_plan(spec, observe(spec, wanted))
    assert plan.health.failure is not None and plan.health.failure.group == 0
