"""Stopping on SIGTERM/SIGINT: reconciles are abandoned first, kopf is told to stop, and the
process exits when the budget is spent whatever is still running."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

from darwin_operator.shutdown import Shutdown


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


def test_the_first_signal_halts_work_then_asks_kopf_to_stop():
    order: list[str] = []
    exits = Exits()
    stopping = Shutdown(60, on_begin=lambda: order.append("halt"), exit=exits)
    assert not stopping.requested.is_set()
    stopping.begin(signal.SIGTERM)
    order.append("kopf" if stopping.requested.is_set() else "kopf not told")
    assert order == ["halt", "kopf"]
    assert exits.codes == []  # no hard exit before the budget is spent


def test_the_process_exits_when_the_budget_is_spent():
    exits = Exits()
    stopping = Shutdown(0.05, on_begin=lambda: None, exit=exits)
    stopping.begin(signal.SIGTERM)
    assert exits.called.wait(timeout=10)
    assert exits.codes == [0]


def test_a_second_signal_exits_at_once():
    exits = Exits()
    stopping = Shutdown(60, on_begin=lambda: None, exit=exits)
    stopping.begin(signal.SIGINT)
    stopping.begin(signal.SIGINT)
    assert exits.codes == [0]


def test_installed_handlers_take_the_real_signal():
    halted = []
    exits = Exits()

    async def scenario() -> bool:
        stopping = Shutdown(60, on_begin=lambda: halted.append(True), exit=exits)
        loop = asyncio.get_running_loop()
        stopping.install(loop)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopping.requested.wait(), timeout=10)
            return True
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    assert asyncio.run(scenario())
    assert halted == [True]
