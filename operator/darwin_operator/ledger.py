"""Free capacity per node, kept up to date pod by pod and node by node (pure).

The same numbers as capacity.free_gpus and capacity.free_room, which read every node and pod,
but updated from each change as the watches report it: what a pod takes is added when it is
seen and taken back when it changes or goes, so admission never scans the cluster's pods.
"""

from __future__ import annotations

from collections.abc import Hashable

from darwin_operator import capacity
from darwin_operator.observed import NodeInfo, ObservedPod


class Ledger:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._extended: dict[str, dict[str, int]] = {}  # node -> resource -> held by bound pods
        self._room: dict[str, dict[str, int]] = {}  # node -> ROOM_RESOURCES held
        self._room_left: dict[str, dict[str, int]] = {}  # node -> allocatable - held; never
        # changed in place (free_room hands out the inner dicts): replaced on every change
        self._released: dict[Hashable, ObservedPod] = {}  # ungated, not bound yet
        self.version = 0  # counts changes that may change what fits

    def node(self, name: str, info: NodeInfo | None) -> None:
        if info is None:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = info
        self._update_room_left(name)
        self.version += 1

    def pod(self, key: Hashable, before: ObservedPod | None, after: ObservedPod | None) -> None:
        if before is not None:
            self._count(key, before, -1)
        if after is not None:
            self._count(key, after, 1)
        self.version += 1

    def _count(self, key: Hashable, pod: ObservedPod, sign: int) -> None:
        if pod.terminal:
            return
        node = pod.node_name
        if not node and capacity.released(pod):
            if pod.extended:
                if sign > 0:
                    self._released[key] = pod
                else:
                    self._released.pop(key, None)
            node = pod.placement.node_names[0] if len(pod.placement.node_names) == 1 else ""
            _add(self._room, node, pod.room, sign)
            self._update_room_left(node)
            return
        if node:
            _add(self._extended, node, pod.extended, sign)
            _add(self._room, node, pod.room, sign)
            self._update_room_left(node)

    def free_gpus(self, resource: str) -> dict[str, int]:
        free = {
            name: info.allocatable_of(resource) - self._extended.get(name, {}).get(resource, 0)
            for name, info in self.nodes.items()
        }
        waiting = [p for p in self._released.values() if p.requests(resource)]
        capacity.place_released(free, list(self.nodes.values()), waiting, resource)
        return free

    def free_room(self) -> dict[str, dict[str, int]]:
        """Each node's room left; change it by replacing entries (capacity.take_room)."""
        return dict(self._room_left)

    def _update_room_left(self, name: str) -> None:
        info = self.nodes.get(name)
        if info is None:
            self._room_left.pop(name, None)
            return
        held = self._room.get(name, {})
        self._room_left[name] = {r: n - held.get(r, 0) for r, n in info.room.items()}


def _add(totals: dict[str, dict[str, int]], node: str, amounts, sign: int) -> None:
    if not node or not amounts:
        return
    held = totals.setdefault(node, {})
    for resource, amount in amounts:
        held[resource] = held.get(resource, 0) + sign * amount
        if not held[resource]:
            del held[resource]
    if not held:
        del totals[node]
