"""The operator as a real process (`darwin-operator run`), the way users run it, for e2e tests
and the benchmark: start, wait for liveness, SIGTERM or SIGKILL, read its log and resources."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# What the Kubernetes clients read besides their flags.
CREDENTIAL_VARIABLES = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def operator_binary() -> str:
    beside = Path(sys.executable).parent / "darwin-operator"
    return str(beside if beside.exists() else REPO / ".venv" / "bin" / "darwin-operator")


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: str | None,
        log_path: Path,
        *,
        namespaces: tuple[str, ...] = (),
        resync_seconds: float = 3.0,
        scheduling_timeout: float = 120.0,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = (),
    ) -> None:
        """kubeconfig None: no --kubeconfig (credentials from `env`, e.g. in-cluster); the
        launcher, if any, runs the operator's argv (e.g. in a mount namespace of its own)."""
        self.kubeconfig = kubeconfig
        self.env = env or {}
        self.launcher = launcher
        self.log_path = log_path
        self.namespaces = namespaces
        self.resync_seconds = resync_seconds
        self.scheduling_timeout = scheduling_timeout
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.peak_rss_kib = 0

    def argv(self) -> list[str]:
        args = [
            *self.launcher,
            operator_binary(),
            "run",
            *(("--kubeconfig", self.kubeconfig) if self.kubeconfig else ()),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--resync-seconds",
            str(self.resync_seconds),
            "--scheduling-timeout",
            str(self.scheduling_timeout),
            *self.extra_args,
        ]
        for ns in self.namespaces:
            args += ["--namespace", ns]
        return args

    def start(self, timeout: float = 60) -> OperatorProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.metrics_port, self.health_port = _free_port(), _free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        log.write(f"\n===== start {time.strftime('%H:%M:%S')} {' '.join(self.argv())}\n".encode())
        log.flush()
        # --kubeconfig alone, as documented: nothing in the environment may stand in for it.
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
        env.update(self.env, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"operator exited with {self.process.returncode}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"operator not live after {timeout}s:\n{self.log()}")
            time.sleep(0.2)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return response.read().decode()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the operator process so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = int(line.split()[1])
        return self.peak_rss_kib

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the operator must shut down cleanly."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"operator ignored SIGTERM for {timeout}s:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: the operator dies wherever it is."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self, tail: int = 80) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])


def running_operator(cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """Body of the test modules' `operator` fixture: the operator watching the test's
    namespace, stopped with SIGTERM after the test (which must exit it cleanly)."""
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", namespaces=(namespace,)
    ).start()
    yield process
    code = process.stop()
    assert code == 0, f"operator exited with {code} on SIGTERM:\n{process.log()}"


# ---- endpoints and what tests read back ----

GPU = "nvidia.com/gpu"


def endpoint_manifest(
    name: str,
    *,
    replicas: int = 2,
    tp: int = 2,
    pp: int = 3,
    pods_per_group: int = 1,
    ready_after: str = "2s",
    drain_seconds: int = 2,
    placement: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "serving.darwin.ai/v1alpha1",
        "kind": "DarwinEndpoint",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "model": model or {"name": "FINAL-Bench/Darwin-398B-JGOS"},
            "engine": {"tensorParallelSize": tp, "pipelineParallelSize": pp},
            "placement": {
                "podsPerGroup": pods_per_group,
                "gpuProduct": "NVIDIA-B200",
                **(placement or {}),
            },
            "rollout": {"drainSeconds": drain_seconds},
            "podMetadata": {"annotations": {"darwin.test/ready-after": ready_after}},
        },
    }


def apply(cluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def get_endpoint(cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.json("get", "darwinendpoint", name, "-n", namespace)


def endpoint_status(cluster, namespace: str, name: str) -> dict[str, Any]:
    return get_endpoint(cluster, namespace, name).get("status") or {}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def pods(cluster, namespace: str, selector: str = "serving.darwin.ai/endpoint") -> list[dict]:
    return cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]


def endpoint_pods(cluster, namespace: str, name: str) -> list[dict]:
    return pods(cluster, namespace, f"serving.darwin.ai/endpoint={name}")


def events(cluster, namespace: str, name: str) -> list[dict]:
    return cluster.json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]


def event_reasons(cluster, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, namespace, name)]


def is_gated(pod: dict[str, Any]) -> bool:
    gates = pod["spec"].get("schedulingGates") or []
    return any(g["name"] == "serving.darwin.ai/gang" for g in gates)


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def label(pod: dict[str, Any], key: str) -> str:
    return (pod["metadata"].get("labels") or {}).get(f"serving.darwin.ai/{key}", "")


def gpus_of(pod: dict[str, Any]) -> int:
    return sum(
        int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0))
        for c in pod["spec"]["containers"]
    )


def bound_gpus(cluster) -> int:
    """GPUs requested by bound, non-terminal pods anywhere in the cluster."""
    items = cluster.json(
        "get", "pods", "-A", "--field-selector", "status.phase!=Succeeded,status.phase!=Failed"
    )["items"]
    return sum(gpus_of(p) for p in items if p["spec"].get("nodeName"))


def wait_for_idle_gpus(cluster, timeout: float = 120) -> None:
    """Tests that count GPUs need every one free: pods of earlier tests must be gone."""
    from tests.e2e.waiting import wait_for

    wait_for(lambda: bound_gpus(cluster) == 0, timeout=timeout, what="every GPU free")


class PodRecorder:
    """Every version of every pod in a namespace, from a watch started before the action, so a
    test can see states that last only a moment (e.g. created gated)."""

    def __init__(self, cluster, namespace: str) -> None:
        self._process = subprocess.Popen(
            [
                cluster.kubectl_binary,
                "--kubeconfig",
                cluster.kubeconfig,
                "get",
                "pods",
                "-n",
                namespace,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(0.5)  # let the watch open before the test acts

    def stop(self) -> list[dict[str, Any]]:
        self._process.terminate()
        out, _ = self._process.communicate(timeout=10)
        decoder = json.JSONDecoder()
        events: list[dict[str, Any]] = []
        text = out.strip()
        while text:
            try:
                obj, end = decoder.raw_decode(text)
            except json.JSONDecodeError:
                break  # the watch was stopped in the middle of writing its last event
            events.append(obj)
            text = text[end:].lstrip()
        return events

    def first_versions(self) -> dict[str, dict[str, Any]]:
        """Each pod as it was first seen (its ADDED event)."""
        first: dict[str, dict[str, Any]] = {}
        for event in self.stop():
            pod = event["object"]
            first.setdefault(pod["metadata"]["name"], pod)
        return first
