"""The operator's writes applied to a simulated cluster, for the planner simulations: each
action becomes the writes cluster.py sends (writes.py), one callable per write, so a test can
stop (kill the operator) between any two of them."""

from __future__ import annotations

import copy
from dataclasses import replace

from darwin_operator import capacity, writes
from darwin_operator.observed import NodeInfo, ObservedPod, pod_from_api
from tests.unit.fake_cluster import apply_patch
from tests.unit.planner_fixtures import REF, revision

GPU = "nvidia.com/gpu"


def b200_nodes(count: int, prefix: str = "node") -> list[NodeInfo]:
    return [
        NodeInfo(
            name=f"{prefix}-{i}",
            labels=(("nvidia.com/gpu.product", "NVIDIA-B200"),),
            allocatable=((GPU, 8),),
        )
        for i in range(count)
    ]


# The fields of an observed pod that the operator's pod writes can change (labels, annotations
# and our gate), read the way the operator reads them (observed.pod_from_api).
_WRITTEN = (
    "serving",
    "admitted_at",
    "drain_started_at",
    "marked_broken",
    "marked_deleted",
    "gated",
    "foreign_gates",
)


class OperatorWrites:
    """Pods by name (so a name exists once) and a clock; subclasses add the rest of the world.
    Each pod is kept twice: as the API server stores what the operator wrote (`objects`) and as
    the operator observes it, with what the scheduler and kubelet did (`pods`)."""

    nodes: list[NodeInfo]
    pods: dict[str, ObservedPod]
    objects: dict[str, dict]
    now: float

    def writes_for(self, spec, plan) -> tuple[list, list]:
        """The operator's writes for the plan (writes.py, as cluster.py sends them), one callable
        each: the first ones in any order, deletions last."""
        first, last = [], []
        for action in plan.actions:
            pod_writes = writes.of(action, REF, spec, revision(spec), self.now)
            first += [lambda w=w: self.apply(w) for w in pod_writes.first]
            last += [lambda w=w: self.apply(w) for w in pod_writes.last]
        return first, last

    def admission_writes(self, plan) -> list:
        """What the reconciler does under the admission lock, from fresh capacity."""
        if not plan.admissions:
            return []
        free = capacity.free_gpus(self.nodes, self.pods.values(), GPU)
        fits = capacity.admit_in_order([a.demand for a in plan.admissions], self.nodes, free)
        return [
            lambda w=w: self.apply(w)
            for a, fit in zip(plan.admissions, fits, strict=True)
            if fit.fits
            for w in writes.ungate(a.pods, self.now, fit.nodes)
        ]

    def apply(self, write: writes.PodWrite) -> None:
        """What the API server does with one write; a pod that exists is not created again, one
        that is gone is not patched."""
        name = write.name
        if isinstance(write, writes.CreatePod):
            if name not in self.pods:
                self.objects[name] = copy.deepcopy(write.body)
                self.pods[name] = replace(pod_from_api(write.body), created_at=self.now)
        elif name in self.pods and isinstance(write, writes.DeletePod):
            self.patch(name, deleting=True)
        elif name in self.pods:
            apply_patch(self.objects[name], write)
            seen = pod_from_api(self.objects[name])
            self.patch(name, **{f: getattr(seen, f) for f in _WRITTEN})

    def patch(self, name: str, **fields) -> None:
        if name in self.pods:
            self.pods[name] = replace(self.pods[name], **fields)
