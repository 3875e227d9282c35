"""The vLLM command line and environment of one pod of a replica group (pure; never imports vllm).

Every pod runs `vllm serve`; with more than one pod per group they form one vLLM instance
through vLLM's own multi-node launcher (--nnodes/--node-rank/--master-addr), workers with
--headless. (Ray is not offered: vLLM's image ships none; api.RAY_REFUSED.)
"""

from __future__ import annotations

import shlex

from darwin_operator.api import MAX_STARTUP_TIMEOUT_SECONDS, DarwinEndpointSpec
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
        spec.model.name,
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
    if engine.max_model_len is not None:
        args += ["--max-model-len", str(engine.max_model_len)]
    if engine.trust_remote_code:
        args.append("--trust-remote-code")
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
