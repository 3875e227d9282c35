"""The vLLM command line and environment of one pod of a replica group (pure; never imports vllm).

Every pod runs `vllm serve`; with more than one pod per group they form one vLLM instance
through vLLM's own multi-node launcher (--nnodes/--node-rank/--master-addr), workers with
--headless. (Ray is not offered: vLLM's image ships none; api.RAY_REFUSED.)
"""

from __future__ import annotations

import shlex

from darwin_operator import staging
from darwin_operator.api import MAX_STARTUP_TIMEOUT_SECONDS, CacheStaging, DarwinEndpointSpec
from darwin_operator.topology import shape_of
from darwin_operator.vocabulary import LEADER_RANK

HTTP_PORT = 8000  # the container's port; the client Service may expose another
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"
MASTER_PORT = 29500  # torch.distributed rendezvous on the leader (mp, several pods)

# Shutdown of a pod someone else deletes (a node drain, an eviction): the preStop sleep lets the
# Service stop sending requests, then SIGTERM makes vLLM refuse new requests and finish those in
# flight for up to --shutdown-timeout (without it vLLM 0.33 aborts them), then a margin to exit.
# Fixed bounds, not drainSeconds: a value baked into the pods would replace every group when it
# changes. The operator's own deletions come after its drain and use a short grace period
# (cluster.OPERATOR_DELETE_GRACE_SECONDS). 600 s in total is what the cluster autoscaler grants
# a pod by default when it empties a node.
TERMINATION_GRACE_SECONDS = 600
PRE_STOP_SECONDS = 5
EXIT_MARGIN_SECONDS = 15
SHUTDOWN_TIMEOUT_SECONDS = TERMINATION_GRACE_SECONDS - PRE_STOP_SECONDS - EXIT_MARGIN_SECONDS

# torch.distributed's clock for the ranks of a multi-pod group (init_process_group and the
# collectives that wait for the slowest rank while the weights load). Torch's 600 s default ends
# a group whose one rank starts late (an image pull, a cold page cache, a download without a
# cache); the operator's own startup clock (health.startupTimeoutSeconds) decides when a slow
# group is given up, so torch's must never fire first. A fixed bound, as for
# VLLM_ENGINE_READY_TIMEOUT_S: a change of the startup timeout replaces no group.
DISTRIBUTED_TIMEOUT_SECONDS = MAX_STARTUP_TIMEOUT_SECONDS
VLLM_CACHE_DIR = "vllm-cache"  # VLLM_CACHE_ROOT under the weights volume (torch.compile cache)


def is_staged(spec: DarwinEndpointSpec) -> bool:
    """Whether the operator stages the weights: vLLM then loads a staged directory offline."""
    cache = spec.model.cache
    return (
        cache is not None
        and cache.staging != CacheStaging.NONE
        and not spec.model.name.startswith("/")
    )


def model_argument(spec: DarwinEndpointSpec) -> str:
    """What vLLM loads: the staged revision's directory, else the hub id or path as given."""
    if is_staged(spec):
        cache = spec.model.cache
        return staging.model_dir(cache.mount_path, spec.model.name, spec.model.revision)
    return spec.model.name


def weights_read_only(spec: DarwinEndpointSpec) -> bool:
    """Whether vLLM's pods mount the weights volume read-only: a path the user filled, or one
    shared volume that staging filled (ReadOnlyMany works; vLLM offline writes nothing there).
    A node-local volume stays writable: vLLM's caches live on it (cache_env)."""
    cache = spec.model.cache
    return spec.model.name.startswith("/") or (
        cache is not None and cache.staging == CacheStaging.SHARED
    )


def served_model_names(spec: DarwinEndpointSpec, endpoint_name: str) -> list[str]:
    """The names the endpoint answers to: the short name first (vLLM reports the first in
    responses and in its metrics' model_name), then the hub id, which clients written against
    the model card send. A model given as a path has no hub id to serve."""
    names = [spec.model.served_name or endpoint_name]
    if not spec.model.name.startswith("/") and spec.model.name not in names:
        names.append(spec.model.name)
    return names


def vllm_serve_args(
    spec: DarwinEndpointSpec, *, endpoint_name: str, rank: int, leader_address: str
) -> list[str]:
    """The arguments after `vllm serve` for one rank of a group."""
    shape = shape_of(spec)
    engine = spec.engine
    args = [
        model_argument(spec),
        "--served-model-name",
        *served_model_names(spec, endpoint_name),
        "--host",
        "0.0.0.0",
        "--port",
        str(HTTP_PORT),
        "--tensor-parallel-size",
        str(engine.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(engine.pipeline_parallel_size),
        "--dtype",
        engine.dtype.value,
        "--shutdown-timeout",
        str(SHUTDOWN_TIMEOUT_SECONDS),
    ]
    if shape.pods_per_group > 1:
        args += [
            "--distributed-executor-backend",
            "mp",
            "--nnodes",
            str(shape.pods_per_group),
            "--node-rank",
            str(rank),
            "--master-addr",
            leader_address,
            "--master-port",
            str(MASTER_PORT),
        ]
        if rank != LEADER_RANK:
            args.append("--headless")
        args += ["--distributed-timeout-seconds", str(DISTRIBUTED_TIMEOUT_SECONDS)]
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.trust_remote_code:
        args.append("--trust-remote-code")
    if not is_staged(spec):  # a staged directory is one revision and is never downloaded into
        if spec.model.revision:
            args += ["--revision", spec.model.revision]
        if spec.model.cache is not None:
            args += ["--download-dir", spec.model.cache.mount_path]
    return args + list(engine.extra_args)


def _wait_for_dns(address: str) -> str:
    # The leader's DNS record appears once its pod has an IP; torch fails fast without it.
    return f"until getent hosts {shlex.quote(address)} >/dev/null; do sleep 2; done"


def container_command(
    spec: DarwinEndpointSpec, *, endpoint_name: str, rank: int, leader_address: str
) -> list[str]:
    """The full command of the vLLM container of one rank."""
    shape = shape_of(spec)
    serve = [
        "vllm",
        "serve",
        *vllm_serve_args(
            spec, endpoint_name=endpoint_name, rank=rank, leader_address=leader_address
        ),
    ]
    if shape.pods_per_group == 1:
        return serve
    return ["bash", "-c", f"{_wait_for_dns(leader_address)}\nexec {shlex.join(serve)}"]


def cache_env(spec: DarwinEndpointSpec) -> list[dict]:
    """vLLM's caches on the weights volume where it is writable, so that a restarted pod reuses
    the compiled graphs (torch.compile under VLLM_CACHE_ROOT) and the hub's files; and offline
    hub access when the weights were staged (a staged directory needs no hub, and offline vLLM
    takes no lock files in the volume)."""
    cache = spec.model.cache
    if cache is None:
        return []
    env = []
    if not weights_read_only(spec):
        env += [
            {"name": "HF_HOME", "value": staging.hf_home(cache.mount_path)},
            {
                "name": "VLLM_CACHE_ROOT",
                "value": f"{cache.mount_path.rstrip('/')}/{VLLM_CACHE_DIR}",
            },
        ]
    if is_staged(spec):
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    return env


def pod_env(
    spec: DarwinEndpointSpec,
    *,
    endpoint_name: str,
    group: int,
    rank: int,
    leader_address: str,
    group_size: int,
) -> list[dict]:
    """Environment of the vLLM container: the operator's variables first, then the user's."""
    env: list[dict] = [
        {"name": "DARWIN_ENDPOINT", "value": endpoint_name},
        {"name": "DARWIN_GROUP_INDEX", "value": str(group)},
        {"name": "DARWIN_NODE_RANK", "value": str(rank)},
        {"name": "DARWIN_GROUP_SIZE", "value": str(group_size)},
        {"name": "DARWIN_LEADER_ADDRESS", "value": leader_address},
        {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        # vLLM's own wait for its engine; the operator enforces health.startupTimeoutSeconds
        # itself, so the pods carry the bound and a change of the timeout replaces no group.
        {"name": "VLLM_ENGINE_READY_TIMEOUT_S", "value": str(MAX_STARTUP_TIMEOUT_SECONDS)},
    ]
    env += cache_env(spec)
    token = spec.model.token_secret_ref
    if token is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}},
            }
        )
    for var in spec.engine.env:
        env.append(var.model_dump(by_alias=True, exclude_none=True))
    return env
