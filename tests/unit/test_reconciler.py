"""The per-endpoint work queue: coalesced, never concurrent for one endpoint, requeued on time."""

from __future__ import annotations

import asyncio

from darwin_operator.reconciler import Controller, EndpointGone, Result


class Recorder:
    def __init__(self, results=None, delay=0.02):
        self.calls: list[tuple[str, str]] = []
        self.running = 0
        self.max_running = 0
        self.results = list(results or [])
        self.delay = delay

    async def __call__(self, namespace, name):
        self.calls.append((namespace, name))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            outcome = self.results.pop(0) if self.results else Result()
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.running -= 1


def run(coro):
    return asyncio.run(coro)


def test_a_storm_of_triggers_is_coalesced_and_never_runs_concurrently():
    debounce = 0.01

    async def scenario():
        recorder = Recorder()
        controller = Controller(recorder, resync_seconds=60, debounce_seconds=debounce)
        loop = asyncio.get_running_loop()
        began = loop.time()
        for _ in range(200):
            controller.trigger("ns", "a")
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)
        await controller.stop()
        return recorder, loop.time() - began

    recorder, elapsed = run(scenario())
    assert recorder.max_running == 1
    # Each reconcile takes its debounce and its own run: however slow the machine, no more can
    # have started in the time the storm took (about 0.4s: a dozen), far fewer than events.
    most = elapsed / (debounce + recorder.delay) + 1
    assert 1 <= len(recorder.calls) <= most
    assert len(recorder.calls) < 200


def test_endpoints_are_reconciled_in_parallel():
    async def scenario():
        recorder = Recorder(delay=0.2)
        controller = Controller(recorder, resync_seconds=60, debounce_seconds=0)
        for name in ("a", "b", "c"):
            controller.trigger("ns", name)
        await asyncio.sleep(0.1)
        running = recorder.running
        await controller.stop()
        return running

    assert run(scenario()) == 3


def test_requeue_after_and_resync_run_the_reconcile_again_without_events():
    async def scenario():
        recorder = Recorder(results=[Result(requeue_after=0.1)])
        controller = Controller(recorder, resync_seconds=0.3, debounce_seconds=0)
        controller.trigger("ns", "a")
        await asyncio.sleep(0.05)
        first = len(recorder.calls)
        await asyncio.sleep(0.15)
        requeued = len(recorder.calls)
        await asyncio.sleep(0.4)
        resynced = len(recorder.calls)
        await controller.stop()
        return first, requeued, resynced

    first, requeued, resynced = run(scenario())
    assert (first, requeued) == (1, 2)
    assert resynced >= 3


def test_a_failing_reconcile_is_retried_with_backoff_and_a_gone_endpoint_stops_its_worker():
    async def scenario():
        recorder = Recorder(results=[RuntimeError("api down"), EndpointGone("ns/a")])
        controller = Controller(
            recorder, resync_seconds=60, debounce_seconds=0, error_backoff=(0.05,)
        )
        controller.trigger("ns", "a")
        await asyncio.sleep(0.3)
        left = controller.endpoints
        await controller.stop()
        return left

    assert run(scenario()) == []


def test_waiting_endpoints_are_woken_when_gpus_are_freed():
    async def scenario():
        recorder = Recorder(results=[Result(waiting_for_capacity=True), Result()])
        controller = Controller(recorder, resync_seconds=60, debounce_seconds=0)
        controller.trigger("ns", "waiting")
        await asyncio.sleep(0.1)
        controller.trigger_waiting()
        await asyncio.sleep(0.1)
        controller.trigger_waiting()  # no longer waiting: not woken again
        await asyncio.sleep(0.1)
        await controller.stop()
        return len(recorder.calls)

    assert run(scenario()) == 2


def test_halt_abandons_reconciles_in_flight_and_ignores_later_triggers():
    async def scenario():
        recorder = Recorder(delay=60)  # a reconcile stuck on a slow API server
        controller = Controller(recorder, resync_seconds=60, debounce_seconds=0)
        for name in ("a", "b"):
            controller.trigger("ns", name)
        while recorder.running < 2:
            await asyncio.sleep(0.01)
        controller.halt()
        controller.trigger("ns", "c")  # an event kopf delivers while its watches close
        await asyncio.wait_for(controller.stop(), timeout=5)
        return recorder

    recorder = run(scenario())
    assert recorder.running == 0
    assert sorted(recorder.calls) == [("ns", "a"), ("ns", "b")]
