"""A lost node on real kubelets: the kubelet of the node under a group stops (frozen, so its
containers keep running, as behind a network partition). The group is recreated on the other
node as a new incarnation and serves while the old pods still show Terminating (nothing can
confirm their end while the kubelet is gone); the old incarnation never answers through the
client Service once its successor exists; when the kubelet is back it ends the old pods.
"""

from __future__ import annotations

import re
import threading
import time

from tests.e2e.checks import apply, is_deleting, is_ready, label
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.waiting import wait_for
from tests.e2e_real import standin_endpoints as se
from tests.e2e_real import standin_fixtures as sf
from tests.e2e_real.standin_fixtures import standin_image, weights, weights_dir

__all__ = ["standin_image", "weights", "weights_dir"]  # fixtures the tests use

NAME = "lost"
NODE_LOST_GRACE = 5  # the operator's --node-lost-grace here; its default is 60 s
# kube-controller-manager's default --node-monitor-period, used when the cluster sets none
DEFAULT_NODE_MONITOR_PERIOD = 5.0


def go_duration(text: str) -> float:
    """A Go duration as the controller-manager's flags take it (e.g. 20s, 1m30s, 500ms)."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


def node_lost_after(cluster) -> float:
    """Seconds from the kubelet's last report until the node controller has marked the node
    NotReady: its grace period, plus one monitor period for the check to run."""
    flags = cluster.local
    grace = flags.flag("kube-controller-manager", "node-monitor-grace-period")
    assert grace, "the controller-manager sets no --node-monitor-grace-period"
    period = flags.flag("kube-controller-manager", "node-monitor-period")
    return go_duration(grace) + (go_duration(period) if period else DEFAULT_NODE_MONITOR_PERIOD)


class Answers:
    """Requests through the client Service in a thread, noting who answered and when."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = se.complete(self.address, NAME, timeout=3)
            except OSError:
                answer = None  # nothing behind the Service for a while: expected
            if answer is not None and answer.status == 200:
                self.seen.append((time.time(), answer.served_by))
            self._stop.wait(0.2)

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen


def incarnation(pod: dict) -> int:
    return int(label(pod, "incarnation") or 0)


def test_a_group_on_a_lost_node_is_recreated_elsewhere_without_waiting_for_its_pods(
    cluster, crd_installed, namespace, standin_image, weights, tmp_path
):
    nodes = cluster.real_node_names
    assert len(nodes) >= 2, f"needs two real nodes, found {nodes}"
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        namespaces=(namespace,),
        extra_args=("--node-lost-grace", str(NODE_LOST_GRACE)),
    ).start()
    try:
        # Two pods of one GPU each: a worker that must find its own incarnation's leader.
        manifest = se.endpoint(NAME, weights, pods_per_group=2, tp=1, pp=2, drain_seconds=0)
        manifest["spec"]["placement"]["nodeSelector"] = {"type": "real"}  # no kwok node
        apply(cluster, namespace, manifest)
        sf.ready(cluster, namespace, NAME)
        old = sf.pods(cluster, namespace, NAME)
        (leader,) = [p for p in old if label(p, "rank") == "0"]
        lost = leader["spec"]["nodeName"]
        old_names = {p["metadata"]["name"] for p in old}
        old_hosts = {se.hostname(p) for p in old}
        address = se.service_address(cluster, namespace, NAME)
        first = wait_for(
            lambda: _served(address),
            timeout=60,
            what="an answer through the client Service",
        )
        assert first.served_by == se.hostname(leader)

        answers = Answers(address)
        successor_seen: list[float] = []
        with cluster.local.real_nodes().kubelet_stopped(lost):
            stopped = time.time()

            def successor_serving() -> list[dict] | None:
                pods = sf.pods(cluster, namespace, NAME)
                new = [p for p in pods if p["metadata"]["name"] not in old_names]
                if new and not successor_seen:
                    successor_seen.append(time.time())
                if len(new) == 2 and all(map(is_ready, new)) and _new_answer(answers, old_hosts):
                    return pods
                return None

            # The node is marked NotReady after the controller-manager's grace, the group is
            # found lost NODE_LOST_GRACE later, and the new one starts as any group does.
            deadline = node_lost_after(cluster) + NODE_LOST_GRACE + sf.STARTUP
            pods = wait_for(successor_serving, timeout=deadline, what="the group serving again")
            recovered = time.time() - stopped
            new = [p for p in pods if p["metadata"]["name"] not in old_names]
            left = [p for p in pods if p["metadata"]["name"] in old_names]

            # served by a new incarnation, away from the lost node ...
            assert {incarnation(p) for p in new} == {max(map(incarnation, old)) + 1}
            assert all(p["spec"]["nodeName"] != lost for p in new), new
            # ... while the old pods on the lost node are still there, Terminating
            on_lost = [p for p in left if p["spec"].get("nodeName") == lost]
            assert on_lost and all(map(is_deleting, on_lost)), left
            # its worker found its own leader: the DNS name it was given is the new leader's
            (new_leader,) = [p for p in new if label(p, "rank") == "0"]
            (new_worker,) = [p for p in new if label(p, "rank") == "1"]
            env = {e["name"]: e.get("value") for e in new_worker["spec"]["containers"][0]["env"]}
            assert env["DARWIN_LEADER_ADDRESS"].split(".")[0] == se.hostname(new_leader)
            assert se.hostname(new_leader) not in old_hosts
            logs = cluster.kubectl("logs", "-n", namespace, new_leader["metadata"]["name"]).stdout
            assert "all 2 ranks joined" in logs, logs
        seen = answers.stop()

        # Once its successor existed, the old incarnation never answered through the Service.
        assert successor_seen, "the successor was never seen"
        late = [(t, host) for t, host in seen if host in old_hosts and t >= successor_seen[0]]
        assert not late, f"the old incarnation answered after its successor existed: {late}"
        assert seen[-1][1] == se.hostname(new_leader)
        print(f"lost node {lost}: serving again {recovered:.1f}s after its kubelet stopped")

        # The kubelet is back: it ends the old pods, and nothing else changes.
        wait_for(
            lambda: (
                not (old_names & {p["metadata"]["name"] for p in sf.pods(cluster, namespace, NAME)})
            ),
            timeout=node_lost_after(cluster) + 120,
            what="the old pods gone once the kubelet is back",
        )
        now = sf.pods(cluster, namespace, NAME)
        assert {p["metadata"]["uid"] for p in now} == {p["metadata"]["uid"] for p in new}
    finally:
        code = operator.stop()
    assert code == 0, f"operator exited with {code} on SIGTERM:\n{operator.log()}"


def _served(address: tuple[str, int]) -> se.Answer | None:
    try:
        answer = se.complete(address, NAME, timeout=5)
    except OSError:
        return None
    return answer if answer.status == 200 else None


def _new_answer(answers: Answers, old_hosts: set[str]) -> bool:
    return bool(answers.seen) and answers.seen[-1][1] not in old_hosts
