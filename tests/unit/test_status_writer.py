"""An endpoint's status written behind its reconciles: newest only, in order, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from darwin_operator.cluster import ApiError
from darwin_operator.reconciler import Reconciler
from darwin_operator.status_writer import StatusWriter
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object

KEY = ("llm", "darwin-398b")


class HeldPatches:
    """Patches that land only when let through, recorded in the order they were sent."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self, namespace: str, name: str, status: dict) -> None:
        self.sent.append(status)
        await self.gate.wait()
        if self.error is not None:
            raise self.error


def test_statuses_handed_over_during_a_write_go_out_after_it_and_only_the_newest():
    async def scenario() -> None:
        patches = HeldPatches()
        writer = StatusWriter(patches)
        first = writer.hand_over(KEY, "uid-1", {"n": 1})
        await asyncio.sleep(0)
        writer.hand_over(KEY, "uid-1", {"n": 2})
        last = writer.hand_over(KEY, "uid-1", {"n": 3})
        assert writer.latest(KEY, "uid-1") == {"n": 3}
        assert writer.latest(KEY, "uid-2") is None  # a namesake created later starts afresh
        assert patches.sent == [{"n": 1}]  # one write at a time
        patches.gate.set()
        await asyncio.wait_for(last, 1)
        assert first.done()
        assert patches.sent == [{"n": 1}, {"n": 3}]  # {"n": 2} was replaced before its turn
        assert writer.latest(KEY, "uid-1") is None  # landed: the view holds it now
        assert not writer.failed(KEY)

    asyncio.run(scenario())


def test_a_failed_write_keeps_its_status_and_asks_for_another_reconcile():
    async def scenario() -> None:
        patches = HeldPatches()
        patches.error = ApiError(500, "InternalError", "etcd timeout")
        patches.gate.set()
        writer = StatusWriter(patches)
        triggered: list[tuple[str, str]] = []
        writer.on_failure = lambda namespace, name: triggered.append((namespace, name))
        landed = writer.hand_over(KEY, "uid-1", {"n": 1})
        with pytest.raises(ApiError):
            await asyncio.wait_for(landed, 1)
        assert writer.failed(KEY) and writer.latest(KEY, "uid-1") == {"n": 1}
        assert triggered == [KEY]

        patches.error = None  # the next hand-over writes again, and clears the failure
        await asyncio.wait_for(writer.hand_over(KEY, "uid-1", {"n": 1}), 1)
        assert not writer.failed(KEY) and writer.latest(KEY, "uid-1") is None

        patches.error = ApiError(404, "NotFound", "gone")  # the endpoint went: nothing to redo
        await asyncio.wait_for(writer.hand_over(KEY, "uid-1", {"n": 2}), 1)
        assert not writer.failed(KEY) and triggered == [KEY]

        patches.error = ApiError(500, "InternalError", "etcd timeout")
        with pytest.raises(ApiError):
            await asyncio.wait_for(writer.hand_over(KEY, "uid-1", {"n": 3}), 1)
        writer.forget(KEY)  # the reconcile found the endpoint gone
        assert not writer.failed(KEY) and writer.latest(KEY, "uid-1") is None

    asyncio.run(scenario())


class HeldStatus(FakeCluster):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.patches = HeldPatches()
        self.patches.gate.set()

    async def patch_status(self, namespace: str, name: str, status: dict) -> None:
        await self.patches(namespace, name, status)
        await super().patch_status(namespace, name, status)


def ready_endpoint(fake: HeldStatus) -> Reconciler:
    reconciler = Reconciler(fake, clock=lambda: fake.clock, trail_status=True)  # type: ignore[arg-type]
    reconciler.status_writer.on_failure = lambda namespace, name: fake.events.append("triggered")

    async def scenario() -> None:
        fake.clock = 1000.0
        await reconciler.reconcile(*KEY)  # created and admitted: a new status, written at once
        assert fake.endpoint["status"]["groups"][0]["phase"] == "Scheduling"
        fake.bind_all(at=1001.0)
        fake.ready_all(at=1002.0)
        fake.clock = 1003.0

    asyncio.run(scenario())
    return reconciler


def test_a_reconcile_goes_on_while_the_status_it_reports_is_written():
    fake = HeldStatus(endpoint_object("darwin-398b", "llm", spec_doc(replicas=1)))
    reconciler = ready_endpoint(fake)
    fake.patches.gate.clear()

    async def scenario() -> None:
        await asyncio.wait_for(reconciler.reconcile(*KEY), 1)  # Ready: reported, held
        await asyncio.wait_for(reconciler.reconcile(*KEY), 1)  # and again, nothing new
        await reconciler.events_posted()
        # planned from the status handed over, not the one stored: each change reported once
        assert fake.events.count("group 0 is Ready") == 1
        assert len(fake.patches.sent) == 2 and fake.endpoint["status"]["readyReplicas"] == 0
        fake.patches.gate.set()
        await asyncio.wait_for(reconciler.status_writer.settled(KEY), 1)
        assert len(fake.patches.sent) == 2
        assert fake.endpoint["status"]["readyReplicas"] == 1
        assert fake.endpoint["status"]["groups"][0]["phase"] == "Ready"

        await reconciler.reconcile(*KEY)  # landed: the same status, nothing written or said
        await reconciler.events_posted()
        assert len(fake.patches.sent) == 2
        assert fake.events.count("group 0 is Ready") == 1

    asyncio.run(scenario())


def test_a_status_that_changes_what_is_remembered_is_written_before_the_reconcile_ends():
    fake = HeldStatus(endpoint_object("darwin-398b", "llm", spec_doc(replicas=1)))
    reconciler = ready_endpoint(fake)

    async def scenario() -> None:
        await reconciler.reconcile(*KEY)
        fake.patches.gate.clear()
        fake.endpoint["spec"]["engine"]["image"] = "vllm/vllm-openai:v0.34.0"
        fake.endpoint["metadata"]["generation"] += 1
        rollout = asyncio.ensure_future(reconciler.reconcile(*KEY))  # starts a rollout
        await asyncio.sleep(0.2)
        assert not rollout.done()  # the rollout's start and revision are waited for
        fake.patches.gate.set()
        await asyncio.wait_for(rollout, 1)
        assert fake.endpoint["status"]["rolloutStartedAt"]

    asyncio.run(scenario())


def test_after_a_failed_status_write_the_next_reconcile_writes_it_and_fails_with_it():
    fake = HeldStatus(endpoint_object("darwin-398b", "llm", spec_doc(replicas=1)))
    reconciler = ready_endpoint(fake)
    fake.patches.error = ApiError(500, "InternalError", "etcd timeout")

    async def scenario() -> None:
        await reconciler.reconcile(*KEY)  # Ready: its status write fails behind it
        await asyncio.wait_for(reconciler.status_writer.settled(KEY), 1)
        assert reconciler.status_writer.failed(KEY)
        assert fake.events.count("triggered") == 1  # so that a reconcile writes it again
        with pytest.raises(ApiError):  # in the foreground: the worker backs off
            await reconciler.reconcile(*KEY)
        assert fake.events.count("triggered") == 1  # not again: the backoff decides when
        fake.patches.error = None
        await reconciler.reconcile(*KEY)
        assert fake.endpoint["status"]["readyReplicas"] == 1
        assert not reconciler.status_writer.failed(KEY)

    asyncio.run(scenario())
