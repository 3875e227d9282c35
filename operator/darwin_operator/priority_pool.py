"""A fixed pool of threads for blocking API requests that takes the most urgent first.

With hundreds of endpoints starting at once, the requests queued at one moment are mostly
not the ones that get pods running: Events, status patches, Services. The pool sends the
most urgent first (in arrival order within one priority), so the API server's capacity goes
to pods while the rest waits its turn:

- URGENT: creating, deleting and relabelling pods;
- SOON: lifting gates. A pod let go sets the scheduler, the kubelet (or kwok) and the
  EndpointSlice controller writing about it, so while other groups' pods are still to be
  created, their creation goes first;
- NORMAL: Services, budgets, revisions and the endpoints' status (in arrival order, so an
  endpoint's status follows the Services that were asked for before it);
- LATER: Events.

A request also waits while a more urgent one is in flight, not only while one is queued:
otherwise a worker left idle between two reconciles takes a Service apply (a ClusterIP to
allocate, the slowest write) and the API server spends on it what the next pods need.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

URGENT, SOON, NORMAL, LATER = 0, 1, 2, 3


class PriorityPool:
    def __init__(self, workers: int, name: str) -> None:
        self._queued: list[tuple[int, int, Callable[[], Any], Future]] = []  # a heap
        self._running = [0] * (LATER + 1)  # requests in flight, by priority
        self._changed = threading.Condition()
        self._order = itertools.count()
        self._closed = False
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, priority: int, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        with self._changed:
            if self._closed:
                future.cancel()
            else:
                heapq.heappush(self._queued, (priority, next(self._order), call, future))
                self._changed.notify()
        return future

    def shutdown(self) -> None:
        """Cancel what has not started; the threads end (requests in flight are left)."""
        with self._changed:
            self._closed = True
            for _, _, _, future in self._queued:
                future.cancel()
            self._queued.clear()
            self._changed.notify_all()

    def _next(self) -> tuple[int, Callable[[], Any], Future] | None:
        """The most urgent queued request, once nothing more urgent is in flight; None once
        the pool is shut down."""
        with self._changed:
            while not self._closed:
                if self._queued:
                    priority = self._queued[0][0]
                    if not any(self._running[:priority]):
                        _, _, call, future = heapq.heappop(self._queued)
                        self._running[priority] += 1
                        if self._queued:
                            self._changed.notify()  # another worker may take the next one
                        return priority, call, future
                self._changed.wait()
            return None

    def _work(self) -> None:
        while (taken := self._next()) is not None:
            priority, call, future = taken
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(call())
                    except BaseException as error:  # handed to the awaiting coroutine
                        future.set_exception(error)
            finally:
                with self._changed:
                    self._running[priority] -= 1
                    self._changed.notify_all()
