"""The hub stand-in as a process on this host, for tests: start, ask what it served, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.standin.hub import repo
from tests.standin.standin_process import START_SECONDS, free_port, wait_for

HERE = Path(__file__).resolve().parent


class HubProcess:
    """`python -m hub` serving one model; output in a log file, files generated under data_dir."""

    def __init__(
        self,
        model: str,
        data_dir: Path,
        log: Path,
        *,
        shards: list[int],
        revisions: tuple[str, ...] = ("main",),
        host: str = "127.0.0.1",
        port: int | None = None,
        options: tuple[str, ...] = (),
    ):
        self.model, self.data_dir, self.log, self.host = model, data_dir, log, host
        self.port = port or free_port()
        self.shards = shards
        args = [
            "--model",
            model,
            "--data-dir",
            str(data_dir),
            "--host",
            host,
            "--port",
            str(self.port),
            "--shards",
            ",".join(str(n) for n in shards),
        ]
        for name in revisions:
            args += ["--revision", name]
        env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", *args, *options],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: self.proc.poll() is not None or self._answers(),
            START_SECONDS * 4,  # the first start generates the files
            f"the hub stand-in on port {self.port}",
            interval=0.2,
        )
        assert self.proc.poll() is None, f"the hub stand-in exited:\n{self.output()}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def revision(self, name: str = "main") -> repo.Revision:
        """The files the stand-in serves (generated again here: same inputs, same bytes)."""
        return repo.generate(self.data_dir, self.model, name, self.shards)

    def _answers(self) -> bool:
        try:
            self.stats()
            return True
        except OSError:
            return False

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_standin/stats", timeout=5) as r:
            return json.loads(r.read())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
