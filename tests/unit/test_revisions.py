"""Each revision's spec is kept in the cluster, so a group below the partition that is lost comes
back on its own revision; old revisions are pruned to a short history."""

from __future__ import annotations

import asyncio
import copy

from darwin_operator import revisions, writes
from darwin_operator.observed import StoredRevision
from darwin_operator.planner import CreateGroup, GroupMemory, PruneRevision, StoreRevision
from darwin_operator.reconciler import Reconciler
from darwin_operator.vocabulary import LABEL_REVISION, GroupPhase
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object
from tests.unit.planner_fixtures import REF, group_pods, make_plan, make_spec, observe, revision

OLD = make_spec(replicas=2, engine={"image": "vllm/vllm-openai:v0.32.0"})
NEW = make_spec(replicas=2, engine={"image": "vllm/vllm-openai:v0.33.0"}, rollout={"partition": 1})


def stored(*specs):
    return tuple(
        StoredRevision(f"darwin-398b-{revision(s)}", revision(s), n) for n, s in enumerate(specs, 1)
    )


def test_a_revision_reads_back_as_the_spec_it_was_stored_from():
    obj = revisions.render_revision(REF, OLD, revision(OLD), "2026-01-01T00:00:00.000Z", 4)
    assert obj["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    assert obj["metadata"]["labels"][LABEL_REVISION] == revision(OLD)
    kept, spec = revisions.from_api(copy.deepcopy(obj), REF.uid)
    assert kept == StoredRevision(f"darwin-398b-{revision(OLD)}", revision(OLD), 4)
    assert spec == OLD
    assert revisions.from_api(obj, "another-uid") is None  # not this endpoint's
    obj["data"]["spec"]["replicas"] = -1
    assert revisions.from_api(obj, REF.uid) is None  # unreadable: not used


def test_the_update_revision_is_stored_once_and_numbered_after_the_others():
    observed = observe(NEW, revisions=stored(OLD))
    stores = [a for a in make_plan(NEW, observed).actions if isinstance(a, StoreRevision)]
    assert stores == [StoreRevision(revision(NEW), 2)]
    observed = observe(NEW, revisions=stored(OLD, NEW))
    assert not [a for a in make_plan(NEW, observed).actions if isinstance(a, StoreRevision)]
    # unreadable (no RBAC for them): nothing is stored or pruned, groups come back new
    assert not [
        a
        for a in make_plan(NEW, observe(NEW)).actions
        if isinstance(a, StoreRevision | PruneRevision)
    ]


def test_a_lost_group_below_the_partition_comes_back_on_its_own_revision():
    new_group = group_pods(NEW, 1, state="ready")
    observed = observe(NEW, new_group, revisions=stored(OLD, NEW))
    remembered = {
        0: GroupMemory(revision(OLD), "Broken", 1),  # its loss is on record
        1: GroupMemory(revision(NEW), "Broken", 1),
    }
    plan = make_plan(NEW, observed, remembered=remembered)
    assert CreateGroup(0, gated=True, revision=revision(OLD)) in plan.actions
    assert (plan.groups[0].revision, plan.groups[0].phase) == (revision(OLD), GroupPhase.PENDING)
    # at or above the partition, and without the old spec stored, a lost group comes back new
    plan = make_plan(NEW, observe(NEW, revisions=stored(OLD, NEW)), remembered=remembered)
    assert CreateGroup(1, gated=True) in plan.actions
    plan = make_plan(NEW, observe(NEW, new_group, revisions=stored(NEW)), remembered=remembered)
    assert CreateGroup(0, gated=True) in plan.actions


def test_the_old_group_is_built_from_the_stored_spec():
    action = CreateGroup(0, gated=True, revision=revision(OLD))
    (pod,) = writes.of(action, REF, NEW, revision(NEW), 0.0, {revision(OLD): OLD}).first
    assert pod.body["metadata"]["labels"][LABEL_REVISION] == revision(OLD)
    assert pod.body["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.32.0"


def test_revisions_no_group_uses_are_pruned_beyond_a_short_history():
    specs = [make_spec(engine={"image": f"vllm/vllm-openai:v0.{n}.0"}) for n in range(20, 26)]
    current = specs[-1]
    in_use = group_pods(specs[0], 0, state="ready", rev=revision(specs[0]))  # the oldest
    observed = observe(current, in_use, revisions=stored(*specs))
    pruned = [a.name for a in make_plan(current, observed).actions if isinstance(a, PruneRevision)]
    keep = {revision(specs[0]), *(revision(s) for s in specs[-revisions.HISTORY :])}
    assert pruned == [
        f"darwin-398b-{revision(s)}" for s in reversed(specs) if revision(s) not in keep
    ]


def test_reconciles_keep_the_revisions_and_rebuild_a_lost_group_below_the_partition():
    """Through the reconciler and a fake API: the first revision is stored; after a spec change
    with partition 1 only group 1 is replaced; group 0's pod is then deleted by hand and comes
    back on the first revision, with the first spec's image."""
    old_doc = spec_doc(engine={"image": "vllm/vllm-openai:v0.32.0"}, rollout={"drainSeconds": 0})
    fake = FakeCluster(endpoint_object("darwin-398b", "llm", old_doc))
    now = [1000.0]
    reconciler = Reconciler(fake, clock=lambda: now[0])  # type: ignore[arg-type]

    async def settle(rounds: int = 8) -> None:
        for _ in range(rounds):
            now[0] += 5
            fake.clock = now[0]
            await reconciler.reconcile("llm", "darwin-398b")
            fake.bind_all(at=now[0])
            fake.ready_all(at=now[0])
            for pod in list(fake.pods.values()):  # the kubelet ends pods being deleted
                if pod["metadata"].get("annotations", {}).get("serving.darwin.ai/deleteReason"):
                    del fake.pods[pod["metadata"]["name"]]

    def image_and_revision(group: int) -> tuple[str, str]:
        (pod,) = (
            p
            for p in fake.pods.values()
            if p["metadata"]["labels"]["serving.darwin.ai/group"] == str(group)
            and p["metadata"]["labels"]["serving.darwin.ai/rank"] == "0"
        )
        return pod["spec"]["containers"][0]["image"], pod["metadata"]["labels"][LABEL_REVISION]

    async def scenario() -> None:
        await settle()
        first = image_and_revision(0)
        assert first[0] == "vllm/vllm-openai:v0.32.0" and len(fake.revisions) == 1
        fake.endpoint["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.33.0"
        fake.endpoint["spec"]["rollout"]["partition"] = 1
        fake.endpoint["metadata"]["generation"] += 1
        await settle()
        assert image_and_revision(0) == first
        assert image_and_revision(1)[0] == "vllm/vllm-openai:v0.33.0"
        assert len(fake.revisions) == 2
        del fake.pods["darwin-398b-0-0"]  # lost: deleted by hand
        await settle()
        assert image_and_revision(0) == first
        assert fake.endpoint["status"]["groups"][0]["revision"] == first[1]

    asyncio.run(scenario())
