"""The operator's writes applied to a simulated cluster, for the planner simulations: each
action becomes the writes cluster.py makes, one callable per write, so a test can stop (kill the
operator) between any two of them."""

from __future__ import annotations

from dataclasses import replace

from darwin_operator import capacity, render
from darwin_operator.observed import NodeInfo, ObservedPod, pod_from_api
from darwin_operator.planner import (
    CreateGroup,
    DeleteGroup,
    DrainGroup,
    MarkBroken,
    RestoreServing,
    UngateGroup,
)
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


class OperatorWrites:
    """Pods by name (so a name exists once) and a clock; subclasses add the rest of the world."""

    nodes: list[NodeInfo]
    pods: dict[str, ObservedPod]
    now: float

    def writes_for(self, spec, plan) -> tuple[list, list]:
        """Writes in any order the operator may make them, except that it stamps every pod of
        a group it deletes before deleting any (cluster.delete_pods): deletions come last."""
        writes, deletes = [], []
        for action in plan.actions:
            match action:
                case CreateGroup(index=i, gated=gated):
                    for obj in render.render_group(REF, spec, revision(spec), i, gated=gated):
                        writes.append(lambda obj=obj: self.create(obj))
                case UngateGroup(pods=names):
                    writes += [lambda n=n: self.ungate(n) for n in names]
                case DrainGroup(leader=n):
                    writes.append(
                        lambda n=n: self.patch(n, serving="false", drain_started_at=self.now)
                    )
                case RestoreServing(leader=n):
                    writes.append(lambda n=n: self.patch(n, serving="true", drain_started_at=None))
                case MarkBroken(mark=mark, pods=names):
                    writes += [lambda n=n, m=mark: self.patch(n, marked_broken=m) for n in names]
                case DeleteGroup(reason=reason, pods=names):
                    writes += [
                        lambda n=n, r=reason: self.patch(n, marked_deleted=r.value) for n in names
                    ]
                    deletes += [lambda n=n: self.patch(n, deleting=True) for n in names]
        return writes, deletes

    def admission_writes(self, plan) -> list:
        """What the reconciler does under the admission lock, from fresh capacity."""
        if not plan.admissions:
            return []
        free = capacity.free_gpus(self.nodes, self.pods.values(), GPU)
        fits = capacity.admit_in_order([a.demand for a in plan.admissions], self.nodes, free)
        return [
            lambda n=n: self.ungate(n)
            for a, fit in zip(plan.admissions, fits, strict=True)
            if fit.fits
            for n in a.pods
        ]

    def create(self, obj) -> None:
        name = obj["metadata"]["name"]
        if name not in self.pods:  # AlreadyExists is harmless
            self.pods[name] = replace(pod_from_api(obj), created_at=self.now)

    def ungate(self, name: str) -> None:
        if name in self.pods:
            self.patch(name, gated=False, admitted_at=self.now)

    def patch(self, name: str, **fields) -> None:
        if name in self.pods:
            self.pods[name] = replace(self.pods[name], **fields)
