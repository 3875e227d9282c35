"""A real Prometheus (Debian's package, /usr/bin/prometheus) for the e2e tests: started on a free
loopback port with a temporary storage directory, scraping the given targets every second and
evaluating the given rules files, stopped after the test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.checks import free_port

BINARY = "/usr/bin/prometheus"
INSTALL_HINT = "install Prometheus: `make prometheus-tools` (tests/prometheus/install.sh)"


class Prometheus:
    def __init__(self, directory: Path, targets: list[str], rule_files: list[Path] = ()) -> None:
        if not os.access(BINARY, os.X_OK):
            pytest.fail(f"no {BINARY}: {INSTALL_HINT}")
        self.directory = directory
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "darwin-operator", "static_configs": [{"targets": targets}]}
            ],
        }
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    BINARY,
                    f"--config.file={self.directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not start:\n{self.log()}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/PATH; the whole answer (status, data or errorType/error)."""
        query = urllib.parse.urlencode(params)
        request = f"{self.url}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # 4xx/5xx carry the error as JSON
            return json.loads(error.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def vector(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's samples: {sorted labels: value}; fails on a query error."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return {
            tuple(sorted(sample["metric"].items())): float(sample["value"][1])
            for sample in answer["data"]["result"]
        }

    def value(self, expr: str) -> float | None:
        samples = self.vector(expr)
        assert len(samples) <= 1, f"{expr}: more than one sample: {samples}"
        return next(iter(samples.values()), None)

    def log(self, tail: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
