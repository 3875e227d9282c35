"""Staged weights (weights.py, staged.py, weights_pods.py): what each node holds, what to do next,
and the plan bent around it (pure)."""

from __future__ import annotations

import pytest

from darwin_operator import capacity, planner, render, rollout, staged, staging, weights
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.capacity import GroupDemand
from darwin_operator.observed import NodeInfo, Observed, ObservedGroup, ObservedPod, Placement
from darwin_operator.vocabulary import GroupPhase
from darwin_operator.weights import (
    DOWNLOADING,
    FAILED,
    STAGED,
    Adopt,
    Copy,
    Prune,
    Record,
    Remove,
    Stage,
    plan_weights,
)

UID = "uid-1"
V1 = Copy("pvc/models", "org/model", "v1")
V2 = Copy("pvc/models", "org/model", "v2")
NODES = ("n0", "n1", "n2")
TIMEOUT = 3600.0
NOT_WRITABLE = staging.FAILURE_BY_REASON["WeightsVolumeNotWritable"]
UNREACHABLE = staging.FAILURE_BY_REASON["HubUnreachable"]


def rec(copy=V1, node="n0", attempt=0, phase="Succeeded", owners=(UID,), **kw) -> Record:
    return Record(
        name=weights.staging_pod_name(copy, node, attempt),
        role=kw.pop("role", weights.ROLE_STAGING),
        copy=copy,
        node=node,
        attempt=attempt,
        phase=phase,
        owners=owners,
        **kw,
    )


def plan(records=(), now=1000.0, in_use=frozenset({V1.key}), copy=V1, **kw):
    return plan_weights(
        copy,
        kw.pop("targets", NODES),
        records,
        uid=UID,
        now=now,
        download_timeout=TIMEOUT,
        in_use=in_use,
        **kw,
    )


def test_a_copy_is_known_by_volume_model_and_revision():
    assert V1.key != V2.key != Copy("host//mnt", "org/model", "v1").key
    assert weights.staging_pod_name(V1, "n0", 0) != weights.staging_pod_name(V1, "n1", 0)
    assert len(weights.staging_pod_name(V1, "a" * 253, 99)) <= 63


@pytest.mark.parametrize(
    ("records", "expected_actions", "states"),
    [
        # nothing yet: one staging pod per node
        ((), {Stage(V1, n, 0) for n in NODES}, {DOWNLOADING}),
        # all done: nothing to do
        (tuple(rec(node=n) for n in NODES), set(), {STAGED}),
        # one still downloading, within its timeout: wait
        (
            (rec(node="n0"), rec(node="n1"), rec(node="n2", phase="Running", created_at=900.0)),
            set(),
            {STAGED, DOWNLOADING},
        ),
        # another endpoint staged it: shared, adopted, never downloaded again
        (
            tuple(rec(node=n, owners=("other",)) for n in NODES),
            {Adopt(weights.staging_pod_name(V1, n, 0)) for n in NODES},
            {STAGED},
        ),
    ],
)
def test_each_node_gets_one_staging_pod_per_copy(records, expected_actions, states):
    p = plan(records)
    assert set(p.actions) == expected_actions
    assert {n.state for n in p.nodes} == states


def test_a_failure_waits_out_its_backoff_then_retries_with_the_next_attempt():
    failed = rec(node="n2", phase="Failed", finished_at=1000.0, failure=(UNREACHABLE.reason, "x"))
    records = (rec(node="n0"), rec(node="n1"), failed)
    early = plan(records, now=1001.0)
    assert early.actions == ()
    assert early.problem is not None and early.problem[0] == "HubUnreachable"
    assert "node n2" in early.problem[1]
    assert 1000.0 + weights.BACKOFF_BASE_SECONDS in early.deadlines
    late = plan(records, now=1000.0 + weights.BACKOFF_BASE_SECONDS)
    assert set(late.actions) == {Remove(failed.name, "HubUnreachable"), Stage(V1, "n2", 1)}


def test_backoff_doubles_for_passing_failures_and_is_longest_for_ones_a_person_must_fix():
    assert weights.backoff(0, UNREACHABLE.reason) < weights.backoff(3, UNREACHABLE.reason)
    assert weights.backoff(30, UNREACHABLE.reason) == weights.BACKOFF_MAX_SECONDS
    assert weights.backoff(0, NOT_WRITABLE.reason) == weights.BACKOFF_MAX_SECONDS


def test_a_download_past_its_timeout_is_replaced_after_backoff():
    slow = rec(node="n0", phase="Running", created_at=0.0)
    late = plan((slow,), now=TIMEOUT + 1, targets=("n0",))
    assert late.actions == ()
    assert late.problem[0] == weights.TIMEOUT_REASON
    assert late.nodes[0].state == FAILED
    retry = TIMEOUT + weights.BACKOFF_BASE_SECONDS
    assert retry in late.deadlines
    again = plan((slow,), now=retry, targets=("n0",))
    assert set(again.actions) == {Remove(slow.name, weights.TIMEOUT_REASON), Stage(V1, "n0", 1)}


def test_a_missing_claim_or_secret_blocks_every_staging_pod():
    p = plan((), blocked=(weights.VOLUME_MISSING_REASON, "claim models not found"))
    assert not [a for a in p.actions if isinstance(a, Stage)]
    assert p.problem == (weights.VOLUME_MISSING_REASON, "claim models not found")


def test_old_copies_are_pruned_only_when_the_new_one_is_everywhere_and_no_group_uses_them():
    old = tuple(rec(V1, n) for n in NODES)
    half = (*old, rec(V2, "n0"), rec(V2, "n1"), rec(V2, "n2", phase="Running", created_at=999.0))
    assert not [a for a in plan(half, copy=V2, in_use=frozenset({V2.key})).actions]
    new = tuple(rec(V2, n) for n in NODES)
    # a group still on v1: kept
    assert plan((*old, *new), copy=V2, in_use=frozenset({V1.key, V2.key})).actions == ()
    # the group set is unknown: kept
    assert plan((*old, *new), copy=V2, in_use=None).actions == ()
    # another endpoint owns it too: kept
    shared = tuple(rec(V1, n, owners=(UID, "other")) for n in NODES)
    assert plan((*shared, *new), copy=V2, in_use=frozenset({V2.key})).actions == ()
    pruned = plan((*old, *new), copy=V2, in_use=frozenset({V2.key}))
    assert set(pruned.actions) == {Prune(V1, n) for n in NODES}
    # the prune pod done: the record goes, then the prune pod
    prune = rec(V1, "n0", role=weights.ROLE_PRUNE)
    prune = Record(**{**prune.__dict__, "name": weights.prune_pod_name(V1, "n0")})
    after = plan((old[0], prune, *new), copy=V2, in_use=frozenset({V2.key}), targets=NODES)
    assert Remove(old[0].name, "pruned") in after.actions
    gone = plan((prune, *new), copy=V2, in_use=frozenset({V2.key}))
    assert Remove(prune.name, "done") in gone.actions


def test_records_read_back_from_pods():
    spec = DarwinEndpointSpec.model_validate(
        {
            "model": {
                "name": "org/model",
                "revision": "v1",
                "cache": {"persistentVolumeClaim": "models", "staging": "PerNode"},
            }
        }
    )
    ref = render.EndpointRef("e", "ns", UID)
    body = weights_pod(ref, spec, Stage(V1, "n0", 2))
    assert body["spec"]["restartPolicy"] == "Never"
    assert "nvidia.com/gpu" not in str(body["spec"]["containers"][0]["resources"])
    assert body["metadata"]["ownerReferences"][0]["controller"] is False
    body["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {"state": {"terminated": {"exitCode": NOT_WRITABLE.exit_code, "message": "denied"}}}
        ],
    }
    record = weights.record_from_api(body)
    assert record is not None
    assert (record.copy, record.node, record.attempt) == (V1, "n0", 2)
    assert record.failure == (NOT_WRITABLE.reason, "denied")
    assert record.owners == (UID,)


def weights_pod(ref, spec, action):
    from darwin_operator import weights_pods

    return weights_pods.pod(ref, spec, action)


# ---- placement ----


def b200(name: str, gpus: int = 8) -> NodeInfo:
    return NodeInfo(
        name=name,
        labels=(("nvidia.com/gpu.product", "NVIDIA-B200"),),
        allocatable=(("nvidia.com/gpu", gpus),),
    )


def demand(**kw) -> GroupDemand:
    placement = Placement(node_selector=(("nvidia.com/gpu.product", "NVIDIA-B200"),))
    return GroupDemand(pods=1, gpus_per_pod=6, placement=placement, **kw)


def test_admission_uses_only_nodes_with_the_weights_and_prefers_the_groups_last_nodes():
    nodes = [b200("n0"), b200("n1"), b200("n2")]
    free = {"n0": 8, "n1": 8, "n2": 8}
    assert capacity.fit(demand(), nodes, free).nodes == ("n0",)  # best fit, then name
    assert capacity.fit(demand(prefer=("n2",)), nodes, free).nodes == ("n2",)
    only = capacity.fit(demand(only_nodes=frozenset({"n1"})), nodes, free)
    assert only.nodes == ("n1",)
    # the preferred node without room: another node holding the weights
    tight = capacity.fit(demand(prefer=("n2",)), nodes, {"n0": 8, "n1": 8, "n2": 2})
    assert tight.nodes == ("n0",)
    none = capacity.fit(demand(only_nodes=frozenset()), nodes, free)
    assert not none.fits and "without the weights staged" in none.message


def group(index: int, revision: str, node: str = "", gated: bool = True) -> ObservedGroup:
    pod = ObservedPod(name=f"e-{index}-0", rank=0, revision=revision, node_name=node, gated=gated)
    return ObservedGroup(index=index, pods=(pod,))


def view(index: int, phase: GroupPhase, revision: str = "r1", serving=False) -> planner.GroupView:
    return planner.GroupView(index, revision, phase, 1, 0, 0, serving=serving)


def test_a_group_waits_downloading_until_some_node_holds_its_weights():
    observed = Observed(groups=(group(0, "r1"),))
    admission = planner.Admission(0, demand(), ("e-0-0",))
    base = planner.Plan((), (admission,), (view(0, GroupPhase.WAITING_FOR_CAPACITY),))
    cold = plan((rec(node="n0", phase="Running", created_at=999.0),), targets=("n0",))
    bent = staged.restrict(base, cold, observed, {"r1": V1}, {})
    assert bent.admissions == ()
    assert bent.groups[0].phase == GroupPhase.DOWNLOADING
    warm = plan((rec(node="n0"),), targets=("n0", "n1"))
    bent = staged.restrict(base, warm, observed, {"r1": V1}, {0: ("n0",)})
    (asked,) = bent.admissions
    assert asked.demand.only_nodes == frozenset({"n0"})
    assert asked.demand.prefer == ("n0",)


def test_a_rollout_drains_a_group_only_once_its_nodes_hold_the_new_weights():
    observed = Observed(groups=(group(0, "r1", node="n0", gated=False),))
    drain = planner.DrainGroup(0, "e-0-0")
    base = planner.Plan(
        (drain,),
        (),
        (view(0, GroupPhase.DRAINING, serving=True),),
        rollout=rollout.Decision(replace=frozenset({0})),
    )
    staging_v2 = plan(
        (rec(V1, "n0"), rec(V2, "n0", phase="Running", created_at=999.0)),
        copy=V2,
        targets=("n0",),
    )
    held = staged.restrict(base, staging_v2, observed, {"r1": V1}, {})
    assert held.actions == ()
    assert held.groups[0].phase == GroupPhase.READY
    assert "replaced once n0 hold" in held.groups[0].message
    ready_v2 = plan((rec(V1, "n0"), rec(V2, "n0")), copy=V2, targets=("n0",))
    assert staged.restrict(base, ready_v2, observed, {"r1": V1}, {}).actions == (drain,)


def test_starting_shows_as_loading_with_staged_weights():
    base = planner.Plan((), (), (view(0, GroupPhase.STARTING),))
    done = plan(tuple(rec(node=n) for n in NODES))
    assert staged.restrict(base, done, Observed(), {}, {}).groups[0].phase == GroupPhase.LOADING


def test_a_shared_volume_is_staged_once_and_holds_every_group_until_it_is():
    shared = Copy("pvc/rwx", "org/model", "v1")
    observed = Observed(groups=(group(0, "r1"), group(1, "r1")))
    admissions = tuple(planner.Admission(i, demand(), (f"e-{i}-0",)) for i in (0, 1))
    views = tuple(view(i, GroupPhase.WAITING_FOR_CAPACITY) for i in (0, 1))
    base = planner.Plan((), admissions, views)
    first = plan((), copy=shared, targets=("",))
    assert first.actions == (Stage(shared, "", 0),)
    bent = staged.restrict(base, first, observed, {"r1": shared}, {})
    assert bent.admissions == ()
    assert {v.phase for v in bent.groups} == {GroupPhase.DOWNLOADING}
    done = plan((rec(shared, ""),), copy=shared, targets=("",))
    assert done.complete and done.actions == ()
    bent = staged.restrict(base, done, observed, {"r1": shared}, {})
    assert [a.demand.only_nodes for a in bent.admissions] == [None, None]
