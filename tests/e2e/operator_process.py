"""The operator as a real process (`darwin-operator run`), the way users run it, for e2e tests
and the benchmark: start, wait for liveness, SIGTERM or SIGKILL, read its log and resources."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.checks import free_port

REPO = Path(__file__).resolve().parents[2]
# What the Kubernetes clients read besides their flags.
CREDENTIAL_VARIABLES = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


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
        self.metrics_port, self.health_port = free_port(), free_port()
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
                self.kill()  # not left behind by the failing test
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
