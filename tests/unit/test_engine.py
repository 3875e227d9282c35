"""vLLM command lines and environment, per rank."""

import shlex

import pytest

from darwin_operator import api, engine
from darwin_operator.api import OWNED_VLLM_FLAGS
from tests.specs import spec

LEADER = "darwin-398b-0-0.darwin-398b-pods.llm.svc"


def args_of(endpoint_spec, rank=0):
    return engine.vllm_serve_args(
        endpoint_spec, endpoint_name="darwin-398b", rank=rank, leader_address=LEADER
    )


def flag(args, name):
    return args[args.index(name) + 1]


def test_single_pod_serves_the_whole_group_without_multi_node_flags():
    args = args_of(spec())
    assert args[0] == "FINAL-Bench/Darwin-398B-JGOS"
    assert flag(args, "--tensor-parallel-size") == "2"
    assert flag(args, "--pipeline-parallel-size") == "3"
    names = args[args.index("--served-model-name") + 1 : args.index("--host")]
    assert names == ["darwin-398b", "FINAL-Bench/Darwin-398B-JGOS"]  # the short name and hub id
    assert flag(args, "--port") == "8000" and flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--dtype") == "bfloat16"
    assert flag(args, "--max-model-len") == "18432"
    assert "--trust-remote-code" in args
    for multi_node in ("--nnodes", "--node-rank", "--master-addr", "--headless"):
        assert multi_node not in args
    command = engine.container_command(
        spec(), endpoint_name="darwin-398b", rank=0, leader_address=LEADER
    )
    assert command == ["vllm", "serve", *args]


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_pod_per_stage_joins_the_leader_with_vllms_multi_node_flags(rank):
    staged = spec(placement={"podsPerGroup": 3})
    args = args_of(staged, rank)
    assert flag(args, "--nnodes") == "3"
    assert flag(args, "--node-rank") == str(rank)
    assert flag(args, "--master-addr") == LEADER
    assert flag(args, "--master-port") == str(engine.MASTER_PORT)
    assert flag(args, "--distributed-executor-backend") == "mp"
    assert ("--headless" in args) == (rank != 0)
    command = engine.container_command(
        staged, endpoint_name="darwin-398b", rank=rank, leader_address=LEADER
    )
    assert command[:2] == ["bash", "-c"]
    assert f"getent hosts {LEADER}" in command[2]
    assert command[2].splitlines()[-1] == "exec " + shlex.join(["vllm", "serve", *args])


def test_a_model_path_is_not_served_as_a_name_and_no_name_is_served_twice():
    by_path = args_of(spec(model={"name": "/models/darwin"}))
    assert by_path[by_path.index("--served-model-name") + 1 : by_path.index("--host")] == [
        "darwin-398b"
    ]
    same = args_of(spec(model={"name": "org/m", "servedName": "org/m"}))
    assert same[same.index("--served-model-name") + 1 : same.index("--host")] == ["org/m"]


def test_optional_flags_follow_the_spec_and_extra_args_come_last():
    custom = spec(
        model={
            "servedName": "darwin",
            "revision": "v2",
            "cache": {"persistentVolumeClaim": "weights", "mountPath": "/weights"},
        },
        engine={
            "maxModelLen": None,
            "trustRemoteCode": False,
            "extraArgs": ["--max-num-seqs", "8"],
        },
    )
    args = args_of(custom)
    assert flag(args, "--served-model-name") == "darwin"
    assert flag(args, "--revision") == "v2"
    assert flag(args, "--download-dir") == "/weights"
    assert "--max-model-len" not in args and "--trust-remote-code" not in args
    assert args[-2:] == ["--max-num-seqs", "8"]


def test_env_carries_the_group_identity_then_the_users_variables():
    gated = spec(
        model={"tokenSecretRef": {"name": "hf-token"}},
        engine={"env": [{"name": "NCCL_DEBUG", "value": "INFO"}]},
        health={"startupTimeoutSeconds": 5400},
    )
    env = engine.pod_env(
        gated, endpoint_name="darwin-398b", group=4, rank=1, leader_address=LEADER, group_size=3
    )
    by_name = {var["name"]: var for var in env}
    assert by_name["DARWIN_GROUP_INDEX"]["value"] == "4"
    assert by_name["DARWIN_NODE_RANK"]["value"] == "1"
    assert by_name["DARWIN_GROUP_SIZE"]["value"] == "3"
    assert by_name["DARWIN_LEADER_ADDRESS"]["value"] == LEADER
    # the operator times the startup; vLLM's own wait is the bound of any startup timeout
    assert by_name["VLLM_ENGINE_READY_TIMEOUT_S"]["value"] == "86400"
    assert by_name["VLLM_HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert by_name["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    assert env[-1] == {"name": "NCCL_DEBUG", "value": "INFO"}


def test_no_token_no_hf_token():
    env = engine.pod_env(
        spec(), endpoint_name="e", group=0, rank=0, leader_address=LEADER, group_size=1
    )
    assert "HF_TOKEN" not in {var["name"] for var in env}


def test_every_flag_the_operator_sets_is_protected_from_extra_args():
    """The operator's own flags, apart from the spec-derived ones users may override."""
    user_overridable = {"dtype", "max-model-len", "trust-remote-code", "revision", "download-dir"}
    user_overridable.add("distributed-timeout-seconds")  # extraArgs come last and win
    for endpoint_spec, rank in [
        (spec(), 0),
        (spec(placement={"podsPerGroup": 3}), 1),
    ]:
        flags = {a[2:] for a in args_of(endpoint_spec, rank) if a.startswith("--")}
        assert flags - user_overridable <= set(OWNED_VLLM_FLAGS)


def test_every_variable_the_operator_sets_is_owned():
    env = engine.pod_env(
        spec(model={"tokenSecretRef": {"name": "t"}}),
        endpoint_name="e",
        group=0,
        rank=0,
        leader_address=LEADER,
        group_size=1,
    )
    for var in env:
        assert (
            var["name"].startswith(api.OWNED_ENV_PREFIX)
            or var["name"] in api.OWNED_ENV
            or var["name"] in api.TOKEN_ENV
        )


STAGED_DIR = "/models/staged/FINAL-Bench--Darwin-398B-JGOS/9f2c4e1b"


def env_of(endpoint_spec, rank=0):
    env = engine.pod_env(
        endpoint_spec,
        endpoint_name="darwin-398b",
        group=0,
        rank=rank,
        leader_address=LEADER,
        group_size=1,
    )
    return {var["name"]: var.get("value") for var in env}


@pytest.mark.parametrize("mode", ["PerNode", "Shared"])
def test_staged_weights_load_from_their_directory_offline(mode):
    cache = {"persistentVolumeClaim": "w", "staging": mode}
    staged = spec(model={"revision": "9f2c4e1b", "cache": cache})
    args = args_of(staged)
    assert args[0] == STAGED_DIR  # staging.model_dir: where the staging pod put them
    names = args[args.index("--served-model-name") + 1 : args.index("--host")]
    assert names == ["darwin-398b", "FINAL-Bench/Darwin-398B-JGOS"]  # still the hub id
    assert "--revision" not in args and "--download-dir" not in args
    env = env_of(staged)
    assert env["HF_HUB_OFFLINE"] == "1"
    # vLLM's caches go on a node-local volume, which stays writable; a shared one is read-only
    caches = {"HF_HOME": "/models/hf-home", "VLLM_CACHE_ROOT": "/models/vllm-cache"}
    assert {k: env.get(k) for k in caches} == (
        caches if mode == "PerNode" else dict.fromkeys(caches)
    )
    assert engine.weights_read_only(staged) == (mode == "Shared")


def test_a_cache_vllm_downloads_into_keeps_the_hub_id_and_holds_vllms_caches():
    cached = spec(model={"revision": "main", "cache": {"hostPath": "/mnt/nvme"}})
    args = args_of(cached)
    assert args[0] == "FINAL-Bench/Darwin-398B-JGOS"
    assert flag(args, "--revision") == "main" and flag(args, "--download-dir") == "/models"
    env = env_of(cached)
    assert env["HF_HOME"] == "/models/hf-home" and env["VLLM_CACHE_ROOT"] == "/models/vllm-cache"
    assert "HF_HUB_OFFLINE" not in env
    assert not {"HF_HOME", "VLLM_CACHE_ROOT", "HF_HUB_OFFLINE"} & set(env_of(spec()))


def test_a_path_model_is_taken_as_given_even_with_staging():
    path = spec(model={"name": "/models/mine", "cache": {"hostPath": "/n", "staging": "PerNode"}})
    assert args_of(path)[0] == "/models/mine"
    assert engine.weights_read_only(path) and "HF_HOME" not in env_of(path)


@pytest.mark.parametrize("rank", [0, 1])
def test_multi_pod_groups_wait_for_late_ranks_as_long_as_the_operator_would(rank):
    args = args_of(spec(placement={"podsPerGroup": 3}), rank)
    assert flag(args, "--distributed-timeout-seconds") == str(api.MAX_STARTUP_TIMEOUT_SECONDS)
    assert "--distributed-timeout-seconds" not in args_of(spec())  # one pod: no torch rendezvous
