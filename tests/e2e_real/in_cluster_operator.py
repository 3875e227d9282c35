"""The operator installed by the chart in the real-node cluster, for the tests: its release, its
pods, and what the host sees of them (their processes, their HTTP ports)."""

from __future__ import annotations

import http.client
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import in_cluster
import yaml

from tests.e2e.waiting import wait_for

VALUES = yaml.safe_load((in_cluster.CHART / "values.yaml").read_text())
METRICS_PORT, HEALTH_PORT = VALUES["metrics"]["port"], VALUES["health"]["port"]
LIFETIME = VALUES["peering"]["lifetime"]
# kopf renews a keep-alive 5-10 s before it expires, so a standby resumes at most `lifetime`
# seconds after the active replica's last renewal; one renewal margin on top leaves room for it
# to list, reconcile and write. The bound README states for the chart's settings.
TAKEOVER_BOUND = LIFETIME + 5
INSTALL_TIMEOUT = 240  # helm --wait: image start and the first list, on a shared 2-core host


class Release:
    """A release of the chart in `home`, named uniquely (its ClusterRole is cluster-wide)."""

    def __init__(self, cluster, home: str) -> None:
        self.cluster, self.home = cluster, home
        # contains the chart's name, so the chart uses it unchanged as the objects' name
        self.name = f"darwin-operator-{uuid.uuid4().hex[:6]}"
        self.installed = False

    def deploy(self, values: dict) -> None:
        in_cluster.deploy(
            self.cluster.kubeconfig, self.name, self.home, values, timeout=INSTALL_TIMEOUT
        )
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            in_cluster.uninstall(self.cluster.kubeconfig, self.name, self.home)
            self.installed = False

    def pods(self) -> list[dict]:
        selector = f"app.kubernetes.io/instance={self.name}"
        items = self.cluster.json("get", "pods", "-n", self.home, "-l", selector)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def running(self, count: int) -> list[dict]:
        """Wait for `count` operator pods, each Ready, and return them."""

        def ready() -> list[dict] | None:
            pods = self.pods()
            ok = len(pods) == count and all(container_ready(p) for p in pods)
            return pods if ok else None

        return wait_for(ready, timeout=INSTALL_TIMEOUT, what=f"{count} operator pods Ready")


@contextmanager
def installed(cluster, home: str, values: dict) -> Iterator[Release]:
    """The chart installed for the block, uninstalled after it (also when the test failed),
    with the cluster-scoped peering object the operator makes for itself."""
    release = Release(cluster, home)
    try:
        release.deploy(values)
        yield release
    finally:
        release.uninstall()
        cluster.kubectl(
            "delete", "clusterkopfpeering", release.name, "--ignore-not-found", check=False
        )


def container_ready(pod: dict) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def restarts(pod: dict) -> int:
    return sum(s["restartCount"] for s in pod["status"].get("containerStatuses") or [])


def http_get(pod: dict, port: int, path: str) -> tuple[int, str]:
    """From the host to the pod's IP, as the kubelet's probes and a Prometheus would come."""
    conn = http.client.HTTPConnection(pod["status"]["podIP"], port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def reconciles(pod: dict) -> float:
    """How many reconciles this replica has run since its container started (all results)."""
    try:
        status, text = http_get(pod, METRICS_PORT, "/metrics")
    except OSError:
        return 0.0  # not listening (yet, or any more)
    assert status == 200, status
    samples = re.findall(r"^darwin_reconcile_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(value) for value in samples)


def operator_process(pod: dict) -> int:
    """The host pid of the operator in the pod: pid 1 of the container, in the pod's cgroup."""
    uid = pod["metadata"]["uid"].replace("-", "_")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text().replace("-", "_")
            if f"pod{uid}" not in cgroup:
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = next(
            (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
        )
        if nspid[-1:] == ["1"] and any(b"darwin-operator" in part for part in cmdline):
            found.append(int(entry.name))
    assert len(found) == 1, f"operator processes of pod {pod['metadata']['name']}: {found}"
    return found[0]


def process_ids(pid: int) -> tuple[int, int]:
    """The (uid, gid) the process runs as, as the host's kernel sees it."""
    status = Path(f"/proc/{pid}/status").read_text()
    uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]
    gid = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1]
    return int(uid), int(gid)
