"""SIGTERM as vLLM 0.33 handles it: drain within --shutdown-timeout, else abort."""

from __future__ import annotations

import json
import signal
import threading

from tests.standin.standin_process import wait_for


def _request_in_background(proc, delay: float) -> dict:
    outcome: dict = {}

    def run() -> None:
        try:
            status, body, _ = proc.request(
                "POST",
                "/v1/completions",
                {"model": "m", "prompt": "x", "max_tokens": 2},
                headers={"x-standin-delay-seconds": str(delay)},
                timeout=60,
            )
            outcome["status"], outcome["body"] = status, json.loads(body)
        except OSError as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    outcome["thread"] = thread
    return outcome


def _running(proc) -> float:
    text = proc.request("GET", "/metrics")[1].decode()
    line = next(x for x in text.splitlines() if x.startswith("vllm:num_requests_running{"))
    return float(line.rsplit(" ", 1)[1])


def test_sigterm_with_shutdown_timeout_lets_requests_in_flight_finish(spawn, model):
    proc = spawn(str(model(1000)), "--served-model-name", "m", "--shutdown-timeout", "30")
    proc.wait_health(200)
    in_flight = _request_in_background(proc, delay=2.0)
    wait_for(lambda: _running(proc) == 1, 10, "the request to be in flight")

    proc.signal(signal.SIGTERM)

    def refused() -> bool:
        status, _, _ = proc.request("POST", "/v1/completions", {"model": "m", "prompt": "y"})
        return status == 503

    wait_for(refused, 10, "new requests to be refused while draining")
    assert proc.health() == 200  # vLLM's /health reports a dead engine only
    assert proc.wait_exit() == 0
    in_flight["thread"].join()
    assert in_flight.get("status") == 200, in_flight
    assert in_flight["body"]["usage"]["completion_tokens"] == 2


def test_sigterm_without_shutdown_timeout_aborts_requests_in_flight(spawn, model):
    proc = spawn(str(model(1000)), "--served-model-name", "m")
    proc.wait_health(200)
    in_flight = _request_in_background(proc, delay=60.0)
    wait_for(lambda: _running(proc) == 1, 10, "the request to be in flight")

    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0
    in_flight["thread"].join()
    assert "error" in in_flight, in_flight  # the connection died with the process
    assert "aborting 1 in-flight requests" in proc.output()


def test_the_drain_ends_at_the_shutdown_timeout(spawn, model):
    proc = spawn(str(model(1000)), "--served-model-name", "m", "--shutdown-timeout", "1")
    proc.wait_health(200)
    in_flight = _request_in_background(proc, delay=60.0)
    wait_for(lambda: _running(proc) == 1, 10, "the request to be in flight")
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit(timeout=30) == 0
    in_flight["thread"].join()
    assert "error" in in_flight, in_flight
    assert "aborting 1 requests still in flight" in proc.output()
