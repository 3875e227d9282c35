"""Faults of the vLLM stand-in on real kubelets: a killed worker, a hung leader and an
OOM-killed container each get their group recreated whole; a rolling restart lets the requests
in flight when the group leaves the Service finish.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from darwin_operator.vocabulary import ANNOTATION_RESTARTED_AT
from tests.e2e.checks import apply
from tests.e2e.waiting import wait_for
from tests.e2e_real import standin_endpoints as se
from tests.e2e_real import standin_fixtures as sf
from tests.e2e_real.standin_fixtures import standin_image, weights, weights_dir

__all__ = ["standin_image", "weights", "weights_dir"]  # fixtures the tests use


def test_a_killed_worker_gets_the_group_recreated_whole(
    cluster, operator, namespace, standin_image, weights
):
    # The leader's engine dies with the worker; it answers 503 long enough before exiting that
    # the worker's failure is the one the operator finds first.
    slow_exit = {"STANDIN_DEATH_EXIT_SECONDS": "30"}
    apply(cluster, namespace, se.endpoint("kill", weights, pods_per_group=3, env=slow_exit))
    sf.ready(cluster, namespace, "kill")
    old = sf.uids(sf.pods(cluster, namespace, "kill"))
    (worker,) = sf.pods(cluster, namespace, "kill", rank="2")

    os.kill(se.vllm_process(worker), signal.SIGKILL)
    failure = f"pod {worker['metadata']['name']} failed: vllm exited 137"
    sf.recreated(cluster, namespace, "kill", old, (failure,), timeout=sf.STARTUP)


def test_a_hung_leader_is_recreated_after_the_grace(
    cluster, operator, namespace, standin_image, weights
):
    # Probes and grace short enough for a test; the defaults take minutes.
    health = {
        "leaderUnreadySeconds": 5,
        "readinessPeriodSeconds": 2,
        "readinessFailureThreshold": 2,
        "probeTimeoutSeconds": 1,
    }
    apply(
        cluster,
        namespace,
        se.endpoint("hung", weights, pods_per_group=1, tp=2, pp=1, health=health),
    )
    sf.ready(cluster, namespace, "hung")
    old = sf.uids(sf.pods(cluster, namespace, "hung"))
    leader = se.leader(cluster, namespace, "hung")
    cluster.kubectl(
        "exec",
        "-n",
        namespace,
        leader["metadata"]["name"],
        "--",
        "sh",
        "-c",
        f"echo freeze > {se.FAULT_FILE}",
    )
    probe = leader["spec"]["containers"][0]["readinessProbe"]
    unready_after = probe["periodSeconds"] * probe["failureThreshold"] + probe["timeoutSeconds"]
    sf.recreated(
        cluster,
        namespace,
        "hung",
        old,
        ("LeaderUnready",),
        timeout=unready_after + health["leaderUnreadySeconds"] + sf.STARTUP,
    )


def test_an_oom_killed_container_gets_the_group_recreated_with_that_reason(
    cluster, operator, namespace, standin_image, weights
):
    # Guaranteed QoS: a memory limit (equal to the request) that the `oom` fault runs into.
    guaranteed = {"memory": "128Mi", "guaranteed": True}
    slow_exit = {"STANDIN_DEATH_EXIT_SECONDS": "30"}  # as in the test above
    apply(
        cluster,
        namespace,
        se.endpoint("oom", weights, pods_per_group=3, resources=guaranteed, env=slow_exit),
    )
    sf.ready(cluster, namespace, "oom")
    old = sf.uids(sf.pods(cluster, namespace, "oom"))
    (worker,) = sf.pods(cluster, namespace, "oom", rank="1")
    assert worker["spec"]["containers"][0]["resources"]["limits"]["memory"] == "128Mi"
    cluster.kubectl(
        "exec",
        "-n",
        namespace,
        worker["metadata"]["name"],
        "--",
        "sh",
        "-c",
        f"echo oom > {se.FAULT_FILE}",
    )
    failure = f"pod {worker['metadata']['name']} failed: vllm exited 137 (OOMKilled)"
    sf.recreated(cluster, namespace, "oom", old, (failure,), timeout=sf.STARTUP)


def test_a_rolling_restart_lets_requests_in_flight_finish(
    cluster, operator, namespace, standin_image, weights
):
    drain = 12
    apply(
        cluster,
        namespace,
        se.endpoint("roll", weights, pods_per_group=1, tp=2, pp=1, drain_seconds=drain),
    )
    sf.ready(cluster, namespace, "roll")
    old = sf.uids(sf.pods(cluster, namespace, "roll"))
    leader = se.leader(cluster, namespace, "roll")
    address = se.service_address(cluster, namespace, "roll")
    answers: list = []

    def ask() -> None:
        try:
            answers.append(se.complete(address, "roll", delay=drain - 4, timeout=120))
        except OSError as e:
            answers.append(e)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(
        lambda: se.requests_running(leader["status"]["podIP"]) == 3,
        timeout=30,
        what="3 requests in flight on the leader",
    )

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cluster.kubectl(
        "annotate", "-n", namespace, "darwinendpoint", "roll", f"{ANNOTATION_RESTARTED_AT}={stamp}"
    )

    def left_the_service():
        slices = cluster.json(
            "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=roll"
        )["items"]
        addresses = [a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]]
        return leader["status"]["podIP"] not in addresses

    wait_for(left_the_service, timeout=60, what="the leader to leave the Service")
    assert se.requests_running(leader["status"]["podIP"]) == 3, "requests ended before the drain"
    for thread in threads:
        thread.join()
    assert [getattr(a, "status", a) for a in answers] == [200, 200, 200], answers
    assert {a.served_by for a in answers} == {se.hostname(leader)}
    wait_for(
        lambda: not (sf.uids(sf.pods(cluster, namespace, "roll")) & old),
        timeout=sf.STARTUP,
        what="the restarted group",
    )
    sf.ready(cluster, namespace, "roll")
