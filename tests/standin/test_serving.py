"""One stand-in process: nothing listens before the load, then vLLM's HTTP surface."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.standin.standin_process import wait_for

METRIC_NAMES = Path(__file__).resolve().parent.parent / "vllm" / "metric_names.txt"


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in /metrics")


def test_listens_only_once_loaded_then_serves(spawn, model):
    # 4 MB at 8 MB/s: half a second during which nothing may listen.
    proc = spawn(
        str(model(4 << 20)),
        "--served-model-name",
        "darwin",
        "hub/Model",
        env={"STANDIN_LOAD_BYTES_PER_SECOND": str(8 << 20)},
    )
    wait_for(lambda: "Loading weights" in proc.output(), 10, "the load to start")
    assert proc.health() is None, "something listens while the weights load"
    proc.wait_health(200)

    status, body, _ = proc.request("GET", "/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["darwin", "hub/Model"]

    for path, payload, field in (
        ("/v1/completions", {"model": "hub/Model", "prompt": "a b c", "max_tokens": 5}, "text"),
        (
            "/v1/chat/completions",
            {
                "model": "darwin",
                "messages": [{"role": "user", "content": "hi there"}],
                "max_tokens": 3,
            },
            "message",
        ),
    ):
        status, body, headers = proc.request("POST", path, payload)
        assert status == 200, body
        answer = json.loads(body)
        assert field in answer["choices"][0]
        assert answer["usage"]["completion_tokens"] == payload["max_tokens"]
        assert headers["x-standin-hostname"] == answer["system_fingerprint"]

    status, body, _ = proc.request("POST", "/v1/completions", {"model": "other", "prompt": "x"})
    assert status == 404
    assert json.loads(body)["error"]["message"] == "The model `other` does not exist."


def test_metrics_have_vllm_names_and_count_requests(spawn, model):
    proc = spawn(str(model(1000)), "--served-model-name", "m")
    proc.wait_health(200)
    before = proc.request("GET", "/metrics")[1].decode()
    for _ in range(3):
        proc.request(
            "POST", "/v1/completions", {"model": "m", "prompt": "one two", "max_tokens": 4}
        )
    after = proc.request("GET", "/metrics")[1].decode()

    assert (
        _metric(after, "vllm:generation_tokens_total")
        - _metric(before, "vllm:generation_tokens_total")
        == 12
    )
    assert (
        _metric(after, "vllm:prompt_tokens_total") - _metric(before, "vllm:prompt_tokens_total")
        == 6
    )
    assert _metric(after, "vllm:request_success_total", 'finished_reason="length"') == 3
    assert _metric(after, "vllm:e2e_request_latency_seconds_count") == 3

    known = {line for line in METRIC_NAMES.read_text().splitlines() if line.startswith("vllm:")}
    families = set(re.findall(r"^# TYPE (\S+) ", after, re.M))
    base = {f.removesuffix("_total") for f in families}  # vLLM's counters gain _total
    assert base <= known, f"not vLLM 0.33.0 names: {sorted(base - known)}"


def test_a_model_not_on_the_node_fails_the_start(spawn, tmp_path):
    proc = spawn("FINAL-Bench/Darwin-398B-JGOS", "--download-dir", str(tmp_path / "empty"))
    assert proc.wait_exit() == 1
    assert "is not on this node" in proc.output()


def test_a_hub_id_is_found_in_the_download_dir(spawn, tmp_path):
    snapshot = tmp_path / "cache" / "models--org--name" / "snapshots" / "main"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"\0" * 4096)
    proc = spawn("org/name", "--download-dir", str(tmp_path / "cache"))
    proc.wait_health(200)
    assert "(4096 bytes)" in proc.output()
