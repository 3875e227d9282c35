"""The staging container's script run for real: the `hf` of the vLLM venv (tests/vllm/setup-venv.sh,
the same huggingface_hub as vLLM 0.33.0's image) against the hub stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from darwin_operator import staging
from tests.standin.hub_process import HubProcess

VLLM_VERSION = "0.33.0"
SETUP = "tests/vllm/setup-venv.sh"
VENV_MARKER = ".darwin-vllm-complete"
MODEL = "darwin-test/tiny-398b"
# hf's own start (imports) takes seconds on a loaded machine; every run also waits for its bytes.
RUN_MARGIN_SECONDS = 180.0


def hf_bin_dir() -> Path:
    explicit = os.environ.get("DARWIN_VLLM_PYTHON")
    if explicit:
        return Path(explicit).parent
    cache = Path(os.environ.get("DARWIN_CACHE") or Path.home() / ".cache" / "darwin-operator")
    venv = cache / f"vllm-{VLLM_VERSION}"
    if not (venv / VENV_MARKER).is_file() or not (venv / "bin" / "hf").is_file():
        pytest.fail(f"no complete vLLM {VLLM_VERSION} venv with hf at {venv}: run {SETUP}")
    return venv / "bin"


@dataclass
class Run:
    code: int
    message: str  # the termination message
    output: str
    seconds: float

    @property
    def failure(self) -> tuple[str, str] | None:
        return staging.parse_staging_failure({"exitCode": self.code, "message": self.message})


class Stager:
    """Runs staging.staging_container()'s command as the kubelet would: its env, the token
    Secret's value as HF_TOKEN, the weights volume at cache_dir, the termination log."""

    def __init__(self, tmp_path: Path, hub: HubProcess, cache_dir: Path | None = None):
        self.tmp, self.hub = tmp_path, hub
        self.cache_dir = cache_dir or tmp_path / "models"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.runs = 0

    def container(self, revision: str | None = "main", token: str | None = None) -> dict:
        ref = {"name": "hf-token", "key": "token"} if token is not None else None
        return staging.staging_container(
            MODEL,
            revision,
            str(self.cache_dir),
            ref,
            "vllm/vllm-openai:v0.33.0",
            extra_env=[{"name": "HF_ENDPOINT", "value": self.hub.url}],
        )

    def target(self, revision: str | None = "main") -> Path:
        return Path(staging.model_dir(str(self.cache_dir), MODEL, revision))

    def marker(self, revision: str | None = "main") -> Path:
        return Path(staging.marker_path(str(self.cache_dir), MODEL, revision))

    def start(
        self, revision: str | None = "main", token: str | None = None, wrap: list[str] = ()
    ) -> tuple[subprocess.Popen, Path, Path, float]:
        self.runs += 1
        c = self.container(revision, token)
        env = {"PATH": f"{hf_bin_dir()}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.tmp)}
        for var in c["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
        if token is not None:
            env["HF_TOKEN"] = token
        termination = self.tmp / f"termination-{self.runs}"
        env["DARWIN_TERMINATION_LOG"] = str(termination)
        log = self.tmp / f"staging-{self.runs}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*wrap, *c["command"]],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc, termination, log, time.monotonic()

    def finish(self, proc, termination: Path, log: Path, started: float, timeout: float) -> Run:
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(
                f"staging still running after {timeout:g} s:\n{log.read_text()[-4000:]}"
            ) from None
        seconds = time.monotonic() - started
        message = termination.read_text() if termination.exists() else ""
        return Run(code, message, log.read_text(errors="replace"), seconds)

    def run(self, revision: str | None = "main", token: str | None = None, wrap=(), bps=0) -> Run:
        started = self.start(revision, token, list(wrap))
        return self.finish(*started, timeout=self.deadline(bps))

    def deadline(self, bytes_per_second: float) -> float:
        total = sum(self.hub.shards) * 1.1
        return RUN_MARGIN_SECONDS + (total / bytes_per_second if bytes_per_second else 0)


def staged_files(target: Path) -> dict[str, int]:
    """The model's files in a staged directory (hf's own .cache/ and the marker left out)."""
    return {
        p.relative_to(target).as_posix(): p.stat().st_size
        for p in target.rglob("*")
        if p.is_file()
        and not p.relative_to(target).as_posix().startswith(".cache/")
        and p.name != staging.MARKER_NAME
    }


def marker_of(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def start_hub(tmp_path_factory):
    started: list[HubProcess] = []
    data = tmp_path_factory.getbasetemp() / "hub-data"  # generated once per session

    def start(shards: list[int], *options: str, port: int | None = None, revisions=("main",)):
        log = tmp_path_factory.mktemp("hub") / "hub.log"
        hub = HubProcess(
            MODEL, data, log, shards=shards, revisions=revisions, port=port, options=options
        )
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()
