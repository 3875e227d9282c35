"""Incarnations through the reconciler and a fake API: a replaced or recreated group's successor
is created and admitted in the reconcile that deletes it, never while the old pods are live, and
without waiting for them to be gone."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from darwin_operator import render, writes
from darwin_operator.cluster import ApiError
from darwin_operator.observed import pod_from_api
from darwin_operator.planner import CreateGroup, DeleteGroup, DrainGroup
from darwin_operator.reconciler import Reconciler, WriteRejected
from darwin_operator.vocabulary import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_DELETE_REASON,
    LABEL_INCARNATION,
    find_condition,
    format_time,
)
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object
from tests.unit.planner_fixtures import REF, group_pods, make_plan, make_spec, observe


class SlowToDelete(FakeCluster):
    """Deleted pods stay, Terminating (as on an unreachable node), and every write is recorded
    with what the index looked like when it landed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.created_beside_live: list[str] = []

    async def write_pods(self, namespace: str, pod_writes) -> int:
        done = 0
        for write in pod_writes:
            if isinstance(write, writes.DeletePod) and write.name in self.pods:
                self.pods[write.name]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                done += 1
                continue
            if isinstance(write, writes.CreatePod) and write.name not in self.pods:
                group = write.body["metadata"]["labels"]["serving.darwin.ai/group"]
                live = [
                    name
                    for name, pod in self.pods.items()
                    if pod["metadata"]["labels"]["serving.darwin.ai/group"] == group
                    and not pod["metadata"].get("deletionTimestamp")
                ]
                self.created_beside_live += [f"{write.name} beside {name}" for name in live]
            done += await super().write_pods(namespace, [write])
        return done


def labels(pod: dict) -> dict[str, str]:
    return pod["metadata"]["labels"]


def test_a_rollout_step_deletes_creates_and_admits_in_one_reconcile_with_the_old_pods_still_there():
    doc = spec_doc(replicas=1, rollout={"drainSeconds": 0})
    fake = SlowToDelete(endpoint_object("darwin-398b", "llm", doc))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]

    async def scenario() -> None:
        fake.clock = 1000.0
        await reconciler.reconcile("llm", "darwin-398b")  # created and admitted at once
        assert all(not p["spec"].get("schedulingGates") for p in fake.pods.values())
        fake.bind_all(at=1001.0)
        fake.ready_all(at=1002.0)
        fake.clock = 1003.0
        await reconciler.reconcile("llm", "darwin-398b")
        assert fake.endpoint["status"]["readyReplicas"] == 1
        old = set(fake.pods)

        fake.endpoint["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.34.0"
        fake.endpoint["metadata"]["generation"] += 1
        fake.clock = 1004.0
        await reconciler.reconcile("llm", "darwin-398b")

        # the old pods: stamped, out of the Service, deleted, and still Terminating
        for name in old:
            pod = fake.pods[name]
            assert pod["metadata"]["deletionTimestamp"]
            assert pod["metadata"]["annotations"][ANNOTATION_DELETE_REASON] == "Rollout"
        assert labels(fake.pods["darwin-398b-0-0"])["serving.darwin.ai/serving"] == "false"
        # the successor: names of its own, on the new image, gates lifted in the same reconcile
        new = {n: p for n, p in fake.pods.items() if n not in old}
        assert sorted(new) == ["darwin-398b-0-0-1"]
        (pod,) = new.values()
        assert labels(pod)[LABEL_INCARNATION] == "1"
        assert pod["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.34.0"
        assert not pod["spec"].get("schedulingGates")
        assert fake.created_beside_live == []  # never created while an old pod was live

    asyncio.run(scenario())


def test_without_room_the_successor_waits_gated_until_the_old_pods_free_their_gpus():
    # One node of 8 GPUs, a group of 6: the old incarnation's pods hold them while Terminating.
    doc = spec_doc(replicas=1, rollout={"drainSeconds": 0})
    fake = SlowToDelete(endpoint_object("darwin-398b", "llm", doc), nodes=1)
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]

    async def scenario() -> None:
        fake.clock = 1000.0
        await reconciler.reconcile("llm", "darwin-398b")
        fake.bind_all(at=1001.0)
        fake.ready_all(at=1002.0)
        old = set(fake.pods)
        fake.endpoint["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.34.0"
        fake.endpoint["metadata"]["generation"] += 1
        fake.clock = 1004.0
        await reconciler.reconcile("llm", "darwin-398b")
        (new,) = set(fake.pods) - old
        assert fake.pods[new]["spec"]["schedulingGates"]  # created, not admitted
        (group,) = fake.endpoint["status"]["groups"]
        assert group["phase"] == "WaitingForCapacity"

        await reconciler.reconcile("llm", "darwin-398b")  # still there: still waiting
        assert fake.pods[new]["spec"]["schedulingGates"]
        for name in old:  # the kubelet confirms their end
            del fake.pods[name]
        await reconciler.reconcile("llm", "darwin-398b")
        assert not fake.pods[new]["spec"].get("schedulingGates")

    asyncio.run(scenario())


def test_groups_of_an_operator_before_incarnations_are_adopted_then_rolled_in_turn():
    picked = ("name", "incarnation", "revision")

    spec = make_spec(replicas=2, rollout={"drainSeconds": 0})
    # pods as the operator before incarnations made them: no incarnation label
    before = []
    for i in range(2):
        (obj,) = render.render_group(REF, spec, "0ld0ld0ld0", i, gated=False)
        del obj["metadata"]["labels"][LABEL_INCARNATION]
        (ready,) = group_pods(spec, i, state="ready")
        before.append(replace(ready, **{f: getattr(pod_from_api(obj), f) for f in picked}))
    assert {p.name for p in before} == {"darwin-398b-0-0", "darwin-398b-1-0"}
    plan = make_plan(spec, observe(spec, before))
    # adopted as incarnation 0; the highest index is replaced first, one at a time
    assert [type(a) for a in plan.actions] == [DeleteGroup, CreateGroup]
    delete, create = plan.actions
    assert delete.index == 1 and delete.pods == ("darwin-398b-1-0",)
    assert create == CreateGroup(1, gated=True, incarnation=1)
    assert not any(isinstance(a, DrainGroup) for a in plan.actions)


class Recorded(SlowToDelete):
    """Also keeps every pod write, and refuses the creation of the pods named in `refused`
    (as a quota would) while creating the others."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.written: list[writes.PodWrite] = []
        self.refused: set[str] = set()

    async def write_pods(self, namespace: str, pod_writes) -> int:
        pod_writes = list(pod_writes)
        self.written += pod_writes
        refused = [
            w for w in pod_writes if isinstance(w, writes.CreatePod) and w.name in self.refused
        ]
        done = await super().write_pods(namespace, [w for w in pod_writes if w not in refused])
        if refused:
            raise ApiError(403, "Forbidden", "exceeded quota: gpus")
        return done


def rolled_out(fake: FakeCluster, reconciler: Reconciler) -> set[str]:
    """Bring the endpoint up and Ready, then change its image: the old pods' names."""

    async def scenario() -> set[str]:
        fake.clock = 1000.0
        await reconciler.reconcile("llm", "darwin-398b")
        fake.bind_all(at=1001.0)
        fake.ready_all(at=1002.0)
        fake.clock = 1003.0
        await reconciler.reconcile("llm", "darwin-398b")
        fake.endpoint["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.34.0"
        fake.endpoint["metadata"]["generation"] += 1
        fake.clock = 1004.0
        return set(fake.pods)

    return asyncio.run(scenario())


def test_a_successor_that_fits_is_created_with_its_gates_lifted_and_held_to_its_nodes():
    doc = spec_doc(replicas=1, placement={"podsPerGroup": 3}, rollout={"drainSeconds": 0})
    fake = Recorded(endpoint_object("darwin-398b", "llm", doc))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    old = rolled_out(fake, reconciler)
    fake.written.clear()
    fake.created_beside_live.clear()  # the old group's own pods, created beside each other
    asyncio.run(reconciler.reconcile("llm", "darwin-398b"))

    new = {n: p for n, p in fake.pods.items() if n not in old}
    assert len(new) == 3
    for pod in new.values():
        assert not pod["spec"].get("schedulingGates")
        assert pod["metadata"]["annotations"][ANNOTATION_ADMITTED_AT] == format_time(1004.0)
        node_terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        (held,) = node_terms[0]["matchFields"][0]["values"]
        assert held in {n["metadata"]["name"] for n in fake.nodes}
    # no write lifted a gate: the creation did; and still not beside a live old pod
    assert not [w for w in fake.written if isinstance(w, writes.PatchPod) and w.ungate]
    assert not [e for e in fake.created_beside_live if e.split(" beside ")[1] in old]
    assert "group 0: created 3 of 3 pods (admitted)" in fake.events


def test_a_successor_whose_creation_is_refused_part_way_is_not_left_half_placed():
    doc = spec_doc(replicas=1, placement={"podsPerGroup": 3}, rollout={"drainSeconds": 0})
    fake = Recorded(endpoint_object("darwin-398b", "llm", doc))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    old = rolled_out(fake, reconciler)
    fake.refused = {"darwin-398b-0-2-1"}
    said_before = len(fake.events)
    with pytest.raises(WriteRejected):
        asyncio.run(reconciler.reconcile("llm", "darwin-398b"))

    new = {n: p for n, p in fake.pods.items() if n not in old}
    assert sorted(new) == ["darwin-398b-0-0-1", "darwin-398b-0-1-1"]  # created, released...
    for pod in new.values():  # ...and deleted again, stamped so no fault is read into it
        assert pod["metadata"]["deletionTimestamp"]
        assert pod["metadata"]["annotations"][ANNOTATION_DELETE_REASON] == "Incomplete"
    condition = find_condition(fake.endpoint["status"]["conditions"], "Degraded")
    assert "exceeded quota: gpus" in condition["message"]
    (group,) = fake.endpoint["status"]["groups"]  # not reported as let go
    assert group["phase"] != "Scheduling" and "could not all be created" in group["message"]
    assert not [e for e in fake.events[said_before:] if "gates lifted" in e]

    fake.refused = set()  # the quota raised: the next reconcile creates the group whole
    for name in list(fake.pods):
        if fake.pods[name]["metadata"].get("deletionTimestamp"):
            del fake.pods[name]
    fake.clock = 1010.0
    asyncio.run(reconciler.reconcile("llm", "darwin-398b"))
    live = sorted(n for n, p in fake.pods.items() if not p["metadata"].get("deletionTimestamp"))
    assert len(live) == 3 and all(not fake.pods[n]["spec"].get("schedulingGates") for n in live)


def test_a_successor_cut_short_by_a_kill_is_created_again_not_counted_as_a_recreation():
    """Created released, a successor's pods are placed as soon as they exist: an operator
    killed between its POSTs leaves some, with a rank missing that nobody deleted. The status
    says which incarnation was last seen whole, so the next operator redoes the creation
    instead of reading a member deleted by someone."""
    doc = spec_doc(replicas=1, placement={"podsPerGroup": 3}, rollout={"drainSeconds": 0})
    fake = Recorded(endpoint_object("darwin-398b", "llm", doc))
    old = rolled_out(fake, Reconciler(fake, clock=lambda: fake.clock))  # type: ignore[arg-type]
    (before,) = fake.endpoint["status"]["groups"]
    assert before["wholeIncarnation"] == 0
    fake.refused = {"darwin-398b-0-2-1"}  # the POST the kill came before
    with pytest.raises(WriteRejected):
        asyncio.run(Reconciler(fake, clock=lambda: fake.clock).reconcile("llm", "darwin-398b"))  # type: ignore[arg-type]
    for name in ("darwin-398b-0-0-1", "darwin-398b-0-1-1"):  # as the kill left them
        annotations = fake.pods[name]["metadata"]["annotations"]
        annotations.pop(ANNOTATION_DELETE_REASON)
        fake.pods[name]["metadata"].pop("deletionTimestamp")
    for name in old:
        del fake.pods[name]
    fake.refused = set()
    fake.clock = 1010.0

    restarted = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    asyncio.run(restarted.reconcile("llm", "darwin-398b"))
    for name in ("darwin-398b-0-0-1", "darwin-398b-0-1-1"):
        reason = fake.pods[name]["metadata"]["annotations"][ANNOTATION_DELETE_REASON]
        assert reason == "Incomplete"
    (group,) = fake.endpoint["status"]["groups"]
    assert group["restarts"] == 0 and not group.get("recreations")
    for name in list(fake.pods):
        del fake.pods[name]
    asyncio.run(restarted.reconcile("llm", "darwin-398b"))
    assert len(fake.pods) == 3  # the group anew (a fresh incarnation: nothing left behind)
    (group,) = fake.endpoint["status"]["groups"]
    incarnations = {int(labels(p).get(LABEL_INCARNATION, 0)) for p in fake.pods.values()}
    assert group["restarts"] == 0 and incarnations == {group["wholeIncarnation"]}
