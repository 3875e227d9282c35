"""Pods, Services and PDB rendered from a spec; the revision hash."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import engine, render, vocabulary
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.render import leader_address, render_group, render_pdb, render_services
from tests.specs import REF, spec, spec_doc

REVISION = "0123456789"


def pods_of(endpoint_spec, group=0, gated=True):
    return render_group(REF, endpoint_spec, REVISION, group, gated=gated)


def container(pod):
    (only,) = pod["spec"]["containers"]
    return only


def test_reference_group_is_one_leader_with_six_gpus():
    (pod,) = pods_of(spec(), group=1)
    assert pod["metadata"]["name"] == "darwin-398b-1-0"
    assert pod["metadata"]["namespace"] == "llm"
    assert pod["metadata"]["labels"] == {
        "serving.darwin.ai/endpoint": "darwin-398b",
        "serving.darwin.ai/group": "1",
        "serving.darwin.ai/incarnation": "0",
        "serving.darwin.ai/rank": "0",
        "serving.darwin.ai/role": "leader",
        "serving.darwin.ai/revision": REVISION,
        "serving.darwin.ai/serving": "true",
    }
    resources = container(pod)["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "6"}
    assert resources["requests"]["nvidia.com/gpu"] == "6"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-B200"}
    assert pod["spec"]["hostname"] == "darwin-398b-1-0"
    assert pod["spec"]["subdomain"] == "darwin-398b-pods"
    assert pod["spec"]["enableServiceLinks"] is False


def test_a_later_incarnation_has_its_own_names_and_its_workers_find_only_its_leader():
    pods = render.render_group(
        REF, spec(placement={"podsPerGroup": 3}), REVISION, 2, gated=True, incarnation=4
    )
    assert [p["metadata"]["name"] for p in pods] == [f"darwin-398b-2-{r}-4" for r in range(3)]
    assert [p["spec"]["hostname"] for p in pods] == [f"darwin-398b-2-{r}-4" for r in range(3)]
    assert {p["metadata"]["labels"]["serving.darwin.ai/incarnation"] for p in pods} == {"4"}
    leader = "darwin-398b-2-0-4.darwin-398b-pods.llm.svc"
    for pod in pods:
        env = {e["name"]: e.get("value") for e in container(pod)["env"]}
        assert env["DARWIN_LEADER_ADDRESS"] == leader
    assert f"--master-addr {leader}" in " ".join(container(pods[1])["command"])


def test_pod_per_stage_group_has_a_leader_and_headless_workers():
    pods = pods_of(spec(placement={"podsPerGroup": 3}), group=2)
    assert [p["metadata"]["name"] for p in pods] == [f"darwin-398b-2-{r}" for r in range(3)]
    roles = [p["metadata"]["labels"]["serving.darwin.ai/role"] for p in pods]
    assert roles == ["leader", "worker", "worker"]
    assert [p["metadata"]["labels"].get("serving.darwin.ai/serving") for p in pods] == [
        "true",
        None,
        None,
    ]
    for rank, pod in enumerate(pods):
        assert container(pod)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        script = container(pod)["command"][2]
        assert f"--node-rank {rank}" in script
        assert ("--headless" in script) == (rank > 0)
        env = {var["name"]: var.get("value") for var in container(pod)["env"]}
        assert env["DARWIN_NODE_RANK"] == str(rank) and env["DARWIN_GROUP_INDEX"] == "2"
        assert env["DARWIN_LEADER_ADDRESS"] == "darwin-398b-2-0.darwin-398b-pods.llm.svc"


def test_only_the_leader_serves_http_and_has_probes():
    leader, worker, _ = pods_of(spec(placement={"podsPerGroup": 3}))
    assert container(leader)["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"}
    ]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(leader)[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert probe not in container(worker)
    assert "ports" not in container(worker)


@pytest.mark.parametrize("timeout", [10, 3600, 3605, 86400])
def test_startup_probe_outlasts_the_startup_timeout(timeout):
    (pod,) = pods_of(spec(health={"startupTimeoutSeconds": timeout}))
    probe = container(pod)["startupProbe"]
    assert probe["failureThreshold"] * probe["periodSeconds"] >= timeout


def test_probes_are_generous_by_default_and_follow_spec_health():
    (pod,) = pods_of(spec())
    readiness, liveness = container(pod)["readinessProbe"], container(pod)["livenessProbe"]
    # a minute of failures before the leader leaves the Service, five before vLLM is stopped
    assert readiness["periodSeconds"] * readiness["failureThreshold"] == 60
    assert liveness["periodSeconds"] * liveness["failureThreshold"] == 300
    assert readiness["timeoutSeconds"] == liveness["timeoutSeconds"] == 10
    assert liveness["terminationGracePeriodSeconds"] == 30  # a hung engine is not waited for
    tuned = spec(
        health={
            "readinessPeriodSeconds": 5,
            "readinessFailureThreshold": 4,
            "livenessPeriodSeconds": 60,
            "livenessFailureThreshold": 20,
            "probeTimeoutSeconds": 30,
        }
    )
    (pod,) = pods_of(tuned)
    readiness, liveness = container(pod)["readinessProbe"], container(pod)["livenessProbe"]
    assert (readiness["periodSeconds"], readiness["failureThreshold"]) == (5, 4)
    assert (liveness["periodSeconds"], liveness["failureThreshold"]) == (60, 20)
    assert readiness["timeoutSeconds"] == liveness["timeoutSeconds"] == 30


def test_pods_do_not_depend_on_what_the_operator_times_itself():
    """drainSeconds and the startup and unready timeouts are the operator's: the same pods."""
    base = pods_of(spec(placement={"podsPerGroup": 3}))
    for changes in (
        {"rollout": {"drainSeconds": 600}},
        {"rollout": {"drainSeconds": 0}},
        {"health": {"startupTimeoutSeconds": 10, "leaderUnreadySeconds": 1}},
    ):
        assert pods_of(spec(placement={"podsPerGroup": 3}, **changes)) == base


def test_shutdown_lets_in_flight_requests_finish_within_the_grace_period():
    for pod in pods_of(spec(placement={"podsPerGroup": 3})):
        c = container(pod)
        sleep = c["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep == ["sleep", str(engine.PRE_STOP_SECONDS)]
        serve = c["command"][-1].split() if c["command"][0] == "bash" else c["command"]
        shutdown = int(serve[serve.index("--shutdown-timeout") + 1])
        assert shutdown > 0
        assert pod["spec"]["terminationGracePeriodSeconds"] > int(sleep[1]) + shutdown


def test_gate_only_when_gated():
    (gated,) = pods_of(spec(), gated=True)
    assert gated["spec"]["schedulingGates"] == [{"name": vocabulary.SCHEDULING_GATE}]
    (ungated,) = pods_of(spec(), gated=False)
    assert "schedulingGates" not in ungated["spec"]


def test_owned_by_the_endpoint_as_controller():
    objects = [*pods_of(spec()), *render_services(REF, spec()), render_pdb(REF, spec())]
    for obj in objects:
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "serving.darwin.ai/v1alpha1",
                "kind": "DarwinEndpoint",
                "name": "darwin-398b",
                "uid": REF.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_volumes_shared_memory_and_pvc_cache():
    cached = spec(
        model={"cache": {"persistentVolumeClaim": "model-cache"}},
        resources={"sharedMemory": "64Gi"},
    )
    (pod,) = pods_of(cached)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "model-cache"}
    mounts = {m["name"]: m for m in container(pod)["volumeMounts"]}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["weights"] == {"name": "weights", "mountPath": "/models"}  # vLLM downloads here


def test_weights_given_as_a_path_are_mounted_read_only():
    from_path = spec(
        model={"name": "/models/darwin-398b", "cache": {"persistentVolumeClaim": "weights"}}
    )
    (pod,) = pods_of(from_path)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"]["readOnly"] is True
    assert {m["name"]: m for m in container(pod)["volumeMounts"]}["weights"]["readOnly"] is True


def test_host_path_cache():
    (pod,) = pods_of(spec(model={"cache": {"hostPath": "/mnt/nvme/models"}}))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["weights"]["hostPath"]["path"] == "/mnt/nvme/models"


def test_placement_extras():
    placed = spec(
        placement={
            "podsPerGroup": 3,
            "nodeSelector": {"pool": "b200"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "topologyKey": "darwin.test/rack",
            "priorityClassName": "inference",
            "gpuResource": "example.com/gpu",
        },
        resources={"cpu": "16", "memory": "256Gi"},
        podMetadata={"labels": {"team": "llm"}, "annotations": {"a": "b"}},
    )
    leader = pods_of(placed, group=3)[0]
    pod_spec = leader["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "b200", "nvidia.com/gpu.product": "NVIDIA-B200"}
    assert pod_spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    (term,) = pod_spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {
        "labelSelector": {
            "matchLabels": {
                "serving.darwin.ai/endpoint": "darwin-398b",
                "serving.darwin.ai/group": "3",
                "serving.darwin.ai/incarnation": "0",  # not the pods of another incarnation
            }
        },
        "topologyKey": "darwin.test/rack",
    }
    assert pod_spec["priorityClassName"] == "inference"
    requests = container(leader)["resources"]["requests"]
    assert requests == {"example.com/gpu": "2", "cpu": "16", "memory": "256Gi"}
    assert leader["metadata"]["labels"]["team"] == "llm"
    assert leader["metadata"]["annotations"] == {"a": "b"}


def test_services():
    headless, client = render_services(REF, spec(service={"type": "LoadBalancer", "port": 80}))
    assert headless["metadata"]["name"] == "darwin-398b-pods"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == {"serving.darwin.ai/endpoint": "darwin-398b"}
    assert client["metadata"]["name"] == "darwin-398b"
    assert client["spec"]["type"] == "LoadBalancer"
    assert client["spec"]["selector"] == {
        "serving.darwin.ai/endpoint": "darwin-398b",
        "serving.darwin.ai/role": "leader",
        "serving.darwin.ai/serving": "true",
    }
    (port,) = client["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, "http")


def test_pdb_covers_every_member_of_the_wanted_groups_in_pods():
    pdb = render_pdb(REF, spec(replicas=4, placement={"podsPerGroup": 3}))
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == "darwin-398b-members"
    # 4 groups x 3 pods, one pod (so one group) may be down: 11 of 12 must stay available
    assert pdb["spec"]["minAvailable"] == 11 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"] == {
        "matchLabels": {"serving.darwin.ai/endpoint": "darwin-398b"},
        "matchExpressions": [
            {"key": "serving.darwin.ai/group", "operator": "In", "values": ["0", "1", "2", "3"]}
        ],
    }
    # maxUnavailable resolved as the rollout resolves it: a PDB would round 30% of 4 up to 2
    budget = render_pdb(REF, spec(replicas=4, rollout={"maxUnavailable": "30%"}))
    assert budget["spec"]["minAvailable"] == 3
    assert render_pdb(REF, spec(replicas=0))["spec"]["minAvailable"] == 0
    assert "matchExpressions" not in render_pdb(REF, spec(replicas=0))["spec"]["selector"]


def test_pdb_counts_draining_groups_as_spent():
    endpoint_spec = spec(replicas=4, placement={"podsPerGroup": 3}, rollout={"maxUnavailable": 2})
    assert render_pdb(REF, endpoint_spec)["spec"]["minAvailable"] == 10
    assert render_pdb(REF, endpoint_spec, draining=1)["spec"]["minAvailable"] == 11
    # never more than every pod
    assert render_pdb(REF, endpoint_spec, draining=3)["spec"]["minAvailable"] == 12


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A label selector's verdict, as the API server's disruption controller evaluates it."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        if e["operator"] == "In" and value not in e["values"]:
            return False
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
    return True


def test_pdb_selects_workers_and_leaders_of_wanted_groups_but_not_surge_groups():
    endpoint_spec = spec(replicas=2, placement={"podsPerGroup": 3})
    selector = render_pdb(REF, endpoint_spec)["spec"]["selector"]
    pods = [
        p for g in (0, 1, 2) for p in render_group(REF, endpoint_spec, REVISION, g, gated=False)
    ]
    selected = {p["metadata"]["name"] for p in pods if _selects(selector, p["metadata"]["labels"])}
    assert selected == {f"darwin-398b-{g}-{r}" for g in (0, 1) for r in (0, 1, 2)}


def test_leader_address_is_the_pod_dns_name():
    assert leader_address(REF, 7) == "darwin-398b-7-0.darwin-398b-pods.llm.svc"


class TestRevision:
    def test_stable_and_short(self):
        assert render.revision_of(spec(), None) == render.revision_of(spec(), None)
        assert len(render.revision_of(spec(), None)) == 10

    @pytest.mark.parametrize(
        "changes",
        [
            {"replicas": 7},
            {"rollout": {"maxUnavailable": 2, "maxSurge": 1, "partition": 1, "paused": True}},
            {"health": {"maxGroupRestarts": 1, "restartWindowSeconds": 60}},
            {"health": {"startupTimeoutSeconds": 7200, "leaderUnreadySeconds": 30}},
            {"rollout": {"drainSeconds": 90}},
            {"service": {"type": "NodePort", "port": 80}},
            {"placement": {"gang": "None"}},
        ],
    )
    def test_settings_that_never_reach_pods_keep_it(self, changes):
        assert render.revision_of(spec(**changes), None) == render.revision_of(spec(), None)

    @pytest.mark.parametrize(
        "changes",
        [
            {"engine": {"image": "vllm/vllm-openai:v0.34.0"}},
            {"engine": {"extraArgs": ["--max-num-seqs", "8"]}},
            {"model": {"revision": "v2"}},
            {"placement": {"podsPerGroup": 3}},
            {"resources": {"memory": "1Ti"}},
            {"health": {"readinessFailureThreshold": 12}},
            {"health": {"livenessPeriodSeconds": 60}},
            {"health": {"probeTimeoutSeconds": 20}},
            {"podMetadata": {"labels": {"team": "x"}}},
        ],
    )
    def test_what_pods_are_built_from_changes_it(self, changes):
        assert render.revision_of(spec(**changes), None) != render.revision_of(spec(), None)

    def test_a_restart_request_changes_it(self):
        before = render.revision_of(spec(), None)
        assert render.revision_of(spec(), "2026-01-01T00:00:00Z") != before
        assert render.revision_of(spec(), "") == before

    def test_defaults_spelled_out_by_the_api_server_keep_it(self):
        """The API server stores the defaulted spec; it must hash like the one the user wrote."""
        written = spec()
        defaulted = DarwinEndpointSpec.model_validate(written.model_dump(by_alias=True))
        assert render.revision_of(defaulted, None) == render.revision_of(written, None)


SHAPES = st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
    lambda tp_pp: st.tuples(
        st.just(tp_pp),
        st.sampled_from([n for n in range(1, tp_pp[1] + 1) if tp_pp[1] % n == 0]),
    )
)


@given(
    shape=SHAPES,
    group=st.integers(0, vocabulary.MAX_GROUP_INDEX),
)
def test_any_valid_shape_renders_a_whole_group(shape, group):
    (tp, pp), pods_per_group = shape
    endpoint_spec = DarwinEndpointSpec.model_validate(
        spec_doc(
            engine={"tensorParallelSize": tp, "pipelineParallelSize": pp},
            placement={"podsPerGroup": pods_per_group},
        )
    )
    longest = render.EndpointRef(
        name="d" * vocabulary.MAX_ENDPOINT_NAME_LENGTH, namespace="n", uid="u"
    )
    pods = render_group(longest, endpoint_spec, REVISION, group, gated=True)
    gpus = [int(container(p)["resources"]["limits"]["nvidia.com/gpu"]) for p in pods]
    assert sum(gpus) == tp * pp
    assert all(g % tp == 0 for g in gpus)  # whole tensor-parallel groups per pod
    ranks = [int(p["metadata"]["labels"][vocabulary.LABEL_RANK]) for p in pods]
    assert ranks == list(range(pods_per_group))
    roles = [p["metadata"]["labels"][vocabulary.LABEL_ROLE] for p in pods]
    assert roles.count("leader") == 1 and roles[0] == "leader"
    for pod in pods:
        name = pod["metadata"]["name"]
        assert len(name) <= 63 and pod["spec"]["hostname"] == name


def test_pods_are_locked_down_by_default():
    for pod in pods_of(spec(placement={"podsPerGroup": 3})):
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert container(pod)["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
        assert "serviceAccountName" not in pod["spec"]


def test_spec_pod_adds_identity_user_capabilities_and_volumes():
    (pod,) = pods_of(
        spec(
            model={"cache": {"persistentVolumeClaim": "w"}},
            pod={
                "serviceAccountName": "model-reader",
                "imagePullSecrets": ["registry"],
                "runAsUser": 1000,
                "runAsGroup": 2000,
                "fsGroup": 2000,
                "runAsNonRoot": True,
                "capabilities": ["IPC_LOCK"],
                "volumes": [{"name": "nccl", "configMap": {"name": "topology"}}],
                "volumeMounts": [{"name": "nccl", "mountPath": "/etc/nccl", "readOnly": True}],
            },
        )
    )
    assert pod["spec"]["serviceAccountName"] == "model-reader"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["spec"]["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1000,
        "runAsGroup": 2000,
        "fsGroup": 2000,
        "runAsNonRoot": True,
    }
    assert container(pod)["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["IPC_LOCK"],
    }
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["dshm", "weights", "nccl"]
    assert pod["spec"]["volumes"][-1] == {"name": "nccl", "configMap": {"name": "topology"}}
    assert container(pod)["volumeMounts"][-1] == {
        "name": "nccl",
        "mountPath": "/etc/nccl",
        "readOnly": True,
    }


def test_cpu_and_memory_default_per_gpu_and_guaranteed_sets_limits_to_requests():
    staged = {"placement": {"podsPerGroup": 3}, "resources": {"cpu": None, "memory": None}}
    (leader, *_) = pods_of(spec(**staged))
    resources = container(leader)["resources"]
    # 2 GPUs per pod: Burstable with requests, GPUs as limits
    assert resources["requests"] == {"nvidia.com/gpu": "2", "cpu": "16", "memory": "128Gi"}
    assert resources["limits"] == {"nvidia.com/gpu": "2"}
    (pod,) = pods_of(
        spec(resources={"cpu": "32", "memory": "512Gi", "guaranteed": True, "extra": {"rdma/x": 1}})
    )
    resources = container(pod)["resources"]
    assert (
        resources["limits"]
        == resources["requests"]
        == {
            "nvidia.com/gpu": "6",
            "rdma/x": "1",
            "cpu": "32",
            "memory": "512Gi",
        }
    )


def test_without_a_cache_each_pod_requests_room_for_the_whole_download():
    sized = container(pods_of(spec(model={"size": "800Gi"}))[0])
    assert sized["resources"]["requests"]["ephemeral-storage"] == "832Gi"  # + vLLM's caches
    assert "ephemeral-storage" not in sized["resources"].get("limits", {})  # no eviction at it
    assert "ephemeral-storage" not in container(pods_of(spec())[0])["resources"]["requests"]
    cached = spec(model={"size": "800Gi", "cache": {"persistentVolumeClaim": "w"}})
    assert "ephemeral-storage" not in container(pods_of(cached)[0])["resources"]["requests"]


def test_a_shared_staged_volume_is_mounted_read_only_a_node_local_one_writable():
    for mode, read_only in (("Shared", True), ("PerNode", False)):
        pod = pods_of(spec(model={"cache": {"persistentVolumeClaim": "w", "staging": mode}}))[0]
        mount = {m["name"]: m for m in container(pod)["volumeMounts"]}["weights"]
        assert mount.get("readOnly", False) is read_only, mode
