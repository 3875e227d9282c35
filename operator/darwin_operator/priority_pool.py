"""A fixed pool of threads for blocking API requests that takes the most urgent first.

With hundreds of endpoints starting at once, the requests queued at one moment are mostly
not the ones that get pods running: Events, status patches, Services. The pool sends the
pod writes first (priority 0 before 1 before 2, in arrival order within one), so the API
server's capacity goes to pods while the rest waits its turn.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

URGENT, NORMAL, LATER = 0, 1, 2


class PriorityPool:
    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()
        self._workers = workers

    def submit(self, priority: int, call: Callable[[], Any]) -> Future:
        future: Future = Future()
        if self._closed:
            future.cancel()
        else:
            self._queue.put((priority, next(self._order), call, future))
        return future

    def shutdown(self) -> None:
        """Cancel what has not started; the threads end (requests in flight are left)."""
        self._closed = True
        while True:
            try:
                _, _, _, future = self._queue.get_nowait()
            except queue.Empty:
                break
            if future is not None:
                future.cancel()
        for _ in range(self._workers):
            self._queue.put((LATER + 1, next(self._order), None, None))

    def _work(self) -> None:
        while True:
            _, _, call, future = self._queue.get()
            if call is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as error:  # handed to the awaiting coroutine
                future.set_exception(error)
