"""SIGTERM stops the operator within --shutdown-seconds however busy its work queue; what it
abandons, the next start carries on from the cluster's state; an active replica withdraws its
peering keep-alive on the way out, so a standby takes over at once, not after the lifetime
(tests/e2e/test_ha.py times that handover on a quiet cluster)."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import ExitStack

import pytest

from tests.e2e.chart_install import STANDBY_LIFETIME, extra_namespace, installed
from tests.e2e.checks import GPU, apply, gpus_of, is_ready, label, pods
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.slow_api import SlowApi
from tests.e2e.test_ha import reconciles
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e

SHUTDOWN_SECONDS = 3.0
# The process is gone a moment after the budget at worst: its exit, and this test's wait on it.
EXIT_SLACK = 1.0
# Many more groups than the GPUs hold: every reconcile of a waiting endpoint counts the cluster's
# free GPUs (all nodes, all pods), so the work queue and the API server stay busy.
ENDPOINTS = 60
SHAPE = dict(replicas=2, tp=2, pp=2, pods_per_group=2, ready_after="1s")  # 4 pods x 2 GPUs


def apply_many(cluster, namespace: str) -> list[str]:
    names = [f"ep-{i}" for i in range(ENDPOINTS)]
    items = [endpoint_manifest(name, **SHAPE) for name in names]
    apply(cluster, namespace, {"apiVersion": "v1", "kind": "List", "items": items})
    return names


def sigterm(process: OperatorProcess) -> float:
    """SIGTERM; the seconds until the process was gone, which must be within the budget."""
    assert process.process is not None and process.process.poll() is None, process.log()
    bound = SHUTDOWN_SECONDS + EXIT_SLACK
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    try:
        code = process.process.wait(bound)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(
            f"still running {bound}s after SIGTERM (--shutdown-seconds {SHUTDOWN_SECONDS}):\n"
            f"{process.log()}"
        ) from None
    assert code == 0, process.log()
    return time.monotonic() - started


def cluster_gpus(cluster) -> int:
    nodes = cluster.json("get", "nodes")["items"]
    return sum(int((n["status"].get("allocatable") or {}).get(GPU, 0)) for n in nodes)


def test_sigterm_mid_burst_exits_within_the_budget_and_the_next_start_carries_on(
    cluster, crd_installed, namespace, tmp_path
):
    budget = ("--shutdown-seconds", str(SHUTDOWN_SECONDS))
    first, second = (
        OperatorProcess(
            cluster.kubeconfig, tmp_path / f"{name}.log", namespaces=(namespace,), extra_args=budget
        )
        for name in ("first", "second")
    )
    with ExitStack() as processes:
        processes.callback(first.kill)  # if the test fails before it stops them
        processes.callback(second.kill)
        first.start()
        names = apply_many(cluster, namespace)
        wait_for(lambda: pods(cluster, namespace), timeout=60, what="the operator creating pods")
        took = sigterm(first)
        print(f"exit after SIGTERM with a busy queue: {took:.2f}s")
        second.start()
        total = cluster_gpus(cluster)

        def carried_on() -> bool:
            current = pods(cluster, namespace)
            ready_gpus = sum(gpus_of(p) for p in current if is_ready(p))
            return len(current) == 4 * ENDPOINTS and ready_gpus == total

        wait_for(carried_on, timeout=180, what="every group created, every GPU in a Ready group")
        by_endpoint: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
        for pod in pods(cluster, namespace):
            by_endpoint[label(pod, "endpoint")].append((label(pod, "group"), label(pod, "rank")))
        for name, members in by_endpoint.items():
            assert sorted(members) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")], name
        sigterm(second)


def test_sigterm_while_requests_hang_on_a_slow_api_server_exits_within_the_budget(
    cluster, crd_installed, namespace, tmp_path
):
    # Every response takes longer than the whole budget: nothing in flight can finish in time.
    slow = SlowApi(cluster.kubeconfig, latency=2 * SHUTDOWN_SECONDS).start()
    process = OperatorProcess(
        slow.kubeconfig(tmp_path / "slow.kubeconfig"),
        tmp_path / "operator.log",
        namespaces=(namespace,),
        extra_args=("--shutdown-seconds", str(SHUTDOWN_SECONDS)),
    )
    with ExitStack() as cleanup:
        cleanup.callback(slow.stop)
        cleanup.callback(process.kill)  # if the test fails before it stops it
        process.start(timeout=120)
        apply_many(cluster, namespace)
        wait_for(lambda: slow.held >= 8, timeout=60, what="requests hanging")
        took = sigterm(process)
        print(f"exit after SIGTERM, requests hanging: {took:.2f}s")


def test_a_busy_active_replica_withdraws_its_keep_alive_on_sigterm(
    cluster, crd_installed, namespace, tmp_path
):
    values = {"replicaCount": 2, "watch": {"scope": "namespaces", "namespaces": [namespace]}}
    with (
        extra_namespace(cluster, "operator") as home,
        installed(cluster, home, values) as release,
        ExitStack() as processes,
    ):
        kubeconfig = release.account_kubeconfig(tmp_path / "account.kubeconfig")
        args = (
            "--peering", release.fullname, "--peering-lifetime", str(STANDBY_LIFETIME),
            "--shutdown-seconds", str(SHUTDOWN_SECONDS),
        )  # fmt: skip
        first, second = (
            OperatorProcess(
                kubeconfig,
                tmp_path / f"{name}.log",
                namespaces=(namespace,),
                extra_args=args,
                env={"POD_ID": name},  # the identity it peers under
            )
            for name in ("first", "second")
        )
        for process in (first, second):
            processes.callback(process.kill)
            process.start()

        def peers() -> dict:
            peering = cluster.json("get", "kopfpeering", release.fullname, "-n", namespace)
            return peering.get("status") or {}

        assert {"first", "second"} <= set(peers())
        apply_many(cluster, namespace)
        wait_for(lambda: pods(cluster, namespace), timeout=60, what="the active replica acting")
        assert reconciles(second) == 0

        signalled = time.monotonic()
        sigterm(first)
        # Withdrawn, not left to expire: the standby need not wait out the lifetime.
        assert "first" not in peers(), peers()
        wait_for(
            lambda: reconciles(second) > 0, timeout=STANDBY_LIFETIME, what="the standby acting"
        )
        took = time.monotonic() - signalled
        print(f"busy standby's first reconcile done {took:.2f}s after SIGTERM")
