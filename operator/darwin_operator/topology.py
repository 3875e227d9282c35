"""Names and shape of replica groups (pure): labels, deterministic object names, GPUs per pod.

Everything that names an object lives here, so the longest endpoint name the API accepts
(MAX_ENDPOINT_NAME_LENGTH, enforced by the CRD) is computed from the same builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # api.py imports this module for the name limit
    from darwin_operator.api import DarwinEndpointSpec

LABEL_PREFIX = "serving.darwin.ai/"
LABEL_ENDPOINT = LABEL_PREFIX + "endpoint"
LABEL_GROUP = LABEL_PREFIX + "group"
LABEL_RANK = LABEL_PREFIX + "rank"
LABEL_ROLE = LABEL_PREFIX + "role"
LABEL_REVISION = LABEL_PREFIX + "revision"
# "true" on leaders that belong behind the client Service; "false" drains a group before deletion.
LABEL_SERVING = LABEL_PREFIX + "serving"
ANNOTATION_RESTARTED_AT = LABEL_PREFIX + "restartedAt"
SCHEDULING_GATE = LABEL_PREFIX + "gang"

ROLE_LEADER = "leader"
ROLE_WORKER = "worker"
LEADER_RANK = 0

DNS_LABEL_MAX_LENGTH = 63
# Name budget for indices: replicas <= 512 plus surge and podsPerGroup <= 64 fit in 4 and 2 digits.
MAX_GROUP_INDEX = 9999
MAX_RANK = 99


def pod_name(endpoint: str, group: int, rank: int) -> str:
    return f"{endpoint}-{group}-{rank}"


def headless_service_name(endpoint: str) -> str:
    """The headless Service over every pod: it gives each pod `{pod}.{this}` as a DNS name."""
    return f"{endpoint}-pods"


def client_service_name(endpoint: str) -> str:
    """The Service clients use; it selects serving leaders."""
    return endpoint


def pdb_name(endpoint: str) -> str:
    return f"{endpoint}-leaders"


def _longest_suffix() -> int:
    derived = (
        pod_name("", MAX_GROUP_INDEX, MAX_RANK),
        headless_service_name(""),
        client_service_name(""),
        pdb_name(""),
    )
    return max(len(name) for name in derived)


# Every derived name is `{endpoint}{suffix}` and must stay a DNS label (pods' hostnames, Services).
MAX_ENDPOINT_NAME_LENGTH = DNS_LABEL_MAX_LENGTH - _longest_suffix()


def role_of(rank: int) -> str:
    return ROLE_LEADER if rank == LEADER_RANK else ROLE_WORKER


def group_selector(endpoint: str, group: int) -> dict[str, str]:
    """Labels that select every pod of one group."""
    return {LABEL_ENDPOINT: endpoint, LABEL_GROUP: str(group)}


def leader_selector(endpoint: str) -> str:
    """The label selector of the endpoint's leaders as text (status.selector, for the HPA)."""
    return f"{LABEL_ENDPOINT}={endpoint},{LABEL_ROLE}={ROLE_LEADER}"


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
