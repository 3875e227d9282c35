"""What a controller did to its replica groups, from the pod states a watch observed (pure).

The pods of one workload are fed in as the watch delivers them (the API server's order); after
each event the record asks: which groups are available (a full set of Ready, not terminating
pods of one revision), how many are down, how many GPUs each node holds. From that it keeps
the moments a benchmark measures (all groups available; each group available on the new
revision) and the limits a rolling update must not break:
- more than maxUnavailable groups down at once (during the rollout),
- a group rebuilt more than once in one rollout (a rank's pod created twice),
- more GPUs bound to a node than it has.
Works for any controller whose pods carry a group index, a rank and a revision: the mapping
from a pod to a PodView is the only controller-specific part (darwin_view, lws_view).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class PodView:
    uid: str
    group: int
    rank: int
    revision: str
    ready: bool
    terminating: bool
    node: str  # "" while unbound
    gpus: int


def _view(pod: dict, group_key: str, rank_key: str, revision_key: str) -> PodView | None:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    if not all(k in labels for k in (group_key, rank_key, revision_key)):
        return None
    status = pod.get("status") or {}
    return PodView(
        uid=meta["uid"],
        group=int(labels[group_key]),
        rank=int(labels[rank_key]),
        revision=labels[revision_key],
        ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ),
        terminating=bool(meta.get("deletionTimestamp")),
        node=pod["spec"].get("nodeName") or "",
        gpus=sum(
            int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0))
            for c in pod["spec"].get("containers") or []
        ),
    )


def darwin_view(pod: dict) -> PodView | None:
    p = "serving.darwin.ai/"
    return _view(pod, p + "group", p + "rank", p + "revision")


def lws_view(pod: dict) -> PodView | None:
    p = "leaderworkerset.sigs.k8s.io/"
    return _view(pod, p + "group-index", p + "worker-index", p + "template-revision-hash")


@dataclass
class Violations:
    too_many_down: int = 0  # episodes with more than maxUnavailable groups down
    most_down: int = 0  # the most groups down at once during the rollout
    rebuilt_twice: set[int] = field(default_factory=set)  # groups rebuilt more than once
    nodes_over_gpus: int = 0  # episodes of a node holding more GPUs than it has

    def count(self) -> int:
        return self.too_many_down + len(self.rebuilt_twice) + self.nodes_over_gpus


class RolloutRecord:
    def __init__(self, groups: int, group_size: int, max_unavailable: int, node_gpus: int):
        self.groups, self.group_size = groups, group_size
        self.max_unavailable, self.node_gpus = max_unavailable, node_gpus
        self.pods: dict[str, PodView] = {}
        self.violations = Violations()
        self.all_available_at: float | None = None
        self.rollout_started: float | None = None
        self.old_revisions: set[str] = set()
        self.new_available_at: dict[int, float] = {}  # group -> first available on a new revision
        self.rolled_out_at: float | None = None
        self._created_in_rollout: Counter[tuple[int, int]] = Counter()  # (group, rank) -> pods
        self._too_many_down = False
        self._over: set[str] = set()  # nodes over their GPUs right now

    def seen(self, at: float, pod: PodView) -> None:
        if pod.uid not in self.pods and self._rolling():
            self._created_in_rollout[(pod.group, pod.rank)] += 1
            if self._created_in_rollout[(pod.group, pod.rank)] > 1:
                self.violations.rebuilt_twice.add(pod.group)
        self.pods[pod.uid] = pod
        self._check(at)

    def gone(self, at: float, uid: str) -> None:
        self.pods.pop(uid, None)
        self._check(at)

    def start_rollout(self, at: float) -> None:
        """From here on a revision not seen yet is the new one, and the limits are counted."""
        self.rollout_started = at
        self.old_revisions = {p.revision for p in self.pods.values()}

    def available(self) -> dict[int, str]:
        """group -> the revision of its full set of Ready, not terminating pods."""
        ready = Counter(
            (p.group, p.revision) for p in self.pods.values() if p.ready and not p.terminating
        )
        return {g: rev for (g, rev), n in ready.items() if n >= self.group_size}

    def step_seconds(self) -> list[float]:
        """Time of each rollout step: from the patch (or the previous group available on the
        new revision) to the next group available on the new revision."""
        if self.rollout_started is None:
            return []
        moments = [self.rollout_started, *sorted(self.new_available_at.values())]
        return [b - a for a, b in zip(moments, moments[1:], strict=False)]

    def _rolling(self) -> bool:
        return self.rollout_started is not None and self.rolled_out_at is None

    def _check(self, at: float) -> None:
        available = self.available()
        if self.all_available_at is None and len(available) == self.groups:
            self.all_available_at = at
        self._check_gpus()
        if not self._rolling():
            return
        new = {g for g, rev in available.items() if rev not in self.old_revisions}
        for g in new:
            self.new_available_at.setdefault(g, at)
        if len(new) == self.groups:
            self.rolled_out_at = at
            return
        down = self.groups - len(available)
        self.violations.most_down = max(self.violations.most_down, down)
        if down > self.max_unavailable and not self._too_many_down:
            self.violations.too_many_down += 1
        self._too_many_down = down > self.max_unavailable

    def _check_gpus(self) -> None:
        held: Counter[str] = Counter()
        for p in self.pods.values():
            if p.node:
                held[p.node] += p.gpus
        over = {node for node, gpus in held.items() if gpus > self.node_gpus}
        self.violations.nodes_over_gpus += len(over - self._over)
        self._over = over
