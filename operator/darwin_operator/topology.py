"""The shape of a replica group (pure): how its tp x pp GPUs are spread over its pods.

Names and labels are in vocabulary.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from darwin_operator.api import DarwinEndpointSpec


@dataclass(frozen=True)
class GroupShape:
    """How one replica group's tp x pp GPUs are spread over its pods."""

    pods_per_group: int
    gpus_per_pod: int
    tp: int
    pp: int

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def ranks(self) -> range:
        return range(self.pods_per_group)

    @property
    def stages_per_pod(self) -> int:
        return self.gpus_per_pod // self.tp


def shape_of(spec: DarwinEndpointSpec) -> GroupShape:
    tp = spec.engine.tensor_parallel_size
    pp = spec.engine.pipeline_parallel_size
    pods = spec.placement.pods_per_group
    return GroupShape(pods_per_group=pods, gpus_per_pod=tp * pp // pods, tp=tp, pp=pp)
