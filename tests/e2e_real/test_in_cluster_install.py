"""The operator as users install it: `helm install` of charts/darwin-operator with the image
built from operator/Dockerfile (tests/images), run by a real kubelet in a pod that is non-root
with a read-only root filesystem and a liveness probe, acting under the chart's RBAC through
its service account's token and the `kubernetes` Service.

The cluster may be shared (DARWIN_E2E_KUBECONFIG): every release is uninstalled in a finally
block, and the cluster-wide install lives only as long as its one test.
"""

from __future__ import annotations

import datetime
import os
import signal
import time

import in_cluster
import pytest

from tests.e2e.chart_install import extra_namespace
from tests.e2e.checks import (
    Limits,
    PodRecorder,
    Replicas,
    Watcher,
    apply,
    check_pods,
    check_slices,
    endpoint_ready,
    endpoint_status,
    event_reasons,
    is_deleting,
    is_ready,
    label,
    rolled_out,
    serving_in_slices,
)
from tests.e2e.waiting import wait_for
from tests.e2e_real import in_cluster_operator as ico
from tests.e2e_real import standin_endpoints as se
from tests.e2e_real import standin_fixtures as sf
from tests.e2e_real.standin_fixtures import standin_image, weights, weights_dir

__all__ = ["standin_image", "weights", "weights_dir"]  # fixtures the tests use

UPGRADE_TAG = f"{se.images.OPERATOR_TAG}-rebuilt"
# Faster resyncs than the default 30 s: "no second actor" is watched over two of them.
RESYNC = 5
FAST = {"extraArgs": [f"--resync-seconds={RESYNC}"]}
DRAIN = 10  # seconds a leader leaves the Service before its group goes, in the upgrade test


@pytest.fixture(scope="session")
def operator_image(cluster) -> str:
    cluster.import_image(in_cluster.build_image())
    return se.images.OPERATOR_TAG


@pytest.fixture(scope="session")
def rebuilt_image(cluster, operator_image, tmp_path_factory) -> str:
    """The image under another tag, as a rebuild pushed under a new tag reaches a Deployment
    (outside the images cache, whose tars every real node imports when it starts)."""
    tar = tmp_path_factory.mktemp("rebuilt") / "darwin-operator-rebuilt.tar"
    tag = f"{se.images.OPERATOR_REPOSITORY}:{UPGRADE_TAG}"
    se.images.docker_archive.retagged(in_cluster.build_image(), tar, tag)
    cluster.import_image(tar)
    return UPGRADE_TAG


def small_endpoint(name: str, claim: str, replicas: int, drain_seconds: int = 2) -> dict:
    """One pod of one GPU per group: the real nodes' GPUs are shared with other tests."""
    return se.endpoint(
        name, claim, pods_per_group=1, tp=1, pp=1, replicas=replicas, drain_seconds=drain_seconds
    )


def restart(cluster, namespace: str, name: str) -> None:
    """A rolling restart, as `darwin-operator restart` asks for one."""
    now = datetime.datetime.now(datetime.UTC).isoformat()
    annotation = f"serving.darwin.ai/restartedAt={now}"
    cluster.kubectl("annotate", "dwe", name, "-n", namespace, "--overwrite", annotation)


def endpoint_uids(cluster, namespace: str, name: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in sf.pods(cluster, namespace, name)}


def check_locked_down(cluster, release: ico.Release, pod: dict) -> None:
    """Non-root, read-only root filesystem, liveness and metrics answering: as the host sees
    the process and as the pod's own ports answer."""
    assert pod["spec"]["nodeName"] in cluster.real_node_names
    pid = ico.operator_process(pod)
    assert ico.process_ids(pid) == (65532, 65532)
    name = pod["metadata"]["name"]
    write = cluster.kubectl(
        "exec", "-n", release.home, name, "--",
        "python3", "-c", "open('/written-by-the-test', 'w')",
        check=False,
    )  # fmt: skip
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    assert ico.http_get(pod, ico.HEALTH_PORT, "/healthz")[0] == 200
    status, metrics = ico.http_get(pod, ico.METRICS_PORT, "/metrics")
    assert status == 200 and "darwin_reconcile_total" in metrics


@pytest.mark.parametrize("scope", ["namespaces", "cluster"])
def test_installed_operator_serves_recreates_rolls_out_and_uninstalls_without_touching_pods(
    cluster, crd_installed, namespace, standin_image, weights, operator_image, scope
):
    name = "served"
    watched = [namespace] if scope == "namespaces" else None
    values = in_cluster.values(namespaces=watched, **FAST)
    with (
        extra_namespace(cluster, "operator") as home,
        ico.installed(cluster, home, values) as release,
    ):
        (pod,) = release.running(1)
        check_locked_down(cluster, release, pod)

        # An endpoint goes Ready: the operator reads, creates, admits, and writes status.
        apply(cluster, namespace, small_endpoint(name, weights, replicas=2))
        sf.ready(cluster, namespace, name)

        # A group broken (its only pod deleted by someone else) is recreated whole.
        before = endpoint_uids(cluster, namespace, name)
        broken = f"{name}-1-0"
        cluster.kubectl("delete", "pod", broken, "-n", namespace, "--wait=false")

        def recreated() -> bool:
            # the new incarnation of group 1 has pod names of its own
            pods = sf.pods(cluster, namespace, name)
            group = [p for p in pods if label(p, "group") == "1"]
            fresh = bool(group) and before[broken] not in {p["metadata"]["uid"] for p in group}
            return fresh and len(pods) == 2 and all(map(is_ready, pods))

        wait_for(recreated, timeout=sf.STARTUP, what=f"{broken} recreated and Ready")
        first = sf.ready(cluster, namespace, name)
        assert first["groups"][1]["restarts"] >= 1, first["groups"]

        # A rollout, group by group within maxUnavailable, each leader drained first.
        serving_in_slices(cluster, namespace, name, 2)
        replicas = Replicas()
        replicas.set(2)
        watcher = Watcher(cluster, namespace, name)
        restart(cluster, namespace, name)
        wait_for(
            rolled_out(cluster, namespace, name, 2, first["updateRevision"]),
            timeout=2 * sf.STARTUP,
            what="every group on the restarted revision",
        )
        watcher.stop()
        seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=0))
        assert seen["deletions"] == [1, 0], seen
        check_slices(watcher, drain_seconds=2)
        assert event_reasons(cluster, namespace, name).count("GroupReplaced") == 2

        # The liveness probe held all along, and the operator never restarted.
        (pod,) = release.running(1)
        assert ico.restarts(pod) == 0, pod["status"]["containerStatuses"]

        # `helm uninstall` takes the operator away and leaves the endpoint's pods alone.
        serving = endpoint_uids(cluster, namespace, name)
        release.uninstall()
        assert not release.pods()
        pods = sf.pods(cluster, namespace, name)
        assert endpoint_uids(cluster, namespace, name) == serving
        assert all(is_ready(p) and not is_deleting(p) for p in pods)
        assert cluster.json("get", "dwe", name, "-n", namespace)["spec"]["replicas"] == 2


def test_standby_takes_over_a_killed_active_replica_within_the_bound_without_double_action(
    cluster, crd_installed, namespace, standin_image, weights, operator_image
):
    name = "ha"
    values = in_cluster.values(namespaces=[namespace], replicas=2, **FAST)
    with (
        extra_namespace(cluster, "operator") as home,
        ico.installed(cluster, home, values) as release,
    ):
        release.running(2)
        apply(cluster, namespace, small_endpoint(name, weights, replicas=1))
        sf.ready(cluster, namespace, name)
        time.sleep(2 * RESYNC)  # room for a second actor to show itself
        by_count = sorted(release.running(2), key=ico.reconciles)
        standby, active = by_count
        assert ico.reconciles(active) > 0
        assert ico.reconciles(standby) == 0, "the standby acted beside the active replica"
        (survivor,) = sf.pods(cluster, namespace, name)

        recorder = PodRecorder(cluster, namespace)
        os.kill(ico.operator_process(active), signal.SIGKILL)  # no keep-alive withdrawn
        killed = time.monotonic()
        # Work that only an acting replica does: a second group.
        cluster.kubectl("scale", "dwe", name, "--replicas=2", "-n", namespace)
        wait_for(
            lambda: ico.reconciles(standby) > 0,
            timeout=ico.TAKEOVER_BOUND,
            what=f"the standby acting within {ico.TAKEOVER_BOUND}s",
        )
        print(f"takeover after SIGKILL: {time.monotonic() - killed:.1f}s")
        wait_for(endpoint_ready(cluster, namespace, name, 2), timeout=sf.STARTUP, what="2 groups")

        events = recorder.stop()
        # the watch lists the survivor first, then sees the one new pod
        added = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
        assert added == [f"{name}-0-0", f"{name}-1-0"], "a pod was created twice"
        assert not [e for e in events if e["type"] == "DELETED"], "the handover recreated a pod"
        kept = {
            p["metadata"]["name"]: p["metadata"]["uid"] for p in sf.pods(cluster, namespace, name)
        }
        assert kept[survivor["metadata"]["name"]] == survivor["metadata"]["uid"]

        # The killed replica's container restarts in the same pod: it stands by now.
        def restarted() -> dict | None:
            pod = next(
                p for p in release.pods() if p["metadata"]["uid"] == active["metadata"]["uid"]
            )
            return pod if ico.restarts(pod) >= 1 and ico.container_ready(pod) else None

        back = wait_for(restarted, timeout=ico.INSTALL_TIMEOUT, what="the killed replica back")
        cluster.kubectl("scale", "dwe", name, "--replicas=1", "-n", namespace)
        wait_for(
            lambda: len(sf.pods(cluster, namespace, name)) == 1,
            timeout=sf.STARTUP,
            what="scaled back to one group",
        )
        time.sleep(2 * RESYNC)
        assert ico.reconciles(back) == 0, "the restarted replica acted beside the active one"


def test_helm_upgrade_to_a_rebuilt_image_mid_rollout_breaks_no_limit(
    cluster, crd_installed, namespace, standin_image, weights, operator_image, rebuilt_image
):
    name = "upgraded"
    values = in_cluster.values(namespaces=[namespace], **FAST)
    with (
        extra_namespace(cluster, "operator") as home,
        ico.installed(cluster, home, values) as release,
    ):
        (old,) = release.running(1)
        # drains long enough that the upgrade lands while groups are still being replaced
        apply(cluster, namespace, small_endpoint(name, weights, replicas=3, drain_seconds=DRAIN))
        first = sf.ready(cluster, namespace, name)
        serving_in_slices(cluster, namespace, name, 3)
        replicas = Replicas()
        replicas.set(3)
        watcher = Watcher(cluster, namespace, name)
        restart(cluster, namespace, name)

        def replacing() -> bool:  # the first group draining or going: the rollout is under way
            pods = sf.pods(cluster, namespace, name)
            return any(is_deleting(p) or label(p, "serving") == "false" for p in pods)

        wait_for(replacing, timeout=sf.STARTUP, what="the rollout replacing its first group")
        release.deploy(values | {"image": values["image"] | {"tag": rebuilt_image}})
        (new,) = release.running(1)
        mid = endpoint_status(cluster, namespace, name)
        assert mid.get("currentRevision") != mid.get("updateRevision"), "the rollout was over"
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        assert new["spec"]["containers"][0]["image"].endswith(f":{rebuilt_image}")

        status = wait_for(
            rolled_out(cluster, namespace, name, 3, first["updateRevision"]),
            timeout=3 * sf.STARTUP,
            what="every group on the restarted revision",
        )
        watcher.stop()
        seen = check_pods(watcher, replicas, Limits(max_unavailable=1, max_surge=0))
        assert seen["lowest"] >= 2, seen
        assert seen["deletions"] == [2, 1, 0], "a group replaced twice, or out of order"
        check_slices(watcher, drain_seconds=DRAIN)
        assert status["availableReplicas"] == 3
        assert ico.reconciles(new) > 0, "the upgraded operator never acted"
