"""The vLLM command line and environment of one pod of a replica group (pure; never imports vllm).

mp backend: every pod runs `vllm serve`; with more than one pod per group they form one vLLM
instance through vLLM's own multi-node launcher (--nnodes/--node-rank/--master-addr), workers
with --headless. ray backend: the leader starts a Ray head, waits until the workers' GPUs have
joined and runs `vllm serve --distributed-executor-backend ray`; workers only join Ray.
"""

from __future__ import annotations

import shlex

from darwin_operator.api import Backend, DarwinEndpointSpec
from darwin_operator.topology import shape_of
from darwin_operator.vocabulary import LEADER_RANK

HTTP_PORT = 8000  # the container's port; the client Service may expose another
HTTP_PORT_NAME = "http"
HEALTH_PATH = "/health"
MASTER_PORT = 29500  # torch.distributed rendezvous on the leader (mp, several pods)
RAY_PORT = 6379


def served_model_name(spec: DarwinEndpointSpec, endpoint_name: str) -> str:
    return spec.model.served_name or endpoint_name


def vllm_serve_args(
    spec: DarwinEndpointSpec, *, endpoint_name: str, rank: int, leader_address: str
) -> list[str]:
    """The arguments after `vllm serve` for a rank that runs it (mp: every rank; ray: leader)."""
    shape = shape_of(spec)
    engine = spec.engine
    if engine.backend == Backend.RAY and rank != LEADER_RANK:
        raise ValueError("with backend ray only the leader runs vllm serve")
    args = [
        spec.model.name,
        "--served-model-name",
        served_model_name(spec, endpoint_name),
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
    ]
    if engine.backend == Backend.RAY:
        args += ["--distributed-executor-backend", "ray"]
    elif shape.pods_per_group > 1:
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
    # The leader's DNS record appears once its pod has an IP; torch and Ray fail fast without it.
    return f"until getent hosts {shlex.quote(address)} >/dev/null; do sleep 2; done"


def container_command(
    spec: DarwinEndpointSpec, *, endpoint_name: str, rank: int, leader_address: str
) -> list[str]:
    """The full command of the vLLM container of one rank."""
    shape = shape_of(spec)
    if spec.engine.backend == Backend.RAY:
        return ["bash", "-c", _ray_script(spec, endpoint_name, rank, leader_address)]
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


def _ray_script(spec: DarwinEndpointSpec, endpoint_name: str, rank: int, leader: str) -> str:
    shape = shape_of(spec)
    node = f'--node-ip-address="$VLLM_HOST_IP" --num-gpus={shape.gpus_per_pod}'
    if rank != LEADER_RANK:
        return "\n".join(
            [
                _wait_for_dns(leader),
                f"exec ray start --address={shlex.quote(f'{leader}:{RAY_PORT}')} {node} --block",
            ]
        )
    serve = [
        "vllm",
        "serve",
        *vllm_serve_args(spec, endpoint_name=endpoint_name, rank=rank, leader_address=leader),
    ]
    gpus_joined = (
        "import ray, sys; ray.init(address='auto', logging_level='ERROR'); "
        f"sys.exit(0 if ray.cluster_resources().get('GPU', 0) >= {shape.gpus} else 1)"
    )
    return "\n".join(
        [
            "set -e",
            f"ray start --head --port={RAY_PORT} {node} --disable-usage-stats",
            f"until python3 -c {shlex.quote(gpus_joined)}; do sleep 5; done",
            f"exec {shlex.join(serve)}",
        ]
    )


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
        {
            "name": "VLLM_ENGINE_READY_TIMEOUT_S",
            "value": str(spec.health.startup_timeout_seconds),
        },
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
