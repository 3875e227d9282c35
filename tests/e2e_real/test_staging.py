"""Staging on real nodes: the staging container (darwin_operator.staging) in a pod of the stand-in
image downloads from the hub stand-in on the host with its real `hf`, the kubelet carries its
termination message back, and the vLLM stand-in then serves the staged files; and the whole
path driven by the operator (model.cache.staging: Shared)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from darwin_operator import staging
from tests.e2e.checks import apply
from tests.e2e.waiting import wait_for
from tests.e2e_real import standin_endpoints as se
from tests.e2e_real import standin_fixtures as sf
from tests.e2e_real.standin_fixtures import standin_image
from tests.standin.hub_process import HubProcess

__all__ = ["standin_image"]  # fixtures the tests use

HOST_IP = "10.245.255.1"  # the host as pods reach it (tests/cluster/real_nodes.py HOST_IP)
MOUNT = "/models"
CLAIM = "staged-weights"
SHARDS = [3 << 20, 3 << 20, 2 << 20]
STAGE_SECONDS = 300  # the image's hf starts slowly on this shared 2-core machine


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    started = HubProcess(se.MODEL, tmp / "data", tmp / "hub.log", shards=SHARDS, host=HOST_IP)
    yield started
    started.stop()


@pytest.fixture
def volume(cluster, namespace, tmp_path):
    """A writable host directory as a ReadWriteMany PersistentVolume claimed in the namespace
    (Pod Security "baseline" refuses hostPath volumes in pods)."""
    host_dir = tmp_path / "weights"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    name = f"staged-{namespace}"[:63]
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(host_dir), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": CLAIM},
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    for item in (pv, claim):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(item))
    yield host_dir
    cluster.kubectl("delete", "pv", name, "--wait=false", check=False)


def staging_pod(name: str, image: str, hub: HubProcess, revision: str) -> dict:
    container = staging.staging_container(
        se.MODEL,
        revision,
        MOUNT,
        None,
        image,
        extra_env=[{"name": "HF_ENDPOINT", "value": hub.url}],
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}},
    )
    container["imagePullPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [container],
            "volumes": [{"name": "weights", "persistentVolumeClaim": {"claimName": CLAIM}}],
            "nodeSelector": {"type": "real"},
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
        },
    }


def finished(cluster, namespace: str, name: str) -> dict:
    def done() -> dict | None:
        pod = cluster.json("get", "pod", name, "-n", namespace)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    return wait_for(done, timeout=STAGE_SECONDS, what=f"staging pod {name} to finish")


def terminated(pod: dict) -> dict:
    (status,) = pod["status"]["containerStatuses"]
    return status["state"]["terminated"]


def test_a_staging_pod_stages_the_model_and_the_vllm_standin_serves_it(
    cluster, operator, namespace, standin_image, hub, volume
):
    apply(cluster, namespace, staging_pod("stage-main", standin_image, hub, "main"))
    pod = finished(cluster, namespace, "stage-main")
    logs = cluster.kubectl("logs", "-n", namespace, "stage-main", check=False).stdout
    assert pod["status"]["phase"] == "Succeeded", logs[-4000:]
    assert staging.parse_staging_failure(terminated(pod)) is None

    rev = hub.revision()
    target = volume / Path(staging.model_dir(MOUNT, se.MODEL, "main")).relative_to(MOUNT)
    for path, f in rev.files.items():
        assert hashlib.sha256((target / path).read_bytes()).hexdigest() == f.sha256, path
    marker = json.loads((target / staging.MARKER_NAME).read_text())
    assert (marker["commit"], marker["bytes"]) == (rev.commit, rev.total_bytes)
    assert hub.stats()["bytes_served"] == rev.total_bytes

    # The vLLM stand-in loads the staged directory (every byte of it) and serves.
    manifest = se.endpoint("staged", CLAIM, pods_per_group=1)
    manifest["spec"]["model"]["name"] = staging.model_dir(MOUNT, se.MODEL, "main")
    manifest["spec"]["placement"]["nodeSelector"] = {"type": "real"}  # the cluster may have kwok
    apply(cluster, namespace, manifest)
    sf.ready(cluster, namespace, "staged")
    leader = se.leader(cluster, namespace, "staged")
    on_disk = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logs = cluster.kubectl("logs", "-n", namespace, leader["metadata"]["name"]).stdout
    assert f"of {on_disk} bytes" in logs, logs[-3000:]


def test_a_failed_staging_pod_says_why_through_the_kubelet(
    cluster, namespace, standin_image, hub, volume
):
    apply(cluster, namespace, staging_pod("stage-nope", standin_image, hub, "no-such-branch"))
    pod = finished(cluster, namespace, "stage-nope")
    assert pod["status"]["phase"] == "Failed"
    state = terminated(pod)
    assert state["exitCode"] == staging.FAILURE_BY_REASON["RevisionNotFound"].exit_code, state
    assert staging.parse_staging_failure(state) == (
        "RevisionNotFound",
        f"the hub has no revision no-such-branch of {se.MODEL}",
    )
    assert not (
        volume / "staged" / se.MODEL.replace("/", "--") / "no-such-branch" / staging.MARKER_NAME
    ).exists()


def test_the_operator_stages_a_shared_volume_before_the_group_loads_it_offline(
    cluster, operator, namespace, standin_image, hub, volume
):
    manifest = se.endpoint("shared", CLAIM, pods_per_group=1)
    manifest["spec"]["model"]["cache"]["staging"] = "Shared"
    manifest["spec"]["engine"]["env"].append({"name": "HF_ENDPOINT", "value": hub.url})
    manifest["spec"]["placement"]["nodeSelector"] = {"type": "real"}
    before = hub.stats()["bytes_served"]
    apply(cluster, namespace, manifest)
    sf.ready(cluster, namespace, "shared", timeout=STAGE_SECONDS + sf.STARTUP)

    # one staging pod downloaded the revision once; the marker is on the volume
    stagers = cluster.json("get", "pods", "-n", namespace, "-l", "serving.darwin.ai/role=staging")[
        "items"
    ]
    assert [p["status"]["phase"] for p in stagers] == ["Succeeded"], stagers
    rev = hub.revision()
    assert hub.stats()["bytes_served"] - before == rev.total_bytes
    target = volume / Path(staging.model_dir(MOUNT, se.MODEL, "main")).relative_to(MOUNT)
    assert json.loads((target / staging.MARKER_NAME).read_text())["commit"] == rev.commit

    # vLLM loaded the staged directory offline from a read-only mount, the hub id served
    leader = se.leader(cluster, namespace, "shared")
    (vllm,) = leader["spec"]["containers"]
    assert vllm["command"][2] == str(Path(MOUNT) / target.relative_to(volume))
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert {m["name"]: m for m in vllm["volumeMounts"]}["weights"].get("readOnly") is True
    on_disk = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logs = cluster.kubectl("logs", "-n", namespace, leader["metadata"]["name"]).stdout
    assert f"of {on_disk} bytes" in logs, logs[-3000:]
    address = se.service_address(cluster, namespace, "shared")
    answer = wait_for(
        lambda: (lambda a: a if a.status == 200 else None)(
            se.complete(address, se.MODEL, timeout=5)
        ),
        timeout=60,
        what="an answer for the hub id through the client Service",
    )
    assert answer.served_by == se.hostname(leader)
