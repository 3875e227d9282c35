"""The objects a DarwinEndpoint is made of (pure): a group's pods, the Services, the PDB.

Names are deterministic (vocabulary.py), so creating an object twice is harmless. Every object is
owned by the endpoint (controller=true), so deleting the endpoint garbage-collects it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from darwin_operator import engine, observed, rollout, topology, vocabulary
from darwin_operator.api import (
    API_VERSION,
    DEFAULT_CPU_PER_GPU,
    DEFAULT_MEMORY_PER_GPU_GI,
    KIND,
    MAX_STARTUP_TIMEOUT_SECONDS,
    DarwinEndpoint,
    DarwinEndpointSpec,
    Gang,
)
from darwin_operator.vocabulary import (
    ANNOTATION_RESTARTED_AT,
    LABEL_ENDPOINT,
    LABEL_GROUP,
    LABEL_INCARNATION,
    LABEL_RANK,
    LABEL_REVISION,
    LABEL_ROLE,
    LABEL_SERVING,
    LEADER_RANK,
    ROLE_LEADER,
    SCHEDULING_GATE,
)

CONTAINER_NAME = "vllm"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
STARTUP_PROBE_PERIOD_SECONDS = 10
# A liveness kill is of a hung engine: no in-flight request is waited for.
LIVENESS_KILL_GRACE_SECONDS = 30

# Spec fields that never reach a pod: changing them must not roll the groups. Timeouts and
# waits the operator applies itself belong here (README lists what rolls and what does not).
_NOT_IN_PODS = {
    "replicas": True,
    "service": True,
    "rollout": True,  # limits, partition, pause and drainSeconds: all the operator's
    "health": {
        "max_group_restarts",
        "restart_window_seconds",
        "startup_timeout_seconds",
        "download_timeout_seconds",  # times the staging pods, not the group's
        "leader_unready_seconds",
    },
    "placement": {"gang"},
}


@dataclass(frozen=True)
class EndpointRef:
    name: str
    namespace: str
    uid: str


def revision_of(spec: DarwinEndpointSpec, restarted_at: str | None) -> str:
    """A stable short hash of everything the pods are built from, plus the restart request.

    Fields left at their defaults are omitted, so an operator upgrade that adds a field does not
    roll every group.
    """
    pod_inputs = spec.model_dump(mode="json", exclude=_NOT_IN_PODS, exclude_defaults=True)
    payload = {"spec": _without_empty(pod_inputs), "restartedAt": restarted_at or ""}
    return vocabulary.stable_hash(payload, length=10)


def _without_empty(values: dict) -> dict:
    """Drop sections left empty by the exclusions, so they hash as if never written."""
    pruned = {k: _without_empty(v) if isinstance(v, dict) else v for k, v in values.items()}
    return {k: v for k, v in pruned.items() if v != {}}


def owner_reference(ref: EndpointRef) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ref: EndpointRef, name: str, labels: dict[str, str]) -> dict:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(ref)],
    }


def leader_address(ref: EndpointRef, group: int, incarnation: int = 0) -> str:
    """The leader's DNS name through the headless Service (resolves before it is Ready). It
    names one incarnation's leader: workers never rendezvous with a leader of another."""
    host = vocabulary.pod_hostname(ref.name, group, LEADER_RANK, incarnation)
    return f"{host}.{vocabulary.headless_service_name(ref.name)}.{ref.namespace}.svc"


def pod_labels(
    ref: EndpointRef, revision: str, group: int, rank: int, incarnation: int = 0
) -> dict[str, str]:
    labels = {
        LABEL_ENDPOINT: ref.name,
        LABEL_GROUP: str(group),
        LABEL_INCARNATION: str(incarnation),
        LABEL_RANK: str(rank),
        LABEL_ROLE: vocabulary.role_of(rank),
        LABEL_REVISION: revision,
    }
    if rank == LEADER_RANK:
        labels[LABEL_SERVING] = "true"
    return labels


def render_group(
    ref: EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    group: int,
    *,
    gated: bool,
    incarnation: int = 0,
) -> list[dict]:
    """The pods of one incarnation of a replica group in rank order, leader first."""
    shape = topology.shape_of(spec)
    return [
        _pod(ref, spec, revision, group, rank, gated=gated, incarnation=incarnation)
        for rank in shape.ranks
    ]


def _pod(
    ref: EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    group: int,
    rank: int,
    *,
    gated: bool,
    incarnation: int,
) -> dict:
    name = vocabulary.pod_name(ref.name, group, rank, incarnation)
    labels = {**spec.pod_metadata.labels, **pod_labels(ref, revision, group, rank, incarnation)}
    annotations = dict(spec.pod_metadata.annotations)
    metadata = _metadata(ref, name, labels)
    if annotations:
        metadata["annotations"] = annotations
    pod_spec: dict = {
        "hostname": vocabulary.pod_hostname(ref.name, group, rank, incarnation),
        "subdomain": vocabulary.headless_service_name(ref.name),
        "restartPolicy": "Never",  # a broken member breaks the group; the operator recreates it
        "enableServiceLinks": False,  # Service env (e.g. VLLM_PORT) would confuse vLLM
        "terminationGracePeriodSeconds": engine.TERMINATION_GRACE_SECONDS,
        "automountServiceAccountToken": spec.pod.automount_service_account_token,
        "securityContext": _pod_security_context(spec),
        "containers": [_container(ref, spec, group, rank, incarnation)],
        "volumes": _volumes(spec),
    }
    if spec.pod.service_account_name:
        pod_spec["serviceAccountName"] = spec.pod.service_account_name
    if spec.pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in spec.pod.image_pull_secrets]
    node_selector = dict(spec.placement.node_selector)
    if spec.placement.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = spec.placement.gpu_product
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if spec.placement.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.placement.tolerations
        ]
    if spec.placement.topology_key:
        pod_spec["affinity"] = _same_domain_affinity(
            ref, group, incarnation, spec.placement.topology_key
        )
    if spec.placement.priority_class_name:
        pod_spec["priorityClassName"] = spec.placement.priority_class_name
    if gated:
        pod_spec["schedulingGates"] = [{"name": SCHEDULING_GATE}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def _same_domain_affinity(
    ref: EndpointRef, group: int, incarnation: int, topology_key: str
) -> dict:
    # Of its own incarnation only: pods of the one before may sit on a lost node's domain.
    selector = vocabulary.group_selector(ref.name, group, incarnation)
    term = {
        "labelSelector": {"matchLabels": selector},
        "topologyKey": topology_key,
    }
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def held_to(node: str) -> dict:
    """A required node affinity to one node, by name (a field, so no node label is needed)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _container(
    ref: EndpointRef, spec: DarwinEndpointSpec, group: int, rank: int, incarnation: int
) -> dict:
    leader = leader_address(ref, group, incarnation)
    shape = topology.shape_of(spec)
    container: dict = {
        "name": CONTAINER_NAME,
        "image": spec.engine.image,
        "command": engine.container_command(
            spec, endpoint_name=ref.name, rank=rank, leader_address=leader
        ),
        "env": engine.pod_env(
            spec,
            endpoint_name=ref.name,
            group=group,
            rank=rank,
            leader_address=leader,
            group_size=shape.pods_per_group,
        ),
        "resources": _resources(spec),
        "securityContext": _container_security_context(spec),
        "volumeMounts": _volume_mounts(spec),
    }
    # Deleted by someone else (node drain, eviction): clients stop being sent here before
    # SIGTERM, and vLLM then finishes what is in flight (--shutdown-timeout).
    sleep = ["sleep", str(engine.PRE_STOP_SECONDS)]
    container["lifecycle"] = {"preStop": {"exec": {"command": sleep}}}
    if rank == LEADER_RANK:
        container["ports"] = [
            {"name": engine.HTTP_PORT_NAME, "containerPort": engine.HTTP_PORT, "protocol": "TCP"}
        ]
        container.update(_probes(spec))
    return container


def _resources(spec: DarwinEndpointSpec) -> dict:
    """GPUs and extra resources as limits; CPU and memory requested (defaults per GPU), and
    limited to the same for Guaranteed QoS."""
    gpus = topology.shape_of(spec).gpus_per_pod
    cpu = spec.resources.cpu if spec.resources.cpu is not None else DEFAULT_CPU_PER_GPU * gpus
    memory = spec.resources.memory
    if memory is None:
        memory = f"{DEFAULT_MEMORY_PER_GPU_GI * gpus}Gi"
    limits = {spec.placement.gpu_resource: str(gpus)}
    limits.update({name: str(quantity) for name, quantity in spec.resources.extra.items()})
    requests = {**limits, "cpu": str(cpu), "memory": str(memory)}
    if spec.resources.guaranteed:
        limits.update(cpu=str(cpu), memory=str(memory))
    download = download_room(spec)
    if download is not None:
        requests["ephemeral-storage"] = download
    return {"limits": limits, "requests": requests}


# Beside the weights, a pod without a cache keeps vLLM's own caches and its logs on its disk.
DOWNLOAD_HEADROOM_GI = 32


def download_room(spec: DarwinEndpointSpec) -> str | None:
    """Without model.cache every pod downloads the whole model into its own disk: it requests
    model.size and headroom as ephemeral storage, so that the scheduler picks a node that can
    hold it (no request, and a full disk evicts the pod part way through its download)."""
    if spec.model.cache is not None or spec.model.size is None:
        return None
    gib = math.ceil(observed.quantity(spec.model.size) / 2**30) + DOWNLOAD_HEADROOM_GI
    return f"{gib}Gi"


def _pod_security_context(spec: DarwinEndpointSpec) -> dict:
    context: dict = {"seccompProfile": {"type": "RuntimeDefault"}}
    for key, value in (
        ("runAsUser", spec.pod.run_as_user),
        ("runAsGroup", spec.pod.run_as_group),
        ("fsGroup", spec.pod.fs_group),
    ):
        if value is not None:
            context[key] = value
    if spec.pod.run_as_non_root:
        context["runAsNonRoot"] = True
    return context


def _container_security_context(spec: DarwinEndpointSpec) -> dict:
    # Third-party model code runs here (trustRemoteCode): nothing beyond what was asked for.
    capabilities: dict = {"drop": ["ALL"]}
    if spec.pod.capabilities:
        capabilities["add"] = list(spec.pod.capabilities)
    return {"allowPrivilegeEscalation": False, "capabilities": capabilities}


def _probes(spec: DarwinEndpointSpec) -> dict:
    health = spec.health

    def probe(period: int, failures: int) -> dict:
        return {
            "httpGet": {"path": engine.HEALTH_PATH, "port": engine.HTTP_PORT_NAME},
            "periodSeconds": period,
            "timeoutSeconds": health.probe_timeout_seconds,
            "failureThreshold": failures,
        }

    # Nothing listens while the weights load. The startup probe holds the other two off for as
    # long as any startupTimeoutSeconds could be; the operator times the startup itself.
    startup_failures = math.ceil(MAX_STARTUP_TIMEOUT_SECONDS / STARTUP_PROBE_PERIOD_SECONDS)
    liveness = probe(health.liveness_period_seconds, health.liveness_failure_threshold)
    liveness["terminationGracePeriodSeconds"] = LIVENESS_KILL_GRACE_SECONDS
    return {
        "startupProbe": probe(STARTUP_PROBE_PERIOD_SECONDS, startup_failures),
        "readinessProbe": probe(
            health.readiness_period_seconds, health.readiness_failure_threshold
        ),
        "livenessProbe": liveness,
    }


def _volumes(spec: DarwinEndpointSpec) -> list[dict]:
    volumes: list[dict] = [
        {
            "name": "dshm",
            "emptyDir": {"medium": "Memory", "sizeLimit": str(spec.resources.shared_memory)},
        }
    ]
    cache = spec.model.cache
    if cache is not None and cache.persistent_volume_claim:
        claim = {"claimName": cache.persistent_volume_claim}
        if engine.weights_read_only(spec):
            claim["readOnly"] = True
        volumes.append({"name": "weights", "persistentVolumeClaim": claim})
    elif cache is not None and cache.host_path:
        host_path = {"path": cache.host_path, "type": "DirectoryOrCreate"}
        volumes.append({"name": "weights", "hostPath": host_path})
    return volumes + [v.model_dump(by_alias=True, exclude_none=True) for v in spec.pod.volumes]


def _volume_mounts(spec: DarwinEndpointSpec) -> list[dict]:
    mounts: list[dict] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if spec.model.cache is not None:
        mount = {"name": "weights", "mountPath": spec.model.cache.mount_path}
        if engine.weights_read_only(spec):
            mount["readOnly"] = True
        mounts.append(mount)
    for extra in spec.pod.volume_mounts:
        mounts.append(extra.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True))
    return mounts


def render_services(ref: EndpointRef, spec: DarwinEndpointSpec) -> list[dict]:
    """The headless Service (pod DNS names for rendezvous) and the client Service (leaders)."""
    labels = {LABEL_ENDPOINT: ref.name}
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, vocabulary.headless_service_name(ref.name), labels),
        "spec": {
            "clusterIP": "None",
            # Workers must resolve the leader while it is still loading weights.
            "publishNotReadyAddresses": True,
            "selector": {LABEL_ENDPOINT: ref.name},
            "ports": [
                {
                    "name": engine.HTTP_PORT_NAME,
                    "port": engine.HTTP_PORT,
                    "targetPort": engine.HTTP_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, vocabulary.client_service_name(ref.name), labels),
        "spec": {
            "type": spec.service.type.value,
            "selector": {LABEL_ENDPOINT: ref.name, LABEL_ROLE: ROLE_LEADER, LABEL_SERVING: "true"},
            "ports": [
                {
                    "name": engine.HTTP_PORT_NAME,
                    "port": spec.service.port,
                    "targetPort": engine.HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
    return [headless, client]


def render_pdb(ref: EndpointRef, spec: DarwinEndpointSpec, draining: int = 0) -> dict:
    """Voluntary disruptions (node drains, evictions) of the endpoint's pods, in pods.

    A PDB counts pods and a group is down as soon as one member is, so the budget is k pods,
    k being maxUnavailable in groups (resolved as the rollout resolves it): an eviction is
    allowed only while afterwards at most k units are spent, a unit being a pod of groups
    0..replicas-1 that is not Ready or missing, or one of those groups draining (its leader out
    of the Service; `draining` of them). k spent units take at most k groups down. Conservative
    for groups of several pods: a group starting or being replaced spends a unit per pod.
    minAvailable as a number (not maxUnavailable) makes the disruption controller count the
    pods it selects rather than the owner's scale, which is in groups. Draining is counted in
    the number rather than by relabelling: the disruption controller does not look again at a
    budget when a pod stops matching it, but it does when the budget changes. Groups from
    `replicas` up (surge, or leaving on a scale-down) are not counted: they are extra."""
    wanted = [str(group) for group in range(spec.replicas)]
    budget = rollout.limits(spec).max_unavailable
    selector: dict = {"matchLabels": {LABEL_ENDPOINT: ref.name}}
    if wanted:  # `In` needs a value; with no groups wanted nothing is protected anyway
        selector["matchExpressions"] = [{"key": LABEL_GROUP, "operator": "In", "values": wanted}]
    pods = spec.replicas * topology.shape_of(spec).pods_per_group
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ref, vocabulary.pdb_name(ref.name), {LABEL_ENDPOINT: ref.name}),
        "spec": {
            "minAvailable": min(pods, max(0, pods - budget + draining)),
            "selector": selector,
            # A broken group's pods are evictable: they must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def render_endpoint(
    ref: EndpointRef, endpoint: DarwinEndpoint, *, groups: Iterable[int] | None = None
) -> list[dict]:
    """Every object of an endpoint: Services, PDB, then the pods of `groups` (default: all)."""
    spec = endpoint.spec
    annotations = endpoint.metadata.get("annotations") or {}
    revision = revision_of(spec, annotations.get(ANNOTATION_RESTARTED_AT))
    gated = spec.placement.gang == Gang.GATE
    objects = [*render_services(ref, spec), render_pdb(ref, spec)]
    for group in range(spec.replicas) if groups is None else groups:
        objects += render_group(ref, spec, revision, group, gated=gated)
    return objects
