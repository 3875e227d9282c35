"""Offline validation: the same rules, in the same words, as the CRD's CEL."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import api
from darwin_operator.api import _owned_flag
from darwin_operator.validation import InvalidEndpoint, validate
from tests.specs import endpoint_doc

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted(
    [REPO / "manifests/darwin-endpoint.yaml", *REPO.glob("manifests/examples/*.yaml")]
)


def problems_of(doc) -> list[str]:
    with pytest.raises(InvalidEndpoint) as caught:
        validate(doc)
    return caught.value.problems


def message_of(rule_owner, index=0) -> str:
    return rule_owner.rules[index].message


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid(path):
    for doc in yaml.safe_load_all(path.read_text()):
        validate(doc)


@pytest.mark.parametrize(
    ("changes", "where", "message"),
    [
        (
            {"placement": {"podsPerGroup": 4}},
            "spec.placement.podsPerGroup",
            message_of(api.DarwinEndpointSpec, 0),
        ),
        (
            {"placement": {"podsPerGroup": 2}},
            "spec.placement.podsPerGroup",
            message_of(api.DarwinEndpointSpec, 1),
        ),
        ({"engine": {"backend": "ray"}}, "spec.engine.backend", api.RAY_REFUSED.message),
        ({"placement": {"gang": "Kueue"}}, "spec.placement.gang", api.KUEUE_REFUSED.message),
        ({"rollout": {"partition": 3}}, "spec.rollout.partition", "may not exceed replicas"),
        (
            {
                "model": {"tokenSecretRef": {"name": "t"}},
                "engine": {"env": [{"name": "HF_TOKEN", "value": "x"}]},
            },
            "spec.engine.env",
            next(r.message for r in api.DarwinEndpointSpec.rules if r.field_path == ".engine.env"),
        ),
        (
            {"rollout": {"maxUnavailable": 0, "maxSurge": 0}},
            "spec.rollout.maxUnavailable",
            "may not both be 0",
        ),
        (
            {"rollout": {"maxUnavailable": "0%", "maxSurge": "0%"}},
            "spec.rollout.maxUnavailable",
            "may not both be 0",
        ),
        ({"rollout": {"maxUnavailable": "150%"}}, "spec.rollout.maxUnavailable", "0% to 100%"),
        ({"rollout": {"maxUnavailable": -1}}, "spec.rollout.maxUnavailable", "non-negative"),
        ({"rollout": {"maxSurge": "1"}}, "spec.rollout.maxSurge", "percentage"),
        (
            {"engine": {"env": [{"name": "DARWIN_GROUP_INDEX", "value": "9"}]}},
            "spec.engine.env",
            "DARWIN_*",
        ),
        (
            {"engine": {"env": [{"name": "VLLM_HOST_IP", "value": "1.2.3.4"}]}},
            "spec.engine.env",
            "VLLM_HOST_IP",
        ),
        (
            {"engine": {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]}},
            "spec.engine.env[0]",
            "not both",
        ),
        (
            {"placement": {"gpuResource": "kubernetes.io/gpu"}},
            "spec.placement.gpuResource",
            "outside kubernetes.io",
        ),
        ({"placement": {"gpuResource": "gpu"}}, "spec.placement.gpuResource", "pattern"),
        (
            {"model": {"cache": {"persistentVolumeClaim": "a", "hostPath": "/b"}}},
            "spec.model.cache",
            "exactly one",
        ),
        ({"model": {"cache": {}}}, "spec.model.cache", "exactly one"),
        ({"model": {"cache": {"hostPath": "mnt/w"}}}, "spec.model.cache.hostPath", "pattern"),
        ({"model": {"cache": {"hostPath": ""}}}, "spec.model.cache.hostPath", "at least 2"),
        ({"model": {"cache": {"hostPath": "/a/../b"}}}, "spec.model.cache.hostPath", "'..'"),
        (
            {"model": {"cache": {"hostPath": "/w", "mountPath": "/"}}},
            "spec.model.cache.mountPath",
            "at least 2",
        ),
        (
            {"model": {"cache": {"hostPath": "/w", "staging": "Shared"}}},
            "spec.model.cache.staging",
            "staging Shared needs a persistentVolumeClaim",
        ),
        ({"resources": {"memory": "lots"}}, "spec.resources.memory", "quantity"),
        ({"resources": {"cpu": "-2"}}, "spec.resources.cpu", "non-negative"),
        ({"replicas": -1}, "spec.replicas", "greater than or equal to 0"),
        ({"replicas": "2"}, "spec.replicas", "valid integer"),
        ({"engine": {"tensorParallelSize": 0}}, "spec.engine.tensorParallelSize", "greater than"),
        ({"engine": {"dtype": "fp4"}}, "spec.engine.dtype", "bfloat16"),
        ({"model": {"name": "--model"}}, "spec.model.name", "pattern"),
        (
            {"podMetadata": {"labels": {"serving.darwin.ai/role": "x"}}},
            "spec.podMetadata.labels",
            "belong to the operator",
        ),
        (
            {"podMetadata": {"annotations": {"serving.darwin.ai/broken": "x"}}},
            "spec.podMetadata.annotations",
            "annotations under serving.darwin.ai/ belong to the operator",
        ),
        (
            {"engine": {"extraArgs": ["--port=9000"]}},
            "spec.engine.extraArgs",
            "flags the operator owns",
        ),
        ({"surprise": True}, "spec.surprise", "Extra inputs"),
        ({"pod": {"capabilities": ["ALL"]}}, "spec.pod.capabilities", "one by one"),
        ({"pod": {"capabilities": ["CAP_IPC_LOCK"]}}, "spec.pod.capabilities", "CAP_ prefix"),
        ({"pod": {"runAsNonRoot": True, "runAsUser": 0}}, "spec.pod.runAsUser", "contradicts"),
        (
            {"pod": {"volumes": [{"name": "dshm", "emptyDir": {}}]}},
            "spec.pod.volumes",
            "the operator's /dev/shm and weights volumes",
        ),
        (
            {"pod": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]}},
            "spec.pod.volumes",
            "must be unique",
        ),
        (
            {"pod": {"volumeMounts": [{"name": "weights", "mountPath": "/w"}]}},
            "spec.pod.volumeMounts",
            "must name a volume of pod.volumes",
        ),
        (
            {
                "pod": {
                    "volumes": [{"name": "a", "emptyDir": {}}],
                    "volumeMounts": [{"name": "a", "mountPath": "/dev/shm"}],
                }
            },
            "spec.pod.volumeMounts",
            "may not mount over /dev/shm",
        ),
        (
            {"resources": {"extra": {"memory": "1Gi"}}},
            "spec.resources.extra",
            "cpu and memory are set by resources.cpu",
        ),
        (
            {"resources": {"extra": {"nvidia.com/gpu": 1}}},
            "spec.resources.extra",
            "placement.gpuResource sets it",
        ),
    ],
)
def test_invalid_specs_are_rejected_in_the_crds_words(changes, where, message):
    problems = problems_of(endpoint_doc(**changes))
    assert any(p.startswith(f"{where}: ") and message in p for p in problems), problems


def test_model_is_required():
    doc = endpoint_doc()
    del doc["spec"]["model"]
    assert problems_of(doc) == ["spec.model: Field required"]


@pytest.mark.parametrize("name", ["a" * 56, "Darwin", "9lives", "dots.not.allowed", "trailing-"])
def test_endpoint_names_that_would_break_derived_names(name):
    assert problems_of(endpoint_doc(name=name)) == [
        f"metadata.name: {message_of(api.DarwinEndpoint)}"
    ]


def test_longest_allowed_name_passes():
    validate(endpoint_doc(name="a" * api.MAX_ENDPOINT_NAME_LENGTH))


def test_wrong_kind_and_missing_name():
    doc = endpoint_doc()
    doc["kind"] = "Deployment"
    del doc["metadata"]["name"]
    problems = problems_of(doc)
    assert any("apiVersion/kind" in p for p in problems)
    assert "metadata.name: Required value" in problems


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        endpoint_doc(
            placement={"podsPerGroup": 4},
            engine={"extraArgs": ["-tp", "4"], "env": [{"name": "DARWIN_X"}]},
        )
    )
    assert len(problems) == 3


@pytest.mark.parametrize(
    ("arg", "owned"),
    [
        ("--port=9000", "--port"),
        ("--port", "--port"),
        ("--tensor_parallel_size", "--tensor-parallel-size"),
        ("--tensor-parallel-size=4", "--tensor-parallel-size"),
        ("--tensor-parallel", "--tensor-parallel-size"),  # argparse accepts unique prefixes
        ("--pipeline_parallel_size=2", "--pipeline-parallel-size"),
        ("-tp", "-tp"),
        ("-tp=4", "-tp"),
        ("-t", "-tp"),
        ("-pp", "-pp"),
        ("-n", "-n"),
        ("-n3", "-n"),
        ("-r1", "-r"),
        ("--nnodes=2", "--nnodes"),
        ("--node_rank", "--node-rank"),
        ("--master-addr=x", "--master-addr"),
        ("--master_port", "--master-port"),
        ("--headless", "--headless"),
        ("--host=::", "--host"),
        ("--served-model-name=x", "--served-model-name"),
        ("--distributed_executor_backend=ray", "--distributed-executor-backend"),
        ("--model", "--model"),
        ("--uds=/tmp/s", "--uds"),
        ("--config=x.yaml", "--config"),
        ("--shutdown_timeout=1", "--shutdown-timeout"),
        ("--", "--tensor-parallel-size"),
    ],
)
def test_owned_flags_in_any_spelling(arg, owned):
    assert _owned_flag(arg) == owned
    problems = problems_of(endpoint_doc(engine={"extraArgs": [arg]}))
    assert problems == [f"spec.engine.extraArgs: {api.EngineSpec.rules[0].message}"]


@pytest.mark.parametrize(
    "arg",
    [
        "--max-num-seqs",
        "--max_num_seqs=8",
        "--gpu-memory-utilization=0.9",
        "--enable-expert-parallel",
        "--model-impl",  # not a prefix of --model
        "--config-format=hf",
        "--port-extra",  # would be an error in vLLM, but it does not set --port
        "-q",
        "-O3",
        "-1",
        "-",
        "8",
        '{"a": 1}',
    ],
)
def test_other_arguments_pass(arg):
    assert _owned_flag(arg) is None
    validate(endpoint_doc(engine={"extraArgs": [arg]}))


@given(st.sampled_from(api.OWNED_VLLM_FLAGS), st.data())
def test_every_prefix_and_spelling_of_an_owned_flag_is_refused(flag, data):
    prefix = flag[: data.draw(st.integers(1, len(flag)))]
    spelled = prefix.replace("-", data.draw(st.sampled_from(["-", "_"])))
    value = data.draw(st.sampled_from(["", "=1", "=a=b"]))
    assert _owned_flag(f"--{spelled}{value}") is not None


@given(tp=st.integers(1, 8), pp=st.integers(1, 8), pods=st.integers(1, 8))
def test_a_group_shape_is_valid_exactly_when_pods_split_the_pipeline_evenly(tp, pp, pods):
    doc = endpoint_doc(
        engine={"tensorParallelSize": tp, "pipelineParallelSize": pp},
        placement={"podsPerGroup": pods},
    )
    try:
        validate(doc)
        valid = True
    except InvalidEndpoint:
        valid = False
    assert valid == (pp % pods == 0)
