"""The order of one reconcile's writes: a new group's pods, and then its admission, do not wait
for the Services, the budget and the stored revision (each endpoint's first pods and gates would
otherwise queue behind its slowest write); the reconcile does not wait for its Events."""

from __future__ import annotations

import asyncio

from darwin_operator import writes
from darwin_operator.reconciler import Reconciler
from darwin_operator.vocabulary import find_condition
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object


class SlowApplies(FakeCluster):
    """Applies finish only once a pod write `release_when` picks has been sent; every write is
    logged with the number of applies in flight."""

    def __init__(self, release_when, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release_when = release_when
        self.release = asyncio.Event()
        self.applying = 0
        self.log: list[tuple[str, int]] = []

    async def apply(self, obj) -> None:
        self.applying += 1
        await self.release.wait()
        self.applying -= 1
        self.log.append((f"apply {obj['kind']}", 0))

    async def write_pods(self, namespace: str, pod_writes) -> int:
        pod_writes = list(pod_writes)
        for write in pod_writes:
            self.log.append((type(write).__name__, self.applying))
        if any(self.release_when(w) for w in pod_writes):
            self.release.set()
        return await super().write_pods(namespace, pod_writes)


def reconcile_once(release_when) -> SlowApplies:
    """One reconcile of a new endpoint of 2 groups; had its writes waited for the applies,
    nothing would release them: the reconcile would hang (a failure after 10 s)."""
    fake = SlowApplies(release_when, endpoint_object("darwin-398b", "llm", spec_doc(replicas=2)))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    fake.clock = 1000.0
    asyncio.run(asyncio.wait_for(reconciler.reconcile("llm", "darwin-398b"), timeout=10))
    return fake


def test_a_new_groups_pods_are_created_while_its_services_are_still_being_applied():
    fake = reconcile_once(lambda write: isinstance(write, writes.CreatePod))
    creates = [in_flight for kind, in_flight in fake.log if kind == "CreatePod"]
    assert len(creates) == 2  # 2 groups of one 6-GPU pod (spec_doc's default shape)
    assert min(creates) > 0  # each created while applies were in flight
    assert {"apply Service", "apply PodDisruptionBudget"} <= {k for k, _ in fake.log}


def test_new_groups_are_admitted_while_their_services_are_still_being_applied():
    fake = reconcile_once(lambda write: isinstance(write, writes.PatchPod) and write.ungate)
    kinds = [kind for kind, _ in fake.log]
    ungates = [in_flight for kind, in_flight in fake.log if kind == "PatchPod"]
    assert len(ungates) == 2 and min(ungates) > 0  # both groups' gates lifted during the applies
    assert kinds.index("PatchPod") > max(i for i, k in enumerate(kinds) if k == "CreatePod")
    assert all(not pod["spec"].get("schedulingGates") for pod in fake.pods.values())


class HeldEvents(FakeCluster):
    """Events are posted only once `release` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()

    async def post_event(self, endpoint, note, now: float) -> None:
        await self.release.wait()
        await super().post_event(endpoint, note, now)


def test_a_reconcile_does_not_wait_for_its_events():
    # Events go last in the API pool; waiting for them would hold up the endpoint's next
    # reconcile (the next rollout step) behind every other write of the operator.
    fake = HeldEvents(endpoint_object("darwin-398b", "llm", spec_doc(replicas=2)))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    fake.clock = 1000.0

    async def scenario() -> None:
        await asyncio.wait_for(reconciler.reconcile("llm", "darwin-398b"), timeout=10)
        assert fake.endpoint["status"]["groups"] and fake.events == []
        fake.release.set()
        await asyncio.wait_for(reconciler.events_posted(), timeout=10)
        assert any("created" in e for e in fake.events)

    asyncio.run(scenario())


class BrokenEvents(FakeCluster):
    async def post_event(self, endpoint, note, now: float) -> None:
        raise OSError("connection reset")


def reconcile_with_broken_events(spec: dict) -> BrokenEvents:
    """One reconcile of an endpoint whose every Event fails, and its Events' attempts."""
    fake = BrokenEvents(endpoint_object("darwin-398b", "llm", spec))
    reconciler = Reconciler(fake, clock=lambda: fake.clock)  # type: ignore[arg-type]
    fake.clock = 1000.0

    async def scenario() -> None:
        await reconciler.reconcile("llm", "darwin-398b")
        await reconciler.events_posted()

    asyncio.run(scenario())
    return fake


def test_an_event_that_cannot_be_posted_is_logged_and_fails_nothing(caplog):
    fake = reconcile_with_broken_events(spec_doc(replicas=2))
    assert fake.endpoint["status"]["groups"]
    assert "could not post events: connection reset" in caplog.text


def test_an_invalid_spec_is_reported_when_its_event_cannot_be_posted(caplog):
    # The Degraded condition is the report that must land; its Event is best effort.
    fake = reconcile_with_broken_events(spec_doc(engine={"extraArgs": ["--port", "9000"]}))
    degraded = find_condition(fake.endpoint["status"]["conditions"], "Degraded")
    assert degraded["reason"] == "InvalidSpec" and degraded["status"] == "True"
    assert "could not post events: connection reset (InvalidSpec)" in caplog.text
