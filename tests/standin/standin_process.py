"""Stand-in processes on 127.0.0.1 for the stand-in's tests, and waiting with deadlines."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Generous bounds: the machine is shared; every wait ends as soon as its condition holds.
START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class StandIn:
    """One `vllm serve` process of the stand-in; its output goes to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int):
        self.args, self.log, self.port = args, log, port
        full_env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1", **env}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vllm_standin", *args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        timeout=10.0,
        headers: dict | None = None,
    ) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(
                method,
                path,
                body=data,
                headers={"content-type": "application/json", **(headers or {})},
            )
            response = conn.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            conn.close()

    def health(self, timeout: float = 2.0) -> int | None:
        """/health's status code, or None when nothing answers."""
        try:
            return self.request("GET", "/health", timeout=timeout)[0]
        except OSError:
            return None

    def wait_health(self, code: int, timeout: float = START_SECONDS) -> None:
        wait_for(
            lambda: self.health() == code or self.proc.poll() is not None,
            timeout,
            f"/health {code}",
        )
        assert self.health() == code, f"exited {self.proc.poll()}:\n{self.output()}"

    def wait_exit(self, timeout: float = START_SECONDS) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout:g} s:\n{self.output()}") from None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Group:
    """The ranks of one vLLM instance on 127.0.0.1 (workers are given --port too, as in pods)."""

    def __init__(self, spawn, model_dir, nnodes=3, timeout=None, env=None):
        self.spawn, self.env = spawn, env
        self.http = free_port()
        self.common = [
            str(model_dir),
            "--served-model-name",
            "m",
            "--nnodes",
            str(nnodes),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
        ]
        if timeout is not None:
            self.common += ["--distributed-timeout-seconds", str(timeout)]

    def start(self, rank: int, *extra: str, env=None):
        flags = ["--node-rank", str(rank)] + (["--headless"] if rank else [])
        return self.spawn(*self.common, *flags, *extra, port=self.http, env=env or self.env)
