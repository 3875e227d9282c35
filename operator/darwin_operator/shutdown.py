"""How `darwin-operator run` stops on SIGTERM or SIGINT: within --shutdown-seconds, always.

The order matters when the work queue is busy. Reconciles are abandoned first: their requests
would otherwise keep the API server busy while kopf withdraws this replica's peering keep-alive,
which is what lets a standby take over at once. Then kopf closes its watches and withdraws the
keep-alive. Requests still in flight in the API client's threads are not waited for: every
reconcile is level-based, so the next replica or start reads the cluster and carries on from
there. Should anything still be running when the budget is spent, the process exits anyway.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Well inside a pod's default terminationGracePeriodSeconds (30), after which the kubelet kills.
DEFAULT_BUDGET = 5.0


def exit_now(code: int) -> NoReturn:
    """Exit without joining the API client's threads (a blocked request could hold the exit for
    its whole timeout). atexit handlers still run: logs are flushed, temp files removed."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken: nothing to do
            stream.flush()
    os._exit(code)


class Shutdown:
    """Turns the first SIGTERM/SIGINT into: `on_begin()`, then `requested` set (kopf's stop
    flag), with a hard exit `budget` seconds later if the process is still there. A second
    signal exits at once, as an impatient Ctrl+C expects."""

    def __init__(
        self,
        budget: float,
        on_begin: Callable[[], None],
        exit: Callable[[int], object] = exit_now,
    ) -> None:
        self.budget = budget
        self.on_begin = on_begin
        self.requested = asyncio.Event()
        self._exit = exit
        self._began = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take SIGTERM and SIGINT over (from kopf, which would not stop our reconciles first
        and has no bound on its exit)."""
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self.begin, signum)

    def begin(self, signum: int = signal.SIGTERM) -> None:
        name = signal.Signals(signum).name
        if self._began:
            log.warning("%s again: exiting now", name)
            self._exit(0)
            return
        self._began = True
        log.info("%s: stopping (at most %gs; work in flight is abandoned)", name, self.budget)
        timer = threading.Timer(self.budget, self._budget_spent)
        timer.daemon = True
        timer.start()
        self.on_begin()
        self.requested.set()

    def _budget_spent(self) -> None:
        log.warning("still stopping after %gs (--shutdown-seconds): exiting now", self.budget)
        self._exit(0)
