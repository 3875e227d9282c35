"""Status, conditions and the events a status change deserves."""

from __future__ import annotations

from dataclasses import replace

from darwin_operator import capacity, status
from darwin_operator.cluster import ApiError
from darwin_operator.events import Reason
from darwin_operator.planner import GroupView
from darwin_operator.vocabulary import GroupPhase
from tests.unit.planner_fixtures import T0, make_spec

REV = "rev1"


def view(index: int, phase: GroupPhase, **kw) -> GroupView:
    defaults = dict(
        revision=REV,
        pods=1,
        pods_ready=1 if phase == GroupPhase.READY else 0,
        restarts=0,
        serving=phase == GroupPhase.READY,
    )
    return GroupView(index=index, phase=phase, **{**defaults, **kw})


def compute(views, *, old=None, spec=None, now=T0, blocked="", rejected=""):
    return status.compute(
        name="darwin-398b",
        namespace="llm",
        generation=3,
        spec=spec or make_spec(),
        revision=REV,
        views=views,
        old=old,
        now=now,
        blocked_reason=blocked,
        rejected=rejected,
    )


def conditions(s):
    return {c.type: (c.status, c.reason) for c in s.conditions}


def test_all_groups_ready_is_ready_available_and_not_progressing():
    s = compute([view(0, GroupPhase.READY), view(1, GroupPhase.READY)])
    assert s.phase == "Ready"
    assert (s.replicas, s.ready_replicas, s.updated_replicas, s.available_replicas) == (2, 2, 2, 2)
    assert s.observed_generation == 3 and s.ready == "2/2"
    assert s.selector == "serving.darwin.ai/endpoint=darwin-398b,serving.darwin.ai/role=leader"
    assert s.endpoint == "http://darwin-398b.llm.svc:8000/v1"
    assert s.current_revision == s.update_revision == REV
    assert conditions(s) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "Converged"),
        "Degraded": ("False", "AsExpected"),
        "WeightsCached": ("False", "EveryPodDownloads"),  # the reference spec has no cache
    }
    assert [(g.index, g.phase, g.pods_ready) for g in s.groups] == [
        (0, "Ready", 1),
        (1, "Ready", 1),
    ]


def test_starting_endpoint_is_pending_then_progressing():
    s = compute([view(0, GroupPhase.PENDING, pods=0), view(1, GroupPhase.SCHEDULING)])
    assert s.phase == "Pending"
    assert conditions(s)["Progressing"] == ("True", "CreatingGroups")
    assert conditions(s)["Available"] == ("False", "MinimumReplicasUnavailable")
    assert s.replicas == 1  # a group with no pod yet is not there
    s = compute([view(0, GroupPhase.READY), view(1, GroupPhase.STARTING)])
    assert s.phase == "Progressing"
    assert conditions(s)["Available"] == ("True", "MinimumReplicasAvailable")  # maxUnavailable 1
    assert conditions(s)["Progressing"] == ("True", "Starting")


def test_group_waiting_for_capacity_degrades_with_the_capacity_message():
    message = "needs 1 pod x 6 nvidia.com/gpu on NVIDIA-B200 nodes; free: 8 GPUs on 4 eligible"
    waiting = view(
        1,
        GroupPhase.WAITING_FOR_CAPACITY,
        message=message,
        reason=capacity.INSUFFICIENT_CAPACITY,
    )
    s = compute([view(0, GroupPhase.READY), waiting])
    assert s.phase == "Degraded"
    degraded = next(c for c in s.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "InsufficientCapacity")
    assert message in degraded.message
    assert s.groups[1].message == message
    nowhere = replace(waiting, reason=capacity.NO_ELIGIBLE_NODES)
    assert conditions(compute([nowhere]))["Degraded"] == ("True", "NoEligibleNodes")


def test_missing_secret_degrades_with_its_reason():
    s = compute([view(0, GroupPhase.PENDING)], blocked="Secret hf-token not found")
    assert conditions(s)["Degraded"] == ("True", "SecretNotFound")
    assert s.phase == "Degraded"


def test_refused_write_degrades_with_the_api_servers_message_until_a_write_succeeds():
    refusal = (
        'the API server refused a write (403): pods "darwin-398b-1-0" is forbidden: violates '
        'PodSecurity "baseline:latest": hostPath volumes (volume "weights")'
    )
    groups = [view(0, GroupPhase.READY), view(1, GroupPhase.PENDING, pods=0)]
    first = compute(groups, rejected=refusal)
    degraded = next(c for c in first.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason, degraded.message) == (
        "True",
        "WriteRejected",
        refusal,
    )
    assert first.phase == "Degraded"
    assert conditions(first)["Available"][0] == "True"  # group 0 still serves
    notes = [n for n in status.transitions(None, first) if n.reason == Reason.WRITE_REJECTED]
    assert [(n.type, n.message) for n in notes] == [("Warning", refusal)]
    # refused again on the retry: no second event
    again = compute(groups, old=first, rejected=refusal, now=T0 + 5)
    assert Reason.WRITE_REJECTED not in [n.reason for n in status.transitions(first, again)]
    # the write goes through: the condition clears
    cleared = compute(groups, old=again, now=T0 + 10)
    assert conditions(cleared)["Degraded"] == ("False", "AsExpected")


def test_only_refusals_a_person_must_fix_count_as_refused():
    refused = {
        s for s in (400, 401, 403, 404, 409, 422, 429, 500, 503) if ApiError(s, "", "").refused
    }
    assert refused == {400, 401, 403, 422}


def test_scale_down_counts_only_wanted_groups_as_available():
    spec = make_spec(replicas=1)
    s = compute([view(0, GroupPhase.READY), view(1, GroupPhase.DRAINING, serving=False)], spec=spec)
    assert s.phase == "Progressing"
    assert conditions(s)["Progressing"] == ("True", "ScalingDown")
    assert (s.replicas, s.available_replicas) == (2, 1)


def test_replicas_zero_with_no_group_is_ready():
    s = compute([], spec=make_spec(replicas=0))
    assert s.phase == "Ready" and s.replicas == 0
    assert conditions(s)["Available"] == ("True", "MinimumReplicasAvailable")


def test_old_revision_groups_are_not_updated():
    s = compute([view(0, GroupPhase.READY, revision="old"), view(1, GroupPhase.READY)])
    assert s.updated_replicas == 1
    assert s.current_revision == "old" and s.update_revision == REV
    assert conditions(s)["Progressing"][0] == "True"


def test_unchanged_status_is_not_patched_and_transition_times_are_kept():
    first = compute([view(0, GroupPhase.READY), view(1, GroupPhase.READY)])
    later = compute([view(0, GroupPhase.READY), view(1, GroupPhase.READY)], old=first, now=T0 + 60)
    assert later == first
    assert not status.changed(first, later)
    assert status.changed(None, later)
    worse = compute(
        [view(0, GroupPhase.READY), view(1, GroupPhase.STARTING)], old=first, now=T0 + 90
    )
    assert status.changed(first, worse)
    available = next(c for c in worse.conditions if c.type == "Available")
    progressing = next(c for c in worse.conditions if c.type == "Progressing")
    assert available.last_transition_time == "2025-06-15T15:06:40.000Z"  # still True: unchanged
    assert progressing.last_transition_time == "2025-06-15T15:08:10.000Z"
    assert worse.groups[0].phase_since == first.groups[0].phase_since
    assert worse.groups[1].phase_since != first.groups[1].phase_since


def test_events_fire_on_transitions_only():
    waiting = view(
        0, GroupPhase.WAITING_FOR_CAPACITY, message="needs...", reason=capacity.NO_ELIGIBLE_NODES
    )
    first = compute([waiting])
    reasons = [n.reason for n in status.transitions(None, first)]
    assert reasons == [
        Reason.WAITING_FOR_CAPACITY,
        Reason.NO_ELIGIBLE_NODES,
        Reason.EVERY_POD_DOWNLOADS,
    ]
    again = compute([waiting], old=first)
    assert status.transitions(first, again) == []
    ready = compute([view(0, GroupPhase.READY)], spec=make_spec(replicas=1), old=again)
    reasons = [n.reason for n in status.transitions(again, ready)]
    assert reasons == [Reason.GROUP_READY, Reason.ENDPOINT_READY]


def test_failed_status_keeps_what_was_known_and_says_why():
    before = compute([view(0, GroupPhase.READY), view(1, GroupPhase.READY)])
    s = status.failed(
        name="darwin-398b",
        generation=4,
        old=before,
        reason=Reason.INVALID_SPEC,
        message="invalid spec: engine.extraArgs: may not contain --port",
        now=T0,
    )
    assert s.phase == "Failed" and s.observed_generation == 4
    assert s.ready_replicas == 2
    assert conditions(s)["Degraded"] == ("True", "InvalidSpec")
    (note,) = status.transitions(before, s)
    assert note.reason == Reason.INVALID_SPEC and "--port" in note.message


def test_percent_max_unavailable_resolves_like_deployments():
    assert status.resolve_int_or_percent("25%", 10, round_up=False) == 2
    assert status.resolve_int_or_percent("25%", 10, round_up=True) == 3
    assert status.resolve_int_or_percent("3", 10, round_up=False) == 3
    assert status.resolve_int_or_percent(1, 10, round_up=False) == 1


def test_without_a_cache_a_warning_says_every_pod_downloads_the_model_once():
    no_size = compute([view(0, GroupPhase.READY)], spec=make_spec(replicas=1))
    cached = status.find_condition(no_size.conditions, "WeightsCached")
    assert (cached.status, cached.reason) == ("False", "EveryPodDownloads")
    assert "every pod downloads the whole model" in cached.message
    assert "set model.size" in cached.message
    sized = make_spec(replicas=1, model={"size": "800Gi"})
    s = compute([view(0, GroupPhase.READY)], spec=sized, old=no_size)
    assert "(800Gi), and each requests that much ephemeral storage" in (
        status.find_condition(s.conditions, "WeightsCached").message
    )
    notes = [n for n in status.transitions(None, s) if n.reason == Reason.EVERY_POD_DOWNLOADS]
    assert [n.type for n in notes] == ["Warning"]
    assert Reason.EVERY_POD_DOWNLOADS not in [n.reason for n in status.transitions(no_size, s)]

    with_cache = make_spec(
        replicas=1, model={"cache": {"hostPath": "/mnt/nvme", "staging": "PerNode"}}
    )
    s = compute([view(0, GroupPhase.READY)], spec=with_cache)
    assert status.find_condition(s.conditions, "WeightsCached") is None
