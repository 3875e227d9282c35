"""The DarwinEndpoint API (serving.darwin.ai/v1alpha1): pydantic models of spec and status.

These models are the one source of truth. The CRD in crds/ is generated from them (crd.py), so a
field, default, range or rule is declared here once. Attribute names are snake_case; the wire
names (aliases) are the camelCase names users write.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "serving.darwin.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DarwinEndpoint"
PLURAL = "darwinendpoints"
SINGULAR = "darwinendpoint"
SHORT_NAMES = ["dwe"]
CATEGORIES = ["darwin", "all"]

# Kubernetes resource.Quantity, as the API server's own OpenAPI pattern spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[str | int, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]
# An int-or-percent ("1", 1, "25%") as Deployments take for maxUnavailable / maxSurge.
IntOrPercent = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
    )


class Backend(str, Enum):
    MP = "mp"  # vLLM's own multi-node launcher: --nnodes/--node-rank/--master-addr/--headless
    RAY = "ray"


class Gang(str, Enum):
    GATE = "Gate"  # the operator's scheduling gate, lifted for a whole group at once
    KUEUE = "Kueue"
    NONE = "None"


class Dtype(str, Enum):
    AUTO = "auto"
    HALF = "half"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT = "float"
    FLOAT32 = "float32"


class ServiceType(str, Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class SecretKeyRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="token", min_length=1, max_length=253)


class ModelCache(_Model):
    persistent_volume_claim: str | None = Field(default=None, min_length=1, max_length=253)
    host_path: str | None = Field(default=None, pattern=r"^/")
    mount_path: str = Field(default="/models", pattern=r"^/")


class ModelSpec(_Model):
    name: str = Field(min_length=1, max_length=512, description="Hub id, or a path in the cache")
    revision: str | None = Field(default=None, min_length=1, max_length=256)
    served_name: str | None = Field(default=None, min_length=1, max_length=256)
    token_secret_ref: SecretKeyRef | None = None
    cache: ModelCache | None = None


class EnvVar(_Model):
    """core/v1 EnvVar; valueFrom is passed through as the API server validates it on the pod."""

    name: str = Field(min_length=1, max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class EngineSpec(_Model):
    image: str = Field(default="vllm/vllm-openai:v0.33.0", min_length=1)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    dtype: Dtype = Dtype.AUTO
    max_model_len: int | None = Field(default=None, ge=1)
    trust_remote_code: bool = False
    backend: Backend = Backend.MP
    extra_args: list[str] = Field(default_factory=list, max_length=128)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)

    @property
    def gpus_per_group(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class Toleration(_Model):
    key: str | None = None
    operator: str | None = Field(default=None, pattern=r"^(Exists|Equal)$")
    value: str | None = None
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    toleration_seconds: int | None = None


class PlacementSpec(_Model):
    pods_per_group: int = Field(default=1, ge=1, le=64)
    gpu_resource: str = Field(default="nvidia.com/gpu", min_length=3, max_length=253)
    gpu_product: str = Field(default="", max_length=63)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    topology_key: str = Field(default="", max_length=316)
    priority_class_name: str = Field(default="", max_length=253)
    gang: Gang = Gang.GATE


class ResourcesSpec(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None
    shared_memory: Quantity = "16Gi"


class HealthSpec(_Model):
    startup_timeout_seconds: int = Field(default=3600, ge=10, le=86400)
    max_group_restarts: int = Field(default=5, ge=0, le=1000)
    restart_window_seconds: int = Field(default=3600, ge=60, le=604800)


class RolloutSpec(_Model):
    max_unavailable: IntOrPercent = 1
    max_surge: IntOrPercent = 0
    partition: int = Field(default=0, ge=0)
    paused: bool = False
    drain_seconds: int = Field(default=30, ge=0, le=3600)


class ServiceSpec(_Model):
    type: ServiceType = ServiceType.CLUSTER_IP
    port: int = Field(default=8000, ge=1, le=65535)


class PodMetadata(_Model):
    """Extra labels and annotations for every pod (scrape configs, meshes, cost tags)."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class DarwinEndpointSpec(_Model):
    replicas: int = Field(default=1, ge=0, le=512)
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class GroupStatus(_Model):
    index: int
    revision: str = ""
    phase: str = ""
    pods: int = 0
    pods_ready: int = 0
    restarts: int = 0
    message: str = ""
    last_failure: str = ""
    phase_since: str | None = None


class DarwinEndpointStatus(_Model):
    observed_generation: int | None = None
    phase: str = "Pending"  # Pending | Progressing | Ready | Degraded | Failed
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    current_revision: str = ""
    update_revision: str = ""
    selector: str = ""
    endpoint: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    groups: list[GroupStatus] = Field(default_factory=list)


class DarwinEndpoint(_Model):
    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DarwinEndpointSpec
    status: DarwinEndpointStatus | None = None
