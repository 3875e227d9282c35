"""Each endpoint's status written behind its reconciles: the newest only, one write at a time.

A status patch takes 30-100 ms on a busy API server. Awaited, it held the endpoint's next
reconcile back: a rollout step waited for the status of the pod events before it. So a
reconcile hands its status over and goes on, and:

- the next reconcile starts from the status last handed over (`latest`), not from the one the
  API server holds yet, so nothing the status remembers (recreations, a rollout's start, the
  conditions whose changes become Events) is lost or counted twice;
- one endpoint's writes go out in order, and a status still waiting for its turn is replaced
  by a newer one;
- a write that fails keeps its status as `latest` and is `failed`: when nobody waited for it,
  the endpoint is triggered, and its next reconcile writes in the foreground, where a failure
  is the reconcile's (the worker's error backoff).

A status that changes what later reconciles decide from is written in the foreground
(status.remembered), so only reports trail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from darwin_operator.cluster import ApiError
from darwin_operator.logs import endpoint_log

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
Patch = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]


@dataclass
class _Slot:
    uid: str  # of the endpoint the status is for: a namesake created later starts afresh
    latest: dict[str, Any] = field(default_factory=dict)
    queued: dict[str, Any] | None = None  # handed over, not sent yet
    writing: asyncio.Task[None] | None = None
    landed: asyncio.Future[None] | None = None  # done once nothing handed over is unwritten
    awaited: bool = False  # a reconcile waits for `landed`: a failure is reported to it
    failed: bool = False


class StatusWriter:
    def __init__(self, patch: Patch) -> None:
        self._patch = patch
        self._slots: dict[Key, _Slot] = {}
        # set by the controller: the endpoint to reconcile again after a failed write
        self.on_failure: Callable[[str, str], None] = lambda namespace, name: None

    def latest(self, key: Key, uid: str) -> dict[str, Any] | None:
        """The newest status handed over for this endpoint that may not have landed yet."""
        slot = self._slots.get(key)
        return slot.latest if slot is not None and slot.uid == uid else None

    def failed(self, key: Key) -> bool:
        slot = self._slots.get(key)
        return slot is not None and slot.failed

    def pending(self, key: Key) -> bool:
        """A status of the endpoint's is still to land (being written, or failed)."""
        return key in self._slots

    def forget(self, key: Key) -> None:
        """The endpoint is gone: what is kept of its status goes (a write in flight still
        runs, and finds the endpoint gone)."""
        self._slots.pop(key, None)

    async def settled(self, key: Key) -> None:
        """Once what was handed over for the endpoint has landed or failed."""
        slot = self._slots.get(key)
        if slot is not None and slot.landed is not None:
            await asyncio.wait([slot.landed])

    def hand_over(
        self, key: Key, uid: str, status: dict[str, Any], awaited: bool = False
    ) -> asyncio.Future[None]:
        """Write `status` after what is being written; done once it (or a newer one) landed.
        `awaited`: the caller waits for that, and a failure is its to report."""
        slot = self._slots.get(key)
        if slot is None or slot.uid != uid:
            slot = self._slots[key] = _Slot(uid)
        slot.latest = slot.queued = status
        slot.failed = False
        if slot.landed is None or slot.landed.done():
            slot.landed = asyncio.get_running_loop().create_future()
            # a trailing write's failure is reported here, not by an unawaited future
            slot.landed.add_done_callback(lambda f: f.cancelled() or f.exception())
            slot.awaited = False
        slot.awaited = slot.awaited or awaited
        if slot.writing is None:
            slot.writing = asyncio.ensure_future(self._drain(key, slot))
        return slot.landed

    async def _drain(self, key: Key, slot: _Slot) -> None:
        assert slot.landed is not None
        landed = slot.landed
        try:
            while slot.queued is not None:
                status, slot.queued = slot.queued, None
                await self._patch(*key, status)
        except ApiError as e:
            if e.status == 404:  # the endpoint is gone, and its status with it
                self._drop(key, slot)
                _settle(landed)
                return
            self._fail(key, slot, e)
        except Exception as e:
            self._fail(key, slot, e)
        else:
            self._drop(key, slot)  # the view holds what the last write returned
            _settle(landed)
        finally:
            slot.writing = None

    def _fail(self, key: Key, slot: _Slot, error: Exception) -> None:
        endpoint_log(log, *key).warning("could not write the status: %s", error)
        slot.failed, slot.queued = True, None
        assert slot.landed is not None
        _settle(slot.landed, error)
        if not slot.awaited:  # else the reconcile waiting for it fails, with its backoff
            self.on_failure(*key)

    def _drop(self, key: Key, slot: _Slot) -> None:
        if self._slots.get(key) is slot:
            del self._slots[key]


def _settle(landed: asyncio.Future[None], error: Exception | None = None) -> None:
    if landed.done():  # cancelled: nobody waits for it any more
        return
    if error is None:
        landed.set_result(None)
    else:
        landed.set_exception(error)
