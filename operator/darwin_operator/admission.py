"""Gang admission across endpoints: decide on one view of free GPUs, then lift gates.

Decisions are serialized in the process, so two endpoints never count the same free GPUs. The
requests that queue up while one batch runs are decided together in the next one, on a single
view of nodes and pods (view.py: kept from watches and from our own writes, so the gates this
process lifted count at once), in the order they arrived; each admitted group's GPUs are taken
off before the next request is looked at, exactly as if each had read the cluster after the
previous one lifted its gates. This keeps admission cheap when many endpoints start at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from darwin_operator import capacity, render, writes
from darwin_operator.capacity import Fit
from darwin_operator.cluster import Cluster
from darwin_operator.planner import Admission
from darwin_operator.view import ListedView, WatchedView


@dataclass
class _Request:
    ref: render.EndpointRef
    resource: str
    admissions: tuple[Admission, ...]
    result: asyncio.Future[list[Fit]]


class Admitter:
    def __init__(
        self,
        cluster: Cluster,
        clock: Callable[[], float],
        view: ListedView | WatchedView | None = None,
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self.view = view or ListedView(cluster)
        self._lock = asyncio.Lock()
        self._pending: list[_Request] = []

    async def admit(
        self, ref: render.EndpointRef, resource: str, admissions: tuple[Admission, ...]
    ) -> list[Fit]:
        """Whether each group fits (index order; the first that does not stops the rest); the
        gates of the groups that fit are lifted before this returns."""
        request = _Request(ref, resource, admissions, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        async with self._lock:
            if not request.result.done():  # no batch has decided it yet: run one now
                batch, self._pending = self._pending, []
                if request not in batch:  # its batch was cancelled part way
                    batch.append(request)
                await self._decide(batch)
        return request.result.result()

    async def _decide(self, batch: list[_Request]) -> None:
        try:
            seen = await self.view.capacity()
        except Exception as error:
            for request in batch:
                request.result.set_exception(error)
            return
        nodes = seen.nodes
        free: dict[str, dict[str, int]] = {}  # per GPU resource, shrinking as groups are placed
        room = seen.free_room()  # CPU, memory, ...: shrinks inside admit_in_order
        decided: list[tuple[_Request, list[Fit]]] = []
        for request in batch:
            left = free.setdefault(request.resource, seen.free_gpus(request.resource))
            demands = [a.demand for a in request.admissions]
            fits = capacity.admit_in_order(demands, nodes, left, room)
            for admission, fit in zip(request.admissions, fits, strict=True):
                for node in fit.nodes:
                    left[node] -= admission.demand.gpus_per_pod
            decided.append((request, fits))
        now = self.clock()

        async def release(request: _Request, fits: list[Fit]) -> None:
            try:
                await asyncio.gather(
                    *(
                        self.cluster.write_pods(
                            request.ref.namespace, writes.ungate(admission.pods, now, fit.nodes)
                        )
                        for admission, fit in zip(request.admissions, fits, strict=True)
                        if fit.fits
                    )
                )
            except Exception as error:
                request.result.set_exception(error)
            else:
                request.result.set_result(fits)

        await asyncio.gather(*(release(request, fits) for request, fits in decided))
