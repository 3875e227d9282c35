"""Helpers of the stand-in's tests: stand-in processes on 127.0.0.1, a model of N bytes."""

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

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

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


@pytest.fixture
def model(tmp_path):
    """make(bytes) -> a model directory holding that many bytes in two files."""

    def make(size: int, name: str = "model") -> Path:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text('{"architectures": ["StandIn"]}')
        with open(directory / "model.safetensors", "wb") as f:
            f.truncate(size)
        return directory

    return make


@pytest.fixture
def spawn(tmp_path):
    """spawn(model_args..., env=..., port=...) -> a running StandIn, killed at the end."""
    started: list[StandIn] = []

    def start(
        *args: str, env: dict | None = None, port: int | None = None, host_args: bool = True
    ) -> StandIn:
        port = port or free_port()
        argv = ["serve", *args]
        if host_args:
            argv += ["--host", "127.0.0.1", "--port", str(port)]
        env = {"STANDIN_FAULT_FILE": str(tmp_path / f"fault-{len(started)}"), **(env or {})}
        proc = StandIn(argv, env, tmp_path / f"standin-{len(started)}.log", port)
        proc.fault_file = Path(env["STANDIN_FAULT_FILE"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
