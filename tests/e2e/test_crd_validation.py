"""The generated CRD on a real API server: what it accepts, what it refuses and in which words,
its defaults, status and scale subresources, and the columns of `kubectl get dwe`.

Only the CRD is installed here (no operator), so every verdict is the API server's own:
OpenAPI types and ranges, and the CEL rules compiled and run by kube-apiserver.
"""

from __future__ import annotations

import json
import types
import typing
from functools import partial
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from pydantic import BaseModel

from darwin_operator import api
from darwin_operator.api import DarwinEndpointStatus
from darwin_operator.validation import InvalidEndpoint, validate
from tests.specs import DELETE, endpoint_doc

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("crd_installed")]

REPO = Path(__file__).resolve().parents[2]
REFERENCE_FILE = REPO / "manifests" / "darwin-endpoint.yaml"
MANIFESTS = [REFERENCE_FILE, *sorted(REPO.glob("manifests/examples/*.yaml"))]
REFERENCE = yaml.safe_load(REFERENCE_FILE.read_text())

OWNED_FLAGS = "flags the operator owns"
PODS_DIVIDE = "podsPerGroup must divide"
WHOLE_TP = "each pod must hold whole tensor-parallel groups"
NAME_RULE = 'metadata.name: Invalid value: "object": must be a DNS-1035 label'


# The reference manifest named `name` (default darwin-398b), with changes merged into its spec.
endpoint = partial(endpoint_doc, base=REFERENCE["spec"])

# (case id, the endpoint, a substring the API server's refusal must contain)
BAD = [
    ("replicas-not-a-number", endpoint(replicas="two"), "spec.replicas"),
    ("negative-replicas", endpoint(replicas=-1), "should be greater than or equal to 0"),
    ("engine-not-an-object", endpoint(engine="vllm"), "spec.engine"),
    ("missing-model", endpoint(model=DELETE), "spec.model: Required value"),
    (
        "missing-model-name",
        endpoint(model={"name": DELETE, "revision": "main"}),
        "spec.model.name: Required",
    ),
    ("tp-zero", endpoint(engine={"tensorParallelSize": 0}), "greater than or equal to 1"),
    ("unknown-dtype", endpoint(engine={"dtype": "fp4"}), "Unsupported value"),
    ("unknown-field", endpoint(engine={"tensorParallel": 2}), "unknown field"),
    ("pods-do-not-divide-gpus", endpoint(placement={"podsPerGroup": 4}), PODS_DIVIDE),
    ("pods-split-a-tp-pair", endpoint(placement={"podsPerGroup": 2}), WHOLE_TP),
    (
        "both-rollout-limits-zero",
        endpoint(rollout={"maxUnavailable": 0, "maxSurge": 0}),
        "may not both be 0",
    ),
    (
        "both-rollout-limits-zero-percent",
        endpoint(rollout={"maxUnavailable": "0%", "maxSurge": "0%"}),
        "may not both be 0",
    ),
    ("max-unavailable-over-100", endpoint(rollout={"maxUnavailable": "150%"}), "0% to 100%"),
    ("max-surge-not-a-percentage", endpoint(rollout={"maxSurge": "one"}), "percentage"),
    ("max-unavailable-negative", endpoint(rollout={"maxUnavailable": -1}), "non-negative"),
    ("partition-above-replicas", endpoint(rollout={"partition": 3}), "may not exceed replicas"),
    ("port-equals", endpoint(engine={"extraArgs": ["--port=9000"]}), OWNED_FLAGS),
    (
        "tp-underscores",
        endpoint(engine={"extraArgs": ["--tensor_parallel_size", "4"]}),
        OWNED_FLAGS,
    ),
    ("tp-short-alias", endpoint(engine={"extraArgs": ["-tp", "4"]}), OWNED_FLAGS),
    ("pp-short-equals", endpoint(engine={"extraArgs": ["-pp=3"]}), OWNED_FLAGS),
    ("nnodes-glued-short", endpoint(engine={"extraArgs": ["-n3"]}), OWNED_FLAGS),
    ("node-rank", endpoint(engine={"extraArgs": ["--node-rank", "1"]}), OWNED_FLAGS),
    (
        "master-addr-underscore",
        endpoint(engine={"extraArgs": ["--master_addr=10.0.0.1"]}),
        OWNED_FLAGS,
    ),
    ("master-port", endpoint(engine={"extraArgs": ["--master-port", "1"]}), OWNED_FLAGS),
    ("headless", endpoint(engine={"extraArgs": ["--headless"]}), OWNED_FLAGS),
    ("host", endpoint(engine={"extraArgs": ["--host", "127.0.0.1"]}), OWNED_FLAGS),
    ("served-model-name", endpoint(engine={"extraArgs": ["--served-model-name=x"]}), OWNED_FLAGS),
    (
        "executor-backend",
        endpoint(engine={"extraArgs": ["--distributed-executor-backend=ray"]}),
        OWNED_FLAGS,
    ),
    ("model-flag", endpoint(engine={"extraArgs": ["--model", "other/model"]}), OWNED_FLAGS),
    ("flag-prefix", endpoint(engine={"extraArgs": ["--tensor-parallel", "4"]}), OWNED_FLAGS),
    ("extra-arg-too-long", endpoint(engine={"extraArgs": ["x" * 2049]}), "Too long"),
    ("name-60-characters", endpoint(name="d" * 60), NAME_RULE),
    ("name-starts-with-digit", endpoint(name="398b"), NAME_RULE),
    ("ray", endpoint(engine={"backend": "ray"}), "backend ray is not supported: vLLM's image"),
    (
        "ray-per-stage",
        endpoint(engine={"backend": "ray"}, placement={"podsPerGroup": 3}),
        "spec.engine.backend: Forbidden: backend ray is not supported",
    ),
    ("kueue", endpoint(placement={"gang": "Kueue"}), "gang Kueue is not supported"),
    (
        "gpu-resource-kubernetes-io",
        endpoint(placement={"gpuResource": "kubernetes.io/gpu"}),
        "outside",
    ),
    ("gpu-resource-no-domain", endpoint(placement={"gpuResource": "gpu"}), "placement.gpuResource"),
    (
        "darwin-env",
        endpoint(engine={"env": [{"name": "DARWIN_GROUP_INDEX", "value": "7"}]}),
        "DARWIN_*",
    ),
    (
        "vllm-host-ip-env",
        endpoint(engine={"env": [{"name": "VLLM_HOST_IP", "value": "x"}]}),
        "VLLM_HOST_IP",
    ),
    (
        "hf-token-env-with-secret",
        endpoint(
            model={"tokenSecretRef": {"name": "hf"}},
            engine={"env": [{"name": "HF_TOKEN", "value": "x"}]},
        ),
        "when model.tokenSecretRef is set",
    ),
    (
        "env-value-and-value-from",
        endpoint(engine={"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]}),
        "set value or valueFrom, not both",
    ),
    ("bad-quantity", endpoint(resources={"memory": "lots"}), "quantity"),
    ("negative-cpu", endpoint(resources={"cpu": -1}), "non-negative"),
    (
        "cache-pvc-and-host-path",
        endpoint(model={"cache": {"persistentVolumeClaim": "w", "hostPath": "/w"}}),
        "exactly one of persistentVolumeClaim or hostPath",
    ),
    ("model-name-like-a-flag", endpoint(model={"name": "--model"}), "spec.model.name"),
    (
        "cache-relative-host-path",
        endpoint(model={"cache": {"hostPath": "mnt/nvme", "staging": "PerNode"}}),
        "spec.model.cache.hostPath",
    ),
    (
        "cache-empty-host-path",
        endpoint(model={"cache": {"hostPath": ""}}),
        "spec.model.cache.hostPath",
    ),
    (
        "cache-root-mount-path",
        endpoint(model={"cache": {"hostPath": "/w", "mountPath": "/"}}),
        "mountPath",
    ),
    (
        "cache-dot-dot-path",
        endpoint(model={"cache": {"hostPath": "/mnt/../etc"}}),
        "must not contain '.' or '..' segments",
    ),
    (
        "cache-shared-host-path",
        endpoint(model={"cache": {"hostPath": "/w", "staging": "Shared"}}),
        "staging Shared needs a persistentVolumeClaim",
    ),
    (
        "cache-unknown-staging",
        endpoint(model={"cache": {"hostPath": "/w", "staging": "Eager"}}),
        "PerNode",
    ),
    (
        "download-timeout-too-short",
        endpoint(health={"downloadTimeoutSeconds": 5}),
        "downloadTimeoutSeconds",
    ),
    (
        "operator-label-in-pod-metadata",
        endpoint(podMetadata={"labels": {"serving.darwin.ai/serving": "true"}}),
        "belong to the operator",
    ),
    ("capability-all", endpoint(pod={"capabilities": ["ALL"]}), "one by one"),
    ("capability-cap-prefix", endpoint(pod={"capabilities": ["CAP_SYS_ADMIN"]}), "CAP_ prefix"),
    ("non-root-as-root", endpoint(pod={"runAsNonRoot": True, "runAsUser": 0}), "contradicts"),
    (
        "volume-named-dshm",
        endpoint(pod={"volumes": [{"name": "dshm", "emptyDir": {}}]}),
        "the operator's /dev/shm and weights volumes",
    ),
    (
        "mount-of-the-weights-volume",
        endpoint(pod={"volumeMounts": [{"name": "weights", "mountPath": "/w"}]}),
        "must name a volume of pod.volumes",
    ),
    (
        "mount-over-dev-shm",
        endpoint(
            pod={
                "volumes": [{"name": "a", "emptyDir": {}}],
                "volumeMounts": [{"name": "a", "mountPath": "/dev/shm/x"}],
            }
        ),
        "may not mount over /dev/shm",
    ),
    ("extra-cpu", endpoint(resources={"extra": {"cpu": 2}}), "cpu and memory are set by"),
    (
        "extra-gpu",
        endpoint(resources={"extra": {"nvidia.com/gpu": 2}}),
        "placement.gpuResource sets it",
    ),
    (
        "operator-annotation-in-pod-metadata",
        endpoint(podMetadata={"annotations": {"serving.darwin.ai/deleteReason": "x"}}),
        "annotations under serving.darwin.ai/ belong to the operator",
    ),
]


def create(cluster, namespace: str, body: dict, *, dry_run: bool = True) -> dict:
    return k8s.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        namespace,
        api.PLURAL,
        body,
        dry_run="All" if dry_run else None,
        field_validation="Strict",
    )


def refusal(cluster, namespace: str, body: dict) -> str | None:
    """The API server's message for a refused create, or None when it was accepted."""
    try:
        create(cluster, namespace, body)
    except k8s.ApiException as error:
        assert error.status in (400, 422), error.body
        return json.loads(error.body)["message"]
    return None


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_reference_and_examples_are_accepted(cluster, namespace, path):
    for doc in yaml.safe_load_all(path.read_text()):
        assert refusal(cluster, namespace, doc) is None


def test_bad_endpoints_are_refused_with_a_message_a_person_understands(cluster, namespace):
    assert len(BAD) >= 25
    wrong = []
    for case, body, expected in BAD:
        message = refusal(cluster, namespace, body)
        if message is None or expected not in message:
            wrong.append(f"{case}: expected {expected!r} in {message!r}")
    assert not wrong, "\n".join(wrong)


def test_the_longest_allowed_name_is_accepted(cluster, namespace):
    assert refusal(cluster, namespace, endpoint(name="d" * api.MAX_ENDPOINT_NAME_LENGTH)) is None


def test_defaults_spell_out_the_effective_spec(cluster, namespace):
    minimal = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "minimal"},
        "spec": {"model": {"name": "org/model"}},
    }
    spec = create(cluster, namespace, minimal)["spec"]
    assert spec["replicas"] == 1
    assert spec["engine"]["image"] == "vllm/vllm-openai:v0.33.0"
    assert spec["engine"]["backend"] == "mp"
    assert spec["placement"]["gang"] == "Gate"
    assert spec["rollout"] == {
        "maxUnavailable": 1,
        "maxSurge": 0,
        "partition": 0,
        "paused": False,
        "drainSeconds": 30,
    }
    assert spec["resources"] == {"sharedMemory": "16Gi", "guaranteed": False, "extra": {}}
    assert spec["pod"]["automountServiceAccountToken"] is False
    assert spec["health"]["leaderUnreadySeconds"] == 300
    assert spec["service"] == {"type": "ClusterIP", "port": 8000}


def sample_value(alias: str, annotation) -> object:
    present = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(present) == 1:
        return sample_value(alias, present[0])  # X | None
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return [sample_value(alias, item)]
    kinds = {annotation, *typing.get_args(annotation)} - {type(None)}
    if str in kinds:
        return f"{alias}-value"
    if bool in kinds:
        return True
    if int in kinds:
        return 3
    if float in kinds:
        return 1.5
    (nested,) = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
    return sample(nested)


def sample(model: type[BaseModel]) -> dict:
    """Every field of a status model set to a value the operator could write (none left out)."""
    out = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        out[alias] = sample_value(alias, field.annotation)
    return out


def full_status() -> dict:
    status = sample(DarwinEndpointStatus)
    status.update(
        phase="Ready",
        replicas=2,
        ready="2/2",
        selector="serving.darwin.ai/endpoint=darwin-398b,serving.darwin.ai/role=leader",
    )
    # Valid as the operator would write it, and every field present: the round trip through the
    # API server proves that none is pruned.
    return DarwinEndpointStatus.model_validate(status).model_dump(mode="json", by_alias=True)


def test_status_scale_and_columns(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", str(REFERENCE_FILE))
    written = full_status()
    cluster.kubectl(
        "patch",
        "dwe",
        "darwin-398b",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": written}),
    )
    stored = cluster.json("get", "dwe", "darwin-398b", "-n", namespace)
    assert stored["status"] == written

    cluster.kubectl("scale", "dwe", "darwin-398b", "-n", namespace, "--replicas=3")
    assert cluster.json("get", "dwe", "darwin-398b", "-n", namespace)["spec"]["replicas"] == 3
    scale = json.loads(cluster.kubectl("get", "--raw", _scale_path(namespace)).stdout)
    assert scale["status"]["selector"] == written["selector"]

    table = cluster.kubectl("get", "dwe", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "PHASE", "MODEL", "TP", "PP", "AGE"]
    assert table[1].split()[:6] == [
        "darwin-398b",
        "2/2",
        "Ready",
        "FINAL-Bench/Darwin-398B-JGOS",
        "2",
        "3",
    ]
    wide = cluster.kubectl("get", "darwinendpoints", "-n", namespace, "-o", "wide").stdout
    assert "PODS/GROUP" in wide.splitlines()[0]


def test_scale_is_validated_like_the_spec(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", str(REFERENCE_FILE))
    result = cluster.kubectl(
        "scale", "dwe", "darwin-398b", "-n", namespace, "--replicas=513", check=False
    )
    assert result.returncode != 0
    assert "less than or equal to 512" in result.stderr
    assert cluster.json("get", "dwe", "darwin-398b", "-n", namespace)["spec"]["replicas"] == 2


def _scale_path(namespace: str) -> str:
    return f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/{api.PLURAL}/darwin-398b/scale"


# Arguments on both sides of the owned-flag rule, and values on both sides of the other rules.
EXTRA_ARGS = [
    "--port=9000",
    "--port",
    "--po",
    "--tensor_parallel_size",
    "--tensor-parallel",
    "-tp=2",
    "-t",
    "-p",
    "-pp",
    "-n",
    "-n2",
    "-r0",
    "--nnodes=2",
    "--node_rank",
    "--master-addr=x",
    "--headless",
    "--host=::",
    "--uds=/s",
    "--config=c.yaml",
    "--conf",
    "--served_model_name=x",
    "--shutdown_timeout=5",
    "--shutdown",
    "--model",
    "--",
    "--max-num-seqs",
    "--max_num_seqs=8",
    "--model-impl",
    "--config-format=hf",
    "--gpu-memory-utilization=0.9",
    "--port-extra",
    "-q",
    "-O3",
    "-1",
    "-",
    "8",
    '{"a": 1}',
]
OTHER_VALUES = [
    {"rollout": {"maxUnavailable": 0, "maxSurge": "0%"}},
    {"rollout": {"maxUnavailable": "00%", "maxSurge": 0}},
    {"rollout": {"maxUnavailable": 0, "maxSurge": 1}},
    {"rollout": {"maxUnavailable": "100%", "maxSurge": "250%"}},
    {"rollout": {"maxUnavailable": "101%"}},
    {"rollout": {"maxUnavailable": "1"}},
    {"resources": {"cpu": "500m", "memory": "1.5Gi", "sharedMemory": 0}},
    {"resources": {"cpu": "+1"}},
    {"resources": {"memory": "1e3"}},
    {"placement": {"podsPerGroup": 3}},
    {"placement": {"podsPerGroup": 6}},
    {"placement": {"gpuResource": "requests.nvidia.com/gpu"}},
    {"placement": {"gpuResource": "example.com/gpu"}},
    {"engine": {"env": [{"name": "DARWIN", "value": "x"}, {"name": "VLLM_PORTS", "value": "x"}]}},
    {"engine": {"env": [{"name": "HF_TOKEN", "value": "x"}]}},
    {"pod": {"capabilities": ["IPC_LOCK", "NET_RAW"]}},
    {"pod": {"capabilities": ["CAP_NET_RAW"]}},
    {"pod": {"runAsNonRoot": True, "runAsUser": 0}},
    {"pod": {"runAsNonRoot": True}},
    {"pod": {"volumes": [{"name": "weights", "emptyDir": {}}]}},
    {"pod": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}]}},
    {"pod": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "secret": {}}]}},
    {
        "pod": {
            "volumes": [{"name": "a", "emptyDir": {}}],
            "volumeMounts": [{"name": "a", "mountPath": "/x"}, {"name": "a", "mountPath": "/x"}],
        }
    },
    {
        "pod": {
            "volumes": [{"name": "a", "emptyDir": {}}],
            "volumeMounts": [{"name": "a", "mountPath": "/dev/shmx"}],
        }
    },
    {"resources": {"extra": {"rdma/hca_shared_devices_a": 1, "hugepages-2Mi": "1Gi"}}},
    {"resources": {"extra": {"memory": 1}}},
    {"resources": {"extra": {"nvidia.com/gpu": 1}}},
    {"resources": {"extra": {"Bad Name": 1}}},
]


def test_the_python_mirror_agrees_with_the_api_server(cluster, namespace):
    cases = [{"engine": {"extraArgs": [arg]}} for arg in EXTRA_ARGS] + OTHER_VALUES
    disagree = []
    for changes in cases:
        body = endpoint("mirror", **changes)
        try:
            validate(body)
            python_ok = True
        except InvalidEndpoint:
            python_ok = False
        server_ok = refusal(cluster, namespace, body) is None
        if python_ok != server_ok:
            disagree.append(f"{changes}: python {python_ok}, API server {server_ok}")
    assert not disagree, "\n".join(disagree)
