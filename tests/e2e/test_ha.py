"""High availability: operator replicas peer through kopf (the chart's peering CRDs, RBAC and
ServiceAccount). One acts; the other acts only after the active one is SIGKILLed, within the
peering lifetime, and the handover neither duplicates nor recreates a pod."""

from __future__ import annotations

import re
import time
from contextlib import ExitStack

import pytest

from tests.e2e.chart_install import STANDBY_LIFETIME, extra_namespace, installed
from tests.e2e.checks import PodRecorder, apply, endpoint_pods, endpoint_ready
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

# kopf renews a keep-alive 5-10 s before it expires: a stale one stays valid at least this long.
RENEWED_BEFORE_EXPIRY = 5
# So a standby resumes 5 to LIFETIME seconds after the active replica dies; then it lists,
# reconciles and writes, which the margin of one renewal leaves room for. A deadline, not a
# measurement: the time it took is printed.
TAKEOVER_BOUND = STANDBY_LIFETIME + RENEWED_BEFORE_EXPIRY


def reconciles(process: OperatorProcess) -> float:
    """How many reconciles this replica has run (darwin_reconcile_total over all results)."""
    samples = re.findall(r"^darwin_reconcile_total\{[^}]*\} (\S+)$", process.metrics(), re.M)
    return sum(float(value) for value in samples)


def test_standby_takes_over_within_the_lifetime_and_never_acts_beside_the_active(
    cluster, crd_installed, namespace, tmp_path
):
    values = {"replicaCount": 2, "watch": {"scope": "namespaces", "namespaces": [namespace]}}
    with (
        extra_namespace(cluster, "operator") as home,
        installed(cluster, home, values) as release,
        ExitStack() as processes,
    ):
        kubeconfig = release.account_kubeconfig(tmp_path / "account.kubeconfig")

        def replica(name: str) -> OperatorProcess:
            process = OperatorProcess(
                kubeconfig,
                tmp_path / f"{name}.log",
                namespaces=(namespace,),
                extra_args=(
                    "--peering",
                    release.fullname,
                    "--peering-lifetime",
                    str(STANDBY_LIFETIME),
                ),
            )
            processes.callback(process.kill)
            return process.start()

        first = replica("first")
        second = replica("second")  # registers below the first: stands by from its start
        apply(cluster, namespace, endpoint_manifest("darwin-398b", replicas=1))
        wait_for(
            endpoint_ready(cluster, namespace, "darwin-398b", 1), timeout=90, what="1 group Ready"
        )
        time.sleep(2 * first.resync_seconds)  # room for a second actor to show itself
        assert reconciles(first) > 0
        assert reconciles(second) == 0, "the standby acted beside the active replica"
        (survivor,) = endpoint_pods(cluster, namespace, "darwin-398b")

        recorder = PodRecorder(cluster, namespace)
        first.kill()
        killed = time.monotonic()
        # Work that only an acting replica does: a second group.
        cluster.kubectl("scale", "dwe", "darwin-398b", "--replicas=2", "-n", namespace)
        wait_for(lambda: reconciles(second) > 0, timeout=TAKEOVER_BOUND, what="takeover")
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL: {takeover:.1f}s (lifetime {STANDBY_LIFETIME}s)")
        wait_for(
            endpoint_ready(cluster, namespace, "darwin-398b", 2), timeout=90, what="2 groups Ready"
        )

        events = recorder.stop()
        added = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
        assert added == ["darwin-398b-0-0", "darwin-398b-1-0"], "a pod was created twice"
        assert not [e for e in events if e["type"] == "DELETED"], "the handover recreated a pod"
        kept = next(
            p
            for p in endpoint_pods(cluster, namespace, "darwin-398b")
            if p["metadata"]["name"] == survivor["metadata"]["name"]
        )
        assert kept["metadata"]["uid"] == survivor["metadata"]["uid"]

        # The killed replica comes back (its pod restarted): it queues behind the new active one.
        restarted = replica("first-restarted")
        before = reconciles(second)
        cluster.kubectl("scale", "dwe", "darwin-398b", "--replicas=1", "-n", namespace)
        wait_for(
            endpoint_ready(cluster, namespace, "darwin-398b", 1), timeout=90, what="scaled to 1"
        )
        time.sleep(2 * restarted.resync_seconds)
        assert reconciles(second) > before
        assert reconciles(restarted) == 0, "a restarted replica acted beside the active one"


def test_graceful_stop_hands_over_at_once(cluster, crd_installed, namespace, tmp_path):
    """A rolling update or a drain stops the active pod with SIGTERM: kopf withdraws its
    keep-alive on the way out, so the standby need not wait for it to expire."""
    values = {"replicaCount": 2, "watch": {"scope": "namespaces", "namespaces": [namespace]}}
    with (
        extra_namespace(cluster, "operator") as home,
        installed(cluster, home, values) as release,
        ExitStack() as processes,
    ):
        kubeconfig = release.account_kubeconfig(tmp_path / "account.kubeconfig")
        peering = ("--peering", release.fullname, "--peering-lifetime", str(STANDBY_LIFETIME))
        first, second = (
            OperatorProcess(
                kubeconfig, tmp_path / f"{name}.log", namespaces=(namespace,), extra_args=peering
            )
            for name in ("first", "second")
        )
        for process in (first, second):
            processes.callback(process.kill)
            process.start()
        apply(cluster, namespace, endpoint_manifest("darwin-398b", replicas=1))
        wait_for(
            endpoint_ready(cluster, namespace, "darwin-398b", 1), timeout=90, what="1 group Ready"
        )
        assert reconciles(second) == 0

        assert first.stop() == 0
        stopped = time.monotonic()
        cluster.kubectl("scale", "dwe", "darwin-398b", "--replicas=2", "-n", namespace)
        wait_for(lambda: reconciles(second) > 0, timeout=STANDBY_LIFETIME, what="handover")
        handover = time.monotonic() - stopped
        print(f"handover after SIGTERM: {handover:.1f}s")
        # waiting for the withdrawn keep-alive to expire would take at least this long
        assert handover < RENEWED_BEFORE_EXPIRY, (
            f"the standby waited {handover:.1f}s for a withdrawn keep-alive"
        )
        wait_for(
            endpoint_ready(cluster, namespace, "darwin-398b", 2), timeout=90, what="2 groups Ready"
        )
