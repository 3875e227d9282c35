"""Loading reads every byte of the model, so its time grows with the bytes."""

from __future__ import annotations

import re
import time

from tests.standin.standin_process import wait_for

RATE = 4 << 20  # bytes per second


def _load_seconds(output: str) -> float:
    found = re.search(r"Model loading took .* \((\d+) bytes\) and ([\d.]+) seconds", output)
    assert found, output
    return float(found.group(2))


def test_load_time_grows_with_the_bytes(spawn, model):
    env = {"STANDIN_LOAD_BYTES_PER_SECOND": str(RATE)}
    small = spawn(str(model(1 << 20, "small")), env=env)
    large = spawn(str(model(6 << 20, "large")), env=env)
    started = time.monotonic()
    small.wait_health(200)
    large.wait_health(200)
    assert time.monotonic() - started >= (6 << 20) / RATE
    assert _load_seconds(small.output()) >= (1 << 20) / RATE
    assert _load_seconds(large.output()) >= (6 << 20) / RATE
    assert _load_seconds(large.output()) > _load_seconds(small.output())


def test_slow_load_from_the_environment(spawn, model):
    proc = spawn(str(model(1000)), env={"STANDIN_FAULT": "slow-load:1.5"})
    started = time.monotonic()
    proc.wait_health(200)
    assert time.monotonic() - started >= 1.5
    assert _load_seconds(proc.output()) >= 1.5


def test_slow_load_from_the_fault_file_while_loading(spawn, model):
    # 2 MB at 4 MB/s: the fault file is read (every 0.2 s) before the read ends.
    proc = spawn(str(model(2 << 20)), env={"STANDIN_LOAD_BYTES_PER_SECOND": str(RATE)})
    wait_for(lambda: "Loading weights of" in proc.output(), 10, "the load to start")
    proc.fault_file.write_text("slow-load:2")
    proc.wait_health(200)
    assert _load_seconds(proc.output()) >= 2.0
