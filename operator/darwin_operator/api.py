"""The DarwinEndpoint API (serving.darwin.ai/v1alpha1): pydantic models of spec and status.

These models are the one source of truth. The CRD in crds/ is generated from them (crd.py), so a
field, default, range or rule is declared here once. Attribute names are snake_case; the wire
names (aliases) are the camelCase names users write. Field docstrings become the CRD's
descriptions (`kubectl explain dwe.spec`).

Cross-field rules are `Rule`s kept next to the fields they constrain: each carries the CEL the API
server evaluates (x-kubernetes-validations) and the same check in Python, with one message, so the
API server, `darwin-operator render` and the operator all reject a spec in the same words
(validation.py runs the Python side).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from darwin_operator.vocabulary import LABEL_PREFIX, MAX_ENDPOINT_NAME_LENGTH

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
# The same without a sign: CPU, memory and /dev/shm sizes are never negative.
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", "^", 1)
DNS1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label key or extended resource name: optional DNS-subdomain prefix, then a name segment.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# Words a shell or vLLM's parser reads as one positional value: no blanks, no leading dash.
NO_BLANK_NO_DASH_PATTERN = r"^[^-\s]\S*$"

# vLLM flags the operator sets itself (long names without dashes). An extra argument may not set
# them in any spelling vLLM 0.33's FlexibleArgumentParser accepts: `--x y`, `--x=y`, underscores
# for dashes, and argparse prefixes (`--tensor-parallel` for `--tensor-parallel-size`). `uds`
# would move the server off the port the probes and Services use; `config` reads flags from a
# file that nothing here can check; `shutdown-timeout` must fit the pods' grace period.
OWNED_VLLM_FLAGS = (
    "tensor-parallel-size",
    "pipeline-parallel-size",
    "nnodes",
    "node-rank",
    "master-addr",
    "master-port",
    "headless",
    "host",
    "port",
    "uds",
    "served-model-name",
    "distributed-executor-backend",
    "model",
    "config",
    "shutdown-timeout",
)
# vLLM's single-dash aliases of owned flags: -tp, -pp (and argparse's prefix -t, -p) and the
# one-letter -n/-r, which argparse also reads glued to a value (-n3, -r1).
OWNED_VLLM_SHORT_ALIASES = ("tp", "pp")
OWNED_VLLM_SHORT_LETTERS = ("n", "r")

# Environment the operator sets in every pod (engine.py), and VLLM_PORT, the base of vLLM's
# internal ports, which must stay clear of the HTTP port; the user's env may not set them.
OWNED_ENV_PREFIX = "DARWIN_"
OWNED_ENV = ("VLLM_HOST_IP", "VLLM_PORT", "VLLM_ENGINE_READY_TIMEOUT_S")
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

MAX_EXTRA_ARGS = 128
MAX_EXTRA_ARG_LENGTH = 2048
MAX_ENV = 128
MAX_MAP_ENTRIES = 64


@dataclass(frozen=True)
class Rule:
    """A validation rule: CEL for the API server and the same check in Python, one message.

    `check` receives the value the rule is attached to (a model instance or a scalar) and returns
    True when it is valid. `field_path` (e.g. ".placement.podsPerGroup") points the API server's
    error at the field to fix.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str = ""
    reason: str = ""

    def schema(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field_path:
            rule["fieldPath"] = self.field_path
        if self.reason:
            rule["reason"] = self.reason
        return rule

    def validator(self) -> Callable[[Any], Any]:
        """A pydantic AfterValidator that raises this rule's message."""

        def validate(value: Any) -> Any:
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return validate


def _cel_str(value: str) -> str:
    """A CEL string literal (regular expressions carry backslashes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_cel_str(value) for value in values) + "]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_zero(value: int | str) -> bool:
    return value == 0 if _is_int(value) else re.fullmatch(r"0+%?", str(value)) is not None


def _quantity_ok(value: Any) -> bool:
    if _is_int(value):
        return value >= 0
    return isinstance(value, str) and re.fullmatch(NON_NEGATIVE_QUANTITY_PATTERN, value) is not None


_QUANTITY = Rule(
    cel=f"type(self) == int ? self >= 0 : self.matches({_cel_str(NON_NEGATIVE_QUANTITY_PATTERN)})",
    message="must be a non-negative Kubernetes quantity such as 32, 500m or 64Gi",
    check=_quantity_ok,
)
# Kubernetes resource.Quantity: an integer or a string such as "64Gi".
Quantity = Annotated[
    str | int,
    AfterValidator(_QUANTITY.validator()),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,
            "x-kubernetes-validations": [_QUANTITY.schema()],
        }
    ),
]


def _int_or_percent_rule(max_percent: int | None) -> Rule:
    if max_percent is None:
        pattern, words = r"^[0-9]+%$", "a percentage such as 25%"
    else:
        pattern, words = r"^(100|[1-9]?[0-9])%$", "a percentage from 0% to 100%"
    return Rule(
        cel=f"type(self) == int ? self >= 0 : self.matches({_cel_str(pattern)})",
        message=f"must be a non-negative number of groups or {words}",
        check=lambda v: v >= 0 if _is_int(v) else re.fullmatch(pattern, str(v)) is not None,
    )


def _int_or_percent(max_percent: int | None) -> Any:
    """An int-or-percent ("1", 1, "25%") as Deployments take for maxUnavailable / maxSurge."""
    rule = _int_or_percent_rule(max_percent)
    return Annotated[
        int | str,
        AfterValidator(rule.validator()),
        WithJsonSchema(
            {
                "x-kubernetes-int-or-string": True,
                "maxLength": 8,
                "x-kubernetes-validations": [rule.schema()],
            }
        ),
    ]


IntOrPercent = _int_or_percent(max_percent=None)
IntOrPercentUpTo100 = _int_or_percent(max_percent=100)
ExtraArg = Annotated[str, Field(max_length=MAX_EXTRA_ARG_LENGTH)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    # Cross-field rules of this model (not inherited): CEL in the CRD, Python in validation.py.
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        own_rules = cls.__dict__.get("rules", ())
        if own_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.schema() for rule in own_rules]
        return schema


class Backend(StrEnum):
    MP = "mp"  # vLLM's own multi-node launcher: --nnodes/--node-rank/--master-addr/--headless
    # Kept in the enum only so that the API server refuses it with a message (RAY_REFUSED).
    RAY = "ray"


class Gang(StrEnum):
    GATE = "Gate"  # the operator's scheduling gate, lifted for a whole group at once
    # Kept in the enum only so that the API server refuses it with a message (KUEUE_REFUSED).
    KUEUE = "Kueue"
    NONE = "None"


# Options once offered and withdrawn: a half-working option is worse than none. vLLM's image
# (v0.33.0) ships no Ray, so `ray start` failed in every pod and the group was recreated until the
# endpoint turned Failed; Kueue never managed the pods (no queue name), so groups ran ungated.
RAY_REFUSED = Rule(
    cel="self.backend != 'ray'",
    message=(
        "backend ray is not supported: vLLM's image ships no Ray; use backend mp, vLLM's own "
        "multi-node launcher, which needs nothing else in the image"
    ),
    check=lambda e: e.backend != Backend.RAY,
    field_path=".backend",
    reason="FieldValueForbidden",
)
KUEUE_REFUSED = Rule(
    cel="self.gang != 'Kueue'",
    message=(
        "gang Kueue is not supported: use Gate (the operator admits each group all-or-nothing) "
        "or None (pods are created ungated)"
    ),
    check=lambda p: p.gang != Gang.KUEUE,
    field_path=".gang",
    reason="FieldValueForbidden",
)


class Dtype(StrEnum):
    AUTO = "auto"
    HALF = "half"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT = "float"
    FLOAT32 = "float32"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class SecretKeyRef(_Model):
    """A key of a Secret in the endpoint's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN)
    """Name of the Secret."""
    key: str = Field(default="token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key in the Secret that holds the token."""


class CacheStaging(StrEnum):
    """Who puts the weights into the cache volume, and when."""

    NONE = "None"  # vLLM downloads into the volume itself when a pod starts
    PER_NODE = "PerNode"  # the volume is local to each node: staged on every eligible node
    SHARED = "Shared"  # one volume all nodes share: staged once per volume


# A usable absolute path: not "/", no empty, "." or ".." segment.
ABSOLUTE_PATH_PATTERN = r"^(/[^/]+)+/?$"
_PATH_SEGMENTS_OK = Rule(
    cel="!self.matches('(^|/)[.][.]?(/|$)')",
    message="must not contain '.' or '..' segments",
    check=lambda p: not any(s in (".", "..") for s in p.split("/")),
)
CachePath = Annotated[
    str,
    AfterValidator(_PATH_SEGMENTS_OK.validator()),
    Field(min_length=2, max_length=4096, pattern=ABSOLUTE_PATH_PATTERN),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 2,
            "maxLength": 4096,
            "pattern": ABSOLUTE_PATH_PATTERN,
            "x-kubernetes-validations": [_PATH_SEGMENTS_OK.schema()],
        }
    ),
]


class ModelCache(_Model):
    """The weights volume: exactly one of persistentVolumeClaim or hostPath."""

    persistent_volume_claim: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN
    )
    """Name of a PersistentVolumeClaim holding the weights: ReadWriteMany/ReadOnlyMany for
    staging Shared, or bound to a local PersistentVolume whose nodeAffinity spans the GPU nodes
    for staging PerNode (works under Pod Security "baseline", unlike hostPath)."""
    host_path: CachePath | None = None
    """An absolute directory on every GPU node holding the weights (e.g. local NVMe); needs Pod
    Security "privileged"."""
    mount_path: CachePath = "/models"
    """Where the volume is mounted, absolute; vLLM downloads into it (--download-dir)."""
    staging: CacheStaging = CacheStaging.NONE
    """None: vLLM downloads into the volume when a pod starts. PerNode: the volume is local to
    each node; the operator downloads the model at its revision on every eligible node, in one
    staging pod per node and revision, places groups on nodes that hold it and lifts a group's
    gates only once all its nodes do. Shared: one staging pod per volume and revision before
    any group starts."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.persistentVolumeClaim) != has(self.hostPath)",
            message="set exactly one of persistentVolumeClaim or hostPath",
            check=lambda c: (c.persistent_volume_claim is None) != (c.host_path is None),
        ),
        Rule(
            cel="!has(self.hostPath) || self.staging != 'Shared'",
            message="staging Shared needs a persistentVolumeClaim: a hostPath is local to a node",
            check=lambda c: c.host_path is None or c.staging != CacheStaging.SHARED,
            field_path=".staging",
        ),
    )


class ModelSpec(_Model):
    name: str = Field(min_length=1, max_length=512, pattern=NO_BLANK_NO_DASH_PATTERN)
    """Hub id (org/model), or an absolute path inside the cache volume."""
    revision: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=NO_BLANK_NO_DASH_PATTERN
    )
    """Branch, tag or commit of the model on the hub (--revision)."""
    served_name: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=NO_BLANK_NO_DASH_PATTERN
    )
    """Short model name clients send (--served-model-name); defaults to metadata.name. The hub
    id in `name` is served too."""
    token_secret_ref: SecretKeyRef | None = None
    """Hub token for gated models, passed as HF_TOKEN from this Secret key (never a literal)."""
    cache: ModelCache | None = None
    """Weights volume; without it every pod downloads the weights into its own disk."""
    size: Quantity | None = None
    """Size of the weights on disk (the reference model: 800Gi). Without model.cache every pod
    downloads the whole model into its own ephemeral storage, so each pod requests this much
    ephemeral storage plus room for vLLM's caches (a node that cannot hold it is not chosen,
    instead of a pod evicted half way through a download)."""


class EnvVar(_Model):
    """core/v1 EnvVar; valueFrom is passed through as the API server validates it on the pod."""

    name: str = Field(min_length=1, max_length=256, pattern=r"^[^=]+$")
    value: str | None = None
    value_from: dict[str, Any] | None = None

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.valueFrom) || !has(self.value) || self.value == ''",
            message="set value or valueFrom, not both",
            check=lambda e: e.value_from is None or not e.value,
        ),
    )


def _owned_flag(arg: str) -> str | None:
    """The operator-owned vLLM flag an extra argument would set, or None (mirrors the CEL)."""
    if arg.startswith("--"):
        name = arg[2:].split("=", 1)[0].replace("_", "-")
        return next((f"--{flag}" for flag in OWNED_VLLM_FLAGS if flag.startswith(name)), None)
    if len(arg) > 1 and arg.startswith("-"):
        name = arg[1:].split("=", 1)[0]
        if name[:1] in OWNED_VLLM_SHORT_LETTERS:
            return f"-{name[:1]}"
        return next((f"-{a}" for a in OWNED_VLLM_SHORT_ALIASES if a.startswith(name)), None)
    return None


_OWNED_FLAGS_CEL = (
    "self.extraArgs.all(a, a.startsWith('--') ? "
    f"!{_cel_list(OWNED_VLLM_FLAGS)}.exists(f, "
    "f.startsWith(a.substring(2).split('=')[0].replace('_', '-'))) : "
    "!(a.size() > 1 && a.startsWith('-') && ("
    + " || ".join(f"a.startsWith('-{letter}')" for letter in OWNED_VLLM_SHORT_LETTERS)
    + f" || {_cel_list(OWNED_VLLM_SHORT_ALIASES)}.exists(f, "
    "f.startsWith(a.substring(1).split('=')[0])))))"
)


def _owned_env(name: str) -> bool:
    return name.startswith(OWNED_ENV_PREFIX) or name in OWNED_ENV


class EngineSpec(_Model):
    image: str = Field(
        default="vllm/vllm-openai:v0.33.0", min_length=1, max_length=1024, pattern=r"^\S+$"
    )
    """vLLM container image."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs one tensor-parallel group spans (--tensor-parallel-size)."""
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    """Pipeline stages (--pipeline-parallel-size); a replica uses tp x pp GPUs."""
    dtype: Dtype = Dtype.AUTO
    """Weights and activations dtype (--dtype)."""
    max_model_len: int | None = Field(default=None, ge=1)
    """Context length (--max-model-len); defaults to the model's own."""
    trust_remote_code: bool = False
    """Run the model repository's own code (--trust-remote-code)."""
    backend: Backend = Backend.MP
    """mp: vLLM's own multi-node launcher (--nnodes/--node-rank/--master-addr, workers
    --headless). ray is refused: vLLM's image ships no Ray."""
    extra_args: list[ExtraArg] = Field(default_factory=list, max_length=MAX_EXTRA_ARGS)
    """More `vllm serve` arguments, appended after the operator's; flags the operator owns are
    refused."""
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    """Extra environment of the vLLM container (DARWIN_* and the operator's own are refused)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=_OWNED_FLAGS_CEL,
            message=(
                "may not set flags the operator owns, in any spelling, prefix or short alias: "
                + ", ".join(f"--{flag}" for flag in OWNED_VLLM_FLAGS)
                + ", -tp, -pp, -n, -r; use the spec fields (engine, placement, model) instead"
            ),
            check=lambda e: not any(_owned_flag(arg) for arg in e.extra_args),
            field_path=".extraArgs",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=(
                f"self.env.all(e, !e.name.startsWith('{OWNED_ENV_PREFIX}') && "
                f"!(e.name in {_cel_list(OWNED_ENV)}))"
            ),
            message=(
                f"may not set variables the operator sets or reserves: {OWNED_ENV_PREFIX}*, "
                + ", ".join(OWNED_ENV)
            ),
            check=lambda e: not any(_owned_env(var.name) for var in e.env),
            field_path=".env",
            reason="FieldValueForbidden",
        ),
        RAY_REFUSED,
    )

    @property
    def gpus_per_group(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class Toleration(_Model):
    key: str | None = Field(default=None, max_length=316)
    operator: str | None = Field(default=None, pattern=r"^(Exists|Equal)$")
    value: str | None = Field(default=None, max_length=63)
    effect: str | None = Field(default=None, pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")
    toleration_seconds: int | None = None


def _gpu_resource_ok(name: str) -> bool:
    return "kubernetes.io/" not in name and not name.startswith("requests.")


class PlacementSpec(_Model):
    pods_per_group: int = Field(default=1, ge=1, le=64)
    """Pods per replica group: 1 puts all tp x pp GPUs in one pod; pp puts one pipeline stage
    (tp GPUs) in each pod. Must divide pipelineParallelSize."""
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        min_length=3,
        max_length=253,
        pattern=EXTENDED_RESOURCE_PATTERN,
    )
    """Extended resource the GPUs are requested as (domain/name)."""
    gpu_product: str = Field(default="", max_length=63)
    """Required value of the node label nvidia.com/gpu.product, e.g. NVIDIA-B200."""
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    """More node labels every pod requires."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_MAP_ENTRIES)
    """Tolerations of every pod (e.g. for tainted GPU nodes)."""
    topology_key: str = Field(default="", max_length=316, pattern=r"^$|" + QUALIFIED_NAME_PATTERN)
    """If set, all pods of one group land in one domain of this node label (rack, NVLink
    domain)."""
    priority_class_name: str = Field(
        default="", max_length=253, pattern=r"^$|" + DNS1123_SUBDOMAIN_PATTERN
    )
    """PriorityClass of every pod."""
    gang: Gang = Gang.GATE
    """Gate: the operator admits a group all-or-nothing with a scheduling gate; None: pods are
    created ungated. Kueue is refused (it was never wired to a queue)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                "!self.gpuResource.contains('kubernetes.io/') && "
                "!self.gpuResource.startsWith('requests.')"
            ),
            message=(
                "must be an extended resource name such as nvidia.com/gpu: "
                "domain/name, outside kubernetes.io"
            ),
            check=lambda p: _gpu_resource_ok(p.gpu_resource),
            field_path=".gpuResource",
        ),
        KUEUE_REFUSED,
    )


# Per GPU of a pod, when resources.cpu / resources.memory are not given: a pod without
# requests is BestEffort, the first the kubelet evicts under memory pressure.
DEFAULT_CPU_PER_GPU = 8
DEFAULT_MEMORY_PER_GPU_GI = 64
# Resources the operator sets from other fields: the GPUs (placement.gpuResource) and these.
OWNED_RESOURCES = ("cpu", "memory")
# A resource name: optional DNS-subdomain prefix, then a name (nvidia.com/gpu, hugepages-2Mi).
RESOURCE_NAME_PATTERN = QUALIFIED_NAME_PATTERN


class ResourcesSpec(_Model):
    """Per pod, besides the GPUs."""

    cpu: Quantity | None = None
    """CPU request of every pod; by default 8 per GPU of the pod."""
    memory: Quantity | None = None
    """Memory request of every pod; by default 64Gi per GPU of the pod. /dev/shm counts
    against it."""
    shared_memory: Quantity = "16Gi"
    """Size of /dev/shm (a memory-backed emptyDir) in every pod."""
    guaranteed: bool = False
    """Limits equal to the requests for CPU and memory: Guaranteed QoS, the last to be evicted,
    with exclusive cores and NUMA alignment where the kubelet's CPU and Topology Managers are
    set up for it (give a whole number of CPUs then)."""
    extra: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """More resources of every pod, requested as limits, e.g. rdma/hca_shared_devices_a: 1
    (their environment, such as NCCL_IB_HCA, goes in engine.env)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                f"self.extra.all(k, k.matches({_cel_str(RESOURCE_NAME_PATTERN)}) && "
                f"!(k in {_cel_list(OWNED_RESOURCES)}))"
            ),
            message=(
                "must be resource names such as rdma/hca_shared_devices_a; cpu and memory are "
                "set by resources.cpu and resources.memory, the GPUs by placement.gpuResource"
            ),
            check=lambda r: all(
                re.fullmatch(RESOURCE_NAME_PATTERN, k) and k not in OWNED_RESOURCES for k in r.extra
            ),
            field_path=".extra",
            reason="FieldValueForbidden",
        ),
    )


# Linux capabilities as Kubernetes spells them (no CAP_ prefix).
CAPABILITY_PATTERN = r"^[A-Z][A-Z0-9_]*$"
# The operator's own volumes in every pod.
OWNED_VOLUMES = ("dshm", "weights")
SHM_PATH = "/dev/shm"
MAX_VOLUMES = 32


class Volume(_Model):
    """A core/v1 Volume: a name and one volume source (secret, configMap, csi, hostPath, ...),
    passed to the pods as written; the API server checks the source when it creates them."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class VolumeMount(_Model):
    """Where a volume of pod.volumes is mounted in the vLLM container."""

    name: str = Field(min_length=1, max_length=63)
    """Name of a volume in pod.volumes."""
    mount_path: str = Field(min_length=2, max_length=1024, pattern=r"^/")
    read_only: bool = False
    sub_path: str | None = Field(default=None, max_length=1024, pattern=r"^[^/]")


class PodSpecExtras(_Model):
    """What a real cluster needs in the vLLM pods besides what the operator derives.

    The pods run third-party model code (trustRemoteCode), so by default they carry no
    service-account token, allow no privilege escalation, drop every capability and use the
    runtime's default seccomp profile: Pod Security "baseline". vLLM's official image runs as
    root; with an image (or HOME and caches) that works as another user, runAsUser with
    runAsNonRoot meets "restricted"."""

    service_account_name: str = Field(
        default="", max_length=253, pattern=r"^$|" + DNS1123_SUBDOMAIN_PATTERN
    )
    """ServiceAccount of the pods, e.g. for workload identity to a bucket of weights."""
    automount_service_account_token: bool = False
    """Mount the ServiceAccount's API token (the pods do not talk to the API server)."""
    image_pull_secrets: list[
        Annotated[str, Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN_PATTERN)]
    ] = Field(default_factory=list, max_length=16)
    """Secrets (names) to pull the image with."""
    run_as_user: int | None = Field(default=None, ge=0, le=2147483647)
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647)
    fs_group: int | None = Field(default=None, ge=0, le=2147483647)
    """Group that owns the volumes (e.g. a writable weights cache for a non-root user)."""
    run_as_non_root: bool = False
    """Refuse to start as root (vLLM's official image runs as root: set runAsUser too)."""
    capabilities: list[
        Annotated[str, Field(min_length=1, max_length=64, pattern=CAPABILITY_PATTERN)]
    ] = Field(default_factory=list, max_length=16)
    """Capabilities added back after all are dropped, e.g. IPC_LOCK for RDMA memory
    registration (which Pod Security "baseline" does not allow)."""
    volumes: list[Volume] = Field(default_factory=list, max_length=MAX_VOLUMES)
    """More volumes of the pods (names dshm and weights are the operator's)."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=MAX_VOLUMES)
    """Where volumes of pod.volumes are mounted in the vLLM container."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!self.capabilities.exists(c, c == 'ALL' || c.startsWith('CAP_'))",
            message="name capabilities one by one without the CAP_ prefix, e.g. IPC_LOCK",
            check=lambda p: not any(c == "ALL" or c.startswith("CAP_") for c in p.capabilities),
            field_path=".capabilities",
        ),
        Rule(
            cel="!(self.runAsNonRoot && has(self.runAsUser) && self.runAsUser == 0)",
            message="runAsNonRoot contradicts runAsUser 0",
            check=lambda p: not (p.run_as_non_root and p.run_as_user == 0),
            field_path=".runAsUser",
        ),
        Rule(
            cel=(
                f"self.volumes.all(v, !(v.name in {_cel_list(OWNED_VOLUMES)}) && "
                "self.volumes.exists_one(w, w.name == v.name))"
            ),
            message=(
                "volume names must be unique and not "
                + " or ".join(OWNED_VOLUMES)
                + " (the operator's /dev/shm and weights volumes)"
            ),
            check=lambda p: (
                not any(v.name in OWNED_VOLUMES for v in p.volumes)
                and len({v.name for v in p.volumes}) == len(p.volumes)
            ),
            field_path=".volumes",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=(
                "self.volumeMounts.all(m, self.volumes.exists(v, v.name == m.name) && "
                "self.volumeMounts.exists_one(n, n.mountPath == m.mountPath))"
            ),
            message="each mount must name a volume of pod.volumes, at a path of its own",
            check=lambda p: (
                all(m.name in {v.name for v in p.volumes} for m in p.volume_mounts)
                and len({m.mount_path for m in p.volume_mounts}) == len(p.volume_mounts)
            ),
            field_path=".volumeMounts",
        ),
    )


MAX_STARTUP_TIMEOUT_SECONDS = 86400


class HealthSpec(_Model):
    """When a group counts as broken. The operator recreates a broken group whole; see README
    for every signal and its delay."""

    startup_timeout_seconds: int = Field(default=3600, ge=10, le=MAX_STARTUP_TIMEOUT_SECONDS)
    """Weights take minutes to load; a group not Ready this long after admission is recreated
    (timed by the operator: a change applies to running groups without replacing them). With
    model.cache.staging the gates are lifted only once the weights are on the group's nodes, so
    this times the load (phase Loading), never the download."""
    download_timeout_seconds: int = Field(default=10800, ge=60, le=7 * 86400)
    """With model.cache.staging: how long one staging pod may download (phase Downloading)
    before it is stopped and retried with backoff."""
    max_group_restarts: int = Field(default=5, ge=0, le=1000)
    """Group recreations allowed within restartWindowSeconds; past it the endpoint is Failed."""
    restart_window_seconds: int = Field(default=3600, ge=60, le=604800)
    """Window over which group recreations are counted."""
    leader_unready_seconds: int = Field(default=300, ge=1, le=86400)
    """A leader that was Ready and stays unready this long while Running (vLLM answers 503 on
    /health once its engine died) breaks its group (timed by the operator: a change applies to
    running groups without replacing them)."""
    readiness_period_seconds: int = Field(default=10, ge=1, le=300)
    """Period of the leader's readiness probe on /health."""
    readiness_failure_threshold: int = Field(default=6, ge=1, le=1000)
    """Readiness failures in a row before the leader leaves the Service (one success brings it
    back); by default 6 x 10 s."""
    liveness_period_seconds: int = Field(default=30, ge=1, le=300)
    """Period of the leader's liveness probe on /health."""
    liveness_failure_threshold: int = Field(default=10, ge=1, le=1000)
    """Liveness failures in a row before the kubelet stops vLLM, which breaks the group; by
    default 10 x 30 s, so a slow /health under load does not cost a reload of the weights."""
    probe_timeout_seconds: int = Field(default=10, ge=1, le=300)
    """How long one probe of /health may take before it counts as failed."""


class RolloutSpec(_Model):
    max_unavailable: IntOrPercentUpTo100 = 1
    """Groups that may be unready during a rollout (a number or a percentage of replicas)."""
    max_surge: IntOrPercent = 0
    """Groups created above replicas during a rollout; reserved capacity rarely has spare GPUs."""
    partition: int = Field(default=0, ge=0, le=512)
    """Only groups with index >= partition are updated (a canary when > 0)."""
    paused: bool = False
    """Freeze the rollout where it is."""
    drain_seconds: int = Field(default=30, ge=0, le=3600)
    """A group the operator replaces or removes leaves the Service this long before it is
    deleted (timed by the operator: a change applies without replacing groups)."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                "!((type(self.maxUnavailable) == int ? self.maxUnavailable == 0 : "
                "self.maxUnavailable.matches('^0+%?$')) && "
                "(type(self.maxSurge) == int ? self.maxSurge == 0 : "
                "self.maxSurge.matches('^0+%?$')))"
            ),
            message="maxUnavailable and maxSurge may not both be 0: the rollout could never start",
            check=lambda r: not (_is_zero(r.max_unavailable) and _is_zero(r.max_surge)),
            field_path=".maxUnavailable",
        ),
    )


class ServiceSpec(_Model):
    type: ServiceType = ServiceType.CLUSTER_IP
    """Type of the client Service."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port of the client Service (the container always listens on 8000)."""


class PodMetadata(_Model):
    """Extra labels and annotations for every pod (scrape configs, meshes, cost tags)."""

    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=MAX_MAP_ENTRIES)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=f"self.labels.all(k, !k.startsWith('{LABEL_PREFIX}'))",
            message=f"labels under {LABEL_PREFIX} belong to the operator",
            check=lambda m: not any(key.startswith(LABEL_PREFIX) for key in m.labels),
            field_path=".labels",
            reason="FieldValueForbidden",
        ),
        # The operator keeps group state in its own pod annotations (admission, drain, deletion,
        # breakage); a user's value there would fake or hide that state.
        Rule(
            cel=f"self.annotations.all(k, !k.startsWith('{LABEL_PREFIX}'))",
            message=f"annotations under {LABEL_PREFIX} belong to the operator",
            check=lambda m: not any(key.startswith(LABEL_PREFIX) for key in m.annotations),
            field_path=".annotations",
            reason="FieldValueForbidden",
        ),
    )


def _pods_divide_gpus(spec: DarwinEndpointSpec) -> bool:
    return spec.engine.gpus_per_group % spec.placement.pods_per_group == 0


def _pods_hold_whole_tp_groups(spec: DarwinEndpointSpec) -> bool:
    gpus_per_pod = spec.engine.gpus_per_group // spec.placement.pods_per_group
    return not _pods_divide_gpus(spec) or gpus_per_pod % spec.engine.tensor_parallel_size == 0


def _over_owned_mount(spec: DarwinEndpointSpec, path: str) -> bool:
    cache = spec.model.cache
    return (
        path == SHM_PATH
        or path.startswith(SHM_PATH + "/")
        or (cache is not None and path == cache.mount_path)
    )


_GPUS_CEL = "(self.engine.tensorParallelSize * self.engine.pipelineParallelSize)"
_PODS_CEL = "self.placement.podsPerGroup"


class DarwinEndpointSpec(_Model):
    replicas: int = Field(default=1, ge=0, le=512)
    """Replica groups; the scale subresource points here."""
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata)
    pod: PodSpecExtras = Field(default_factory=PodSpecExtras)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=f"{_GPUS_CEL} % {_PODS_CEL} == 0",
            message=(
                "podsPerGroup must divide engine.tensorParallelSize x "
                "engine.pipelineParallelSize, the GPUs of one replica group"
            ),
            check=_pods_divide_gpus,
            field_path=".placement.podsPerGroup",
        ),
        Rule(
            cel=(
                f"{_GPUS_CEL} % {_PODS_CEL} != 0 || "
                f"({_GPUS_CEL} / {_PODS_CEL}) % self.engine.tensorParallelSize == 0"
            ),
            message=(
                "each pod must hold whole tensor-parallel groups: tensorParallelSize x "
                "pipelineParallelSize / podsPerGroup must be a multiple of tensorParallelSize "
                "(podsPerGroup must divide pipelineParallelSize)"
            ),
            check=_pods_hold_whole_tp_groups,
            field_path=".placement.podsPerGroup",
        ),
        Rule(
            cel="!(self.placement.gpuResource in self.resources.extra)",
            message="may not name the GPU resource: placement.gpuResource sets it",
            check=lambda s: s.placement.gpu_resource not in s.resources.extra,
            field_path=".resources.extra",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=(
                "self.pod.volumeMounts.all(m, m.mountPath != '/dev/shm' && "
                "!m.mountPath.startsWith('/dev/shm/') && "
                "!(has(self.model.cache) && m.mountPath == self.model.cache.mountPath))"
            ),
            message=(
                "may not mount over /dev/shm or model.cache.mountPath: the operator mounts them"
            ),
            check=lambda s: (
                not any(_over_owned_mount(s, m.mount_path) for m in s.pod.volume_mounts)
            ),
            field_path=".pod.volumeMounts",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="self.rollout.partition <= self.replicas",
            message="rollout.partition may not exceed replicas",
            check=lambda s: s.rollout.partition <= s.replicas,
            field_path=".rollout.partition",
        ),
        Rule(
            cel=(
                "!has(self.model.tokenSecretRef) || "
                f"!self.engine.env.exists(e, e.name in {_cel_list(TOKEN_ENV)})"
            ),
            message=(
                "may not set " + " or ".join(TOKEN_ENV) + " when model.tokenSecretRef is set: "
                "the operator passes the token from that Secret"
            ),
            check=lambda s: (
                s.model.token_secret_ref is None
                or not any(var.name in TOKEN_ENV for var in s.engine.env)
            ),
            field_path=".engine.env",
            reason="FieldValueForbidden",
        ),
    )


class Condition(_Model):
    """metav1.Condition."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class Recreation(_Model):
    """One recreation of a broken group."""

    at: str
    """When the operator decided it (RFC 3339, milliseconds)."""
    reason: str
    """Why: PodFailed, Evicted, MemberDeleted, ContainerRestarted, NodeLost, LeaderUnready or
    StartupTimeout."""


class PhaseTime(_Model):
    """One phase of a group's latest start."""

    phase: str
    since: str
    seconds: int | None = None
    """Time spent in the phase, once the group has left it."""


class GroupStatus(_Model):
    index: int
    revision: str = ""
    phase: str = ""
    pods: int = 0
    pods_ready: int = 0
    restarts: int = 0
    """Recreations of the group since the spec or the restartedAt annotation last changed."""
    message: str = ""
    last_failure: str = ""
    """When and why the group was last recreated."""
    phase_since: str | None = None
    recreations: list[Recreation] = Field(default_factory=list)
    """Recreations within health.restartWindowSeconds, oldest first: what the restart budget
    and the backoff count."""
    last_ready_time: str | None = None
    """When the group last became Ready."""
    startup: list[PhaseTime] = Field(default_factory=list)
    """The phases of the group's latest start (WaitingForCapacity, Scheduling, Starting, Ready)
    and the time spent in each."""
    nodes: list[str] = Field(default_factory=list)
    """With model.cache.staging: the nodes the group's pods last ran on; a recreated group goes
    back to them (warm page cache, local copy) when they are healthy and have the GPUs."""
    whole_incarnation: int | None = None
    """The newest incarnation of the group (its pods' serving.darwin.ai/incarnation label) the
    operator has seen with all its pods: a member of it missing later was removed by someone
    and the group is recreated; a member missing before, a creation cut short, is created
    again and not counted as a recreation."""


class NodeWeights(_Model):
    """With model.cache.staging: the model at a revision on one node (or the shared volume)."""

    node: str = ""
    """The node; empty for a Shared volume."""
    model: str
    revision: str
    state: str
    """Staged (complete, marker written), Downloading, Failed (retried with backoff) or Pruning."""
    since: str | None = None
    message: str = ""
    pod: str = ""
    """The staging pod that is the record of it."""


class HealthFailure(_Model):
    """A group broke more often than health.maxGroupRestarts allows: the endpoint is Failed."""

    group: int
    reasons: list[str] = Field(default_factory=list)
    """Reasons of its recreations within the window and of the last failure, oldest first."""
    message: str = ""
    since: str = ""


class HealthStatus(_Model):
    """What the group restart counts belong to: a change of either field starts them over."""

    generation: int | None = None
    restarted_at: str = ""
    failure: HealthFailure | None = None


class DarwinEndpointStatus(_Model):
    observed_generation: int | None = None
    phase: str = "Pending"  # Pending | Progressing | Ready | Degraded | Failed
    replicas: int = 0
    ready_replicas: int = 0
    ready: str = ""
    """readyReplicas/replicas as text, e.g. 2/2: the READY column of `kubectl get dwe`."""
    updated_replicas: int = 0
    available_replicas: int = 0
    current_revision: str = ""
    update_revision: str = ""
    rollout_started_at: str | None = None
    """When the rollout to updateRevision began; unset when none is under way. Kept here so the
    rollout's duration survives an operator restart."""
    selector: str = ""
    endpoint: str = ""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    groups: list[GroupStatus] = Field(default_factory=list)
    health: HealthStatus | None = None
    weights: list[NodeWeights] = Field(default_factory=list)
    """With model.cache.staging: which nodes hold which model@revision for this endpoint (the
    staging pods, labelled serving.darwin.ai/role=staging, are the record)."""


def _name_ok(metadata: dict[str, Any]) -> bool:
    name = metadata.get("name")
    return (
        isinstance(name, str)
        and len(name) <= MAX_ENDPOINT_NAME_LENGTH
        and re.fullmatch(DNS1035_LABEL_PATTERN, name) is not None
    )


class DarwinEndpoint(_Model):
    api_version: str = API_VERSION
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DarwinEndpointSpec
    status: DarwinEndpointStatus | None = None

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=(
                f"self.metadata.name.size() <= {MAX_ENDPOINT_NAME_LENGTH} && "
                f"self.metadata.name.matches({_cel_str(DNS1035_LABEL_PATTERN)})"
            ),
            message=(
                "must be a DNS-1035 label (lowercase letters, digits and '-', starting with a "
                f"letter) of at most {MAX_ENDPOINT_NAME_LENGTH} characters, so that every pod "
                "and Service name derived from it stays a valid DNS label"
            ),
            check=lambda d: _name_ok(d.metadata),
            field_path=".metadata.name",
        ),
    )
