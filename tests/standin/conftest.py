"""Fixtures of the stand-in's tests: a model of N bytes, stand-in processes killed at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.standin.standin_process import StandIn, free_port


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
