"""Gang admission across endpoints: decide on one view of free GPUs, then lift gates.

Decisions are serialized in the process, so two endpoints never count the same free GPUs. The
requests that queue up while one batch runs are decided together in the next one, on a single
view of nodes and pods (view.py: kept from watches and from our own writes, so the gates this
process lifted count at once), in the order they arrived; each admitted group's GPUs are taken
off before the next request is looked at, exactly as if each had read the cluster after the
previous one lifted its gates. This keeps admission cheap when many endpoints start at once.

Only the decisions hold the lock, not the writes that lift the gates: a batch's groups are
reserved (their GPUs and room on the nodes chosen) until their writes have landed in the view,
so the next batch decides while they are in flight and still never counts the same GPUs. The
write that lets an admitted group go is the gates' lift, or, for a group admitted before its
pods exist (a rollout's or a recreation's successor, reconciler.py), the pods' creation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from darwin_operator import capacity, render, writes
from darwin_operator.capacity import Fit, GroupDemand
from darwin_operator.cluster import Cluster
from darwin_operator.planner import Admission
from darwin_operator.view import ListedView, WatchedView

# Lets an admitted group go on the nodes admission chose (the fit's), e.g. lifts its gates;
# returns the answer to give instead when the group was not let go after all.
Release = Callable[[Admission, Fit], Awaitable[Fit | None]]


@dataclass
class _Request:
    ref: render.EndpointRef
    resource: str
    admissions: tuple[Admission, ...]
    result: asyncio.Future[list[Fit]]
    release: Release
    decided: bool = False  # by a batch, whose caller lifts the gates (the result comes after)


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
        # admitted groups whose gates are being lifted, by (request, group index): their
        # resource, demand and chosen nodes
        self._in_flight: dict[tuple[int, int], tuple[str, GroupDemand, tuple[str, ...]]] = {}
        self._eligibility = capacity.Eligibility([])  # kept while the nodes stay the same

    async def admit(
        self,
        ref: render.EndpointRef,
        resource: str,
        admissions: tuple[Admission, ...],
        release: Release | None = None,
    ) -> list[Fit]:
        """Whether each group fits (index order; the first that does not stops the rest); the
        groups that fit are let go before this returns: by `release`, else their gates are
        lifted (lift_gates)."""
        future = asyncio.get_running_loop().create_future()
        release = release or (lambda admission, fit: self.lift_gates(ref, admission, fit))
        request = _Request(ref, resource, admissions, future, release)
        self._pending.append(request)
        batch: list[_Request] = []
        releasing: list[_Request] = []
        try:
            async with self._lock:
                if not request.decided:  # no batch has decided it yet: run one now
                    batch, self._pending = self._pending, []
                    if request not in batch:
                        batch.append(request)
                    decided = await self._decide(batch)
            if batch:  # this call ran the batch: let its groups go, the lock free for the next
                releasing = [r for r, _ in decided]
                # Shielded: a release cut short with this caller would leave a group (maybe
                # another endpoint's) half let go. Each release answers its own request.
                await asyncio.shield(asyncio.gather(*(self._release(r, f) for r, f in decided)))
        finally:
            for other in batch:  # cut short (the caller cancelled): the others retry, not hang
                if not other.result.done() and other not in releasing:
                    other.result.set_exception(RuntimeError("admission interrupted; retried"))
        return await request.result

    async def lift_gates(self, ref: render.EndpointRef, admission: Admission, fit: Fit) -> None:
        pods = writes.ungate(admission.pods, self.clock(), fit.nodes)
        await self.cluster.write_pods(ref.namespace, pods)

    async def _decide(self, batch: list[_Request]) -> list[tuple[_Request, list[Fit]]]:
        for request in batch:
            request.decided = True
        try:
            seen = await self.view.capacity()
        except Exception as error:
            for request in batch:
                request.result.set_exception(error)
            return []
        if self._eligibility.given != seen.nodes:  # a node changed, came or went
            self._eligibility = capacity.Eligibility(seen.nodes)
        nodes = self._eligibility
        free: dict[str, dict[str, int]] = {}  # per GPU resource, shrinking as groups are placed
        room = seen.free_room()  # CPU, memory, ...: shrinks inside admit_in_order

        def free_of(resource: str) -> dict[str, int]:  # computed once per resource and batch
            if resource not in free:
                free[resource] = seen.free_gpus(resource)
            return free[resource]

        for resource, demand, chosen in self._in_flight.values():
            left = free_of(resource)
            for node in chosen:
                left[node] = left.get(node, 0) - demand.gpus_per_pod
                capacity.take_room(room, node, demand.room)
        decided: list[tuple[_Request, list[Fit]]] = []
        for request in batch:
            left = free_of(request.resource)
            demands = [a.demand for a in request.admissions]
            fits = capacity.admit_in_order(demands, nodes, left, room)
            for admission, fit in zip(request.admissions, fits, strict=True):
                for node in fit.nodes:
                    left[node] -= admission.demand.gpus_per_pod
            decided.append((request, fits))
            for admission, fit in zip(request.admissions, fits, strict=True):
                if fit.fits:  # held from the decision, under the lock, until its write lands
                    key = (id(request), admission.index)
                    self._in_flight[key] = (request.resource, admission.demand, fit.nodes)
        return decided

    async def _release(self, request: _Request, fits: list[Fit]) -> None:
        """Let the request's groups that fit go, holding their place until the writes are in
        the view (write_pods hands it what they return before it returns)."""
        admitted = [
            (admission, fit)
            for admission, fit in zip(request.admissions, fits, strict=True)
            if fit.fits
        ]
        try:  # every release ends before any place is given up, even if one failed
            outcomes = await asyncio.gather(
                *(request.release(admission, fit) for admission, fit in admitted),
                return_exceptions=True,
            )
        finally:
            for admission, _ in admitted:
                self._in_flight.pop((id(request), admission.index), None)
        if request.result.done():  # its caller is gone (cancelled): nobody to answer
            return
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            request.result.set_exception(failure)
            return
        instead = {a.index: o for (a, _), o in zip(admitted, outcomes, strict=True) if o}
        request.result.set_result(
            [instead.get(a.index, f) for a, f in zip(request.admissions, fits, strict=True)]
        )
