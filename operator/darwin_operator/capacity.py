"""Does a whole group fit on the free GPUs of eligible nodes? (pure)

Free GPUs per node are the node's allocatable minus what bound, non-terminal pods of any workload
request, minus what pods already released to the scheduler (ungated) but not yet bound will take
(placed here by simulation). A group fits when every one of its pods finds a node; the pods of a
group all ask for the same number of GPUs, so a best-fit placement is exact: it fits if and only
if the sum over eligible nodes of free // gpus_per_pod reaches the pod count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from darwin_operator.observed import NodeInfo, ObservedPod, Placement

Room = Mapping[str, Mapping[str, int]]  # per node: what is left of each ROOM_RESOURCES


@dataclass(frozen=True)
class GroupDemand:
    pods: int
    gpus_per_pod: int
    resource: str = "nvidia.com/gpu"
    placement: Placement = Placement()
    topology_key: str = ""  # if set, all pods in one domain of this node label
    product: str = ""  # GPU product label value, for messages only
    room: tuple[tuple[str, int], ...] = ()  # each pod's CPU (millicores), memory, ..., pods: 1
    # staged weights (weights.py): only these nodes hold the group's weights (None: any node),
    # and these (the group's last nodes) are taken first when they have room
    only_nodes: frozenset[str] | None = None
    prefer: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fit:
    fits: bool
    nodes: tuple[str, ...]  # the node chosen for each pod when it fits
    message: str
    reason: str = ""  # when it does not fit: NO_ELIGIBLE_NODES or INSUFFICIENT_CAPACITY


NO_ELIGIBLE_NODES = "NoEligibleNodes"
INSUFFICIENT_CAPACITY = "InsufficientCapacity"


def _exclusion(node: NodeInfo, placement: Placement, resource: str) -> str | None:
    """Why the node cannot take such a pod at all, or None if it can (free GPUs aside)."""
    if not node.ready:
        return "not ready"
    if node.unschedulable:
        return "cordoned"
    if not placement.allows(node.label_map):
        return "labels do not match"
    if placement.node_names and node.name not in placement.node_names:
        return "held to another node"
    if not placement.tolerates(node.taints):
        return "taint not tolerated"
    if node.allocatable_of(resource) <= 0:
        return f"no {resource}"
    return None


def free_gpus(
    nodes: Iterable[NodeInfo], pods: Iterable[ObservedPod], resource: str
) -> dict[str, int]:
    """Free GPUs per node, counting GPUs the scheduler is about to hand out as taken."""
    nodes = list(nodes)
    free = {n.name: n.allocatable_of(resource) for n in nodes}
    waiting: list[ObservedPod] = []
    for pod in pods:
        amount = pod.requests(resource)
        if not amount or pod.terminal:
            continue
        if pod.bound:
            if pod.node_name in free:
                free[pod.node_name] -= amount
        elif released(pod):
            waiting.append(pod)
    place_released(free, nodes, waiting, resource)
    return free


def released(pod: ObservedPod) -> bool:
    """Unbound and free of gates: the scheduler is about to place it."""
    return not pod.bound and not pod.deleting and not pod.gated and not pod.foreign_gates


def place_released(
    free: dict[str, int], nodes: Sequence[NodeInfo], waiting: Iterable[ObservedPod], resource: str
) -> None:
    """Take off `free` what released pods the scheduler has not placed yet will take: each
    where it would fit, oldest first."""
    by_name = {n.name: n for n in nodes}
    for pod in sorted(waiting, key=lambda p: (p.created_at or 0.0, p.name)):
        amount = pod.requests(resource)
        held = pod.placement.node_names  # held to its nodes by admission: only those count
        eligible = [by_name[n] for n in held if n in by_name] if held else nodes
        candidates = [
            n.name
            for n in eligible
            if _exclusion(n, pod.placement, resource) is None and free[n.name] >= amount
        ]
        if candidates:
            best = min(candidates, key=lambda name: (free[name], name))
            free[best] -= amount


def free_room(nodes: Iterable[NodeInfo], pods: Iterable[ObservedPod]) -> dict[str, dict[str, int]]:
    """What is left of each node's CPU, memory, ephemeral storage and pod count: allocatable
    minus what bound pods request and what released pods held to the node will. A resource a
    node does not report is not counted (the scheduler has the last word on it)."""
    room = {n.name: dict(n.room) for n in nodes}
    for pod in pods:
        if pod.terminal:
            continue
        node = pod.node_name
        if not node and not (pod.deleting or pod.gated or pod.foreign_gates):
            node = pod.placement.node_names[0] if len(pod.placement.node_names) == 1 else ""
        for resource, amount in pod.room if node in room else ():
            if resource in room[node]:
                room[node][resource] -= amount
    return room


def _has_room(left: Mapping[str, int] | None, need: Iterable[tuple[str, int]]) -> bool:
    return left is None or all(left[r] >= n for r, n in need if r in left)


def _place(
    count: int,
    size: int,
    names: Sequence[str],
    free: Mapping[str, int],
    room: Room | None = None,
    need=(),
    prefer: Sequence[str] = (),
) -> tuple[str, ...] | None:
    """Best-fit placement on the nodes `names` of `count` pods of `size` GPUs (and `need` of
    room each), or None if they do not all fit. Best fit: the fullest node that takes the pod,
    so whole nodes stay free; nodes in `prefer` (where the group ran before: warm caches) before
    any other. A pod takes at least one GPU, so a node counted below zero (overbooked) takes
    none, as at zero."""
    preferred = frozenset(prefer)
    left: dict[str, int] = {}  # free GPUs of the nodes given pods so far
    room_left: dict[str, Mapping[str, int]] = {}  # the same for room
    chosen: list[str] = []
    best: str | None = None
    for _ in range(count):
        # The node just chosen only got fuller, so it stays the best fit while it takes a pod:
        # the pool is searched again only when it is full.
        if best is None or left[best] < size or not _has_room(room_left[best], need):
            best = _best_fit(size, names, free, left, room, room_left, need, preferred)
            if best is None:
                return None
        if best not in left:
            left[best] = free.get(best, 0)
            room_left[best] = room.get(best) if room else None
        left[best] -= size
        if room_left[best] is not None:
            room_left[best] = _without(room_left[best], need)
        chosen.append(best)
    return tuple(chosen)


def _best_fit(
    size: int,
    names: Sequence[str],
    free: Mapping[str, int],
    left: Mapping[str, int],
    room: Room | None,
    room_left: Mapping[str, Mapping[str, int] | None],
    need,
    preferred: frozenset[str],
) -> str | None:
    """The node that takes a pod with the least to spare: (not preferred, free, name) lowest."""
    best: str | None = None
    best_key: tuple[bool, int, str] | None = None
    for name in names:
        gpus = left[name] if name in left else free.get(name, 0)
        if gpus < size:
            continue
        key = (name not in preferred, gpus, name)
        if best_key is not None and key >= best_key:
            continue
        node_room = room_left[name] if name in room_left else (room.get(name) if room else None)
        if _has_room(node_room, need):
            best, best_key = name, key
    return best


def _without(room: Mapping[str, int], need: Iterable[tuple[str, int]]) -> dict[str, int]:
    left = dict(room)
    for resource, amount in need:
        if resource in left:
            left[resource] -= amount
    return left


def _amount(resource: str, amount: int) -> str:
    if resource == "cpu":
        return f"{amount // 1000}" if amount % 1000 == 0 else f"{amount}m"
    if resource in ("memory", "ephemeral-storage"):
        return f"{amount / 2**30:.1f}Gi".replace(".0Gi", "Gi")
    return str(amount)


def _short_of(demand: GroupDemand, eligible: Mapping[str, int], room: Room) -> str:
    """Why pods that find free GPUs find no node: the resources even the roomiest such node
    lacks, with what each pod asks and the most that is free."""
    with_gpus = [
        room[n] for n, free in eligible.items() if free >= demand.gpus_per_pod and n in room
    ]
    parts = []
    for resource, amount in demand.room:
        most = max((r[resource] for r in with_gpus if resource in r), default=None)
        if most is not None and most < amount:
            parts.append(
                f"{resource} (each pod requests {_amount(resource, amount)}, "
                f"at most {_amount(resource, max(0, most))} free)"
            )
    if not parts:
        return "no node with free GPUs has room for the rest of a pod's requests"
    return "the nodes with free GPUs are short of " + ", ".join(parts)


def _target(demand: GroupDemand) -> str:
    where = f"{demand.product} nodes" if demand.product else "nodes"
    extra = [f"{k}={v}" for k, v in demand.placement.node_selector if v != demand.product]
    if extra:
        where += " matching " + ",".join(extra)
    if demand.topology_key:
        where += f" in one {demand.topology_key} domain"
    pods = "pod" if demand.pods == 1 else "pods"
    return f"needs {demand.pods} {pods} x {demand.gpus_per_pod} {demand.resource} on {where}"


@dataclass(frozen=True)
class _Eligible:
    domains: dict[str, tuple[str, ...]]  # topology domain ("" without a key) -> node names
    excluded: dict[str, int]  # why the other nodes cannot take such a pod -> how many


class Eligibility:
    """Which nodes a kind of group may use at all, GPUs aside. Admission asks this for group
    after group of the same placement: it is worked out once per kind, for as long as the
    nodes stay the same."""

    def __init__(self, nodes: Sequence[NodeInfo]) -> None:
        self.given = list(nodes)
        self.nodes = sorted(nodes, key=lambda n: n.name)
        self._known: dict[tuple, _Eligible] = {}

    def of(self, demand: GroupDemand) -> _Eligible:
        kind = (demand.placement, demand.resource, demand.topology_key, demand.only_nodes)
        if kind not in self._known:
            self._known[kind] = self._work_out(demand)
        return self._known[kind]

    def _work_out(self, demand: GroupDemand) -> _Eligible:
        domains: dict[str, list[str]] = {}
        excluded: dict[str, int] = {}
        for node in self.nodes:
            reason = _exclusion(node, demand.placement, demand.resource)
            if reason is None and demand.topology_key and demand.topology_key not in node.label_map:
                reason = f"no {demand.topology_key} label"
            if (
                reason is None
                and demand.only_nodes is not None
                and node.name not in demand.only_nodes
            ):
                reason = "without the weights staged"
            if reason is not None:
                excluded[reason] = excluded.get(reason, 0) + 1
                continue
            domains.setdefault(node.label_map.get(demand.topology_key, ""), []).append(node.name)
        return _Eligible({d: tuple(names) for d, names in domains.items()}, excluded)


def fit(
    demand: GroupDemand,
    nodes: Sequence[NodeInfo] | Eligibility,
    free: Mapping[str, int],
    room: Room | None = None,
) -> Fit:
    need = _target(demand)
    nodes = nodes if isinstance(nodes, Eligibility) else Eligibility(nodes)
    eligible_in = nodes.of(demand)
    if not eligible_in.domains:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(eligible_in.excluded.items()))
        message = f"{need}; no eligible nodes ({len(nodes.nodes)} nodes: {why or 'none'})"
        return Fit(False, (), message, NO_ELIGIBLE_NODES)

    domains = [names for _, names in sorted(eligible_in.domains.items())]
    for names in domains:
        placed = _place(
            demand.pods, demand.gpus_per_pod, names, free, room, demand.room, demand.prefer
        )
        if placed is not None:
            return Fit(True, placed, f"{need}; fits on {', '.join(sorted(set(placed)))}")
    eligible = {name: max(0, free.get(name, 0)) for names in domains for name in names}
    gpus_alone = any(_place(demand.pods, demand.gpus_per_pod, names, free) for names in domains)
    if room is not None and gpus_alone:
        message = f"{need}; {_short_of(demand, eligible, room)}"
        return Fit(False, (), message, INSUFFICIENT_CAPACITY)

    total = sum(eligible.values())
    nodes_word = "node" if len(eligible) == 1 else "nodes"
    largest = max(eligible.values())
    return Fit(
        False,
        (),
        f"{need}; free: {total} GPUs on {len(eligible)} eligible {nodes_word} (largest {largest})",
        INSUFFICIENT_CAPACITY,
    )


def admit_in_order(
    demands: Sequence[GroupDemand],
    nodes: Sequence[NodeInfo] | Eligibility,
    free: Mapping[str, int],
    room: dict[str, dict[str, int]] | None = None,
) -> list[Fit]:
    """Place groups one after another; the first that does not fit stops the rest (index order).
    With `room`, CPU, memory, ephemeral storage and the pod count must fit too; what the
    admitted groups take is taken off it."""
    left = dict(free)
    nodes = nodes if isinstance(nodes, Eligibility) else Eligibility(nodes)
    results: list[Fit] = []
    blocked: Fit | None = None
    for demand in demands:
        if blocked is not None:
            results.append(Fit(False, (), blocked.message, blocked.reason))
            continue
        result = fit(demand, nodes, left, room)
        if result.fits:
            for name in result.nodes:
                left[name] -= demand.gpus_per_pod
                take_room(room, name, demand.room)
        else:
            blocked = result
        results.append(result)
    return results


def take_room(room: dict[str, dict[str, int]] | None, node: str, need) -> None:
    """Take one pod's requests off a node's room (admission places groups one after another).
    The node's entry is replaced, not changed: the inner dicts may be shared (ledger.py)."""
    if room is not None and node in room:
        room[node] = _without(room[node], need)
