"""vLLM 0.33.0's own parser and serve-argument validation accept the operator's command lines.

The operator never imports vllm: its command lines (darwin_operator.engine) are sent, all in one
subprocess call, to tests/vllm/check_serve_args.py running in the vLLM venv that
tests/vllm/setup-venv.sh builds (python: $DARWIN_VLLM_PYTHON, else the cache path below).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from darwin_operator import engine
from darwin_operator.api import DarwinEndpointSpec

VLLM_VERSION = "0.33.0"
HERE = Path(__file__).resolve().parent
CHECKER = HERE / "check_serve_args.py"
SETUP = "tests/vllm/setup-venv.sh"
MARKER = ".darwin-vllm-complete"  # written by setup-venv.sh once the venv is complete

ENDPOINT = "darwin-398b"
LEADER = "darwin-398b-0-0.darwin-398b-pods.llm.svc"

REFERENCE: dict[str, Any] = {
    "replicas": 2,
    "model": {"name": "FINAL-Bench/Darwin-398B-JGOS"},
    "engine": {
        "tensorParallelSize": 2,
        "pipelineParallelSize": 3,
        "dtype": "bfloat16",
        "maxModelLen": 18432,
        "trustRemoteCode": True,
    },
    "placement": {"podsPerGroup": 1},
}


def spec_of(**changes: dict[str, Any]) -> DarwinEndpointSpec:
    doc = copy.deepcopy(REFERENCE)
    for section, values in changes.items():
        doc.setdefault(section, {}).update(values)
    return DarwinEndpointSpec.model_validate(doc)


def serve_args(spec: DarwinEndpointSpec, rank: int = 0) -> list[str]:
    return engine.vllm_serve_args(spec, endpoint_name=ENDPOINT, rank=rank, leader_address=LEADER)


PER_STAGE = {"placement": {"podsPerGroup": 3}}
EXTRA_ARGS = ["--gpu-memory-utilization", "0.92", "--enable-prefix-caching"]

# case id -> (spec, rank, the launch `vllm serve` must take: an API server or a headless worker)
CASES: dict[str, tuple[DarwinEndpointSpec, int, str]] = {
    "reference": (spec_of(), 0, "api_server"),
    "per-stage-leader": (spec_of(**PER_STAGE), 0, "api_server"),
    "per-stage-worker-1": (spec_of(**PER_STAGE), 1, "headless"),
    "per-stage-worker-2": (spec_of(**PER_STAGE), 2, "headless"),
    "extra-args": (spec_of(engine={"extraArgs": EXTRA_ARGS}), 0, "api_server"),
    "per-stage-worker-extra-args": (
        spec_of(placement={"podsPerGroup": 3}, engine={"extraArgs": EXTRA_ARGS}),
        2,
        "headless",
    ),
    "revision-and-cache": (
        spec_of(
            model={
                "name": "FINAL-Bench/Darwin-398B-JGOS",
                "revision": "9f2c4e1b7a3d5c6e8f0a1b2c3d4e5f6a7b8c9d0e",
                "servedName": "darwin",
                "cache": {"persistentVolumeClaim": "darwin-models", "mountPath": "/models"},
            }
        ),
        0,
        "api_server",
    ),
    # staged weights: a directory as the model, --distributed-timeout-seconds on every rank
    "staged-per-stage-worker": (
        spec_of(
            model={
                "name": "FINAL-Bench/Darwin-398B-JGOS",
                "revision": "9f2c4e1b7a3d5c6e8f0a1b2c3d4e5f6a7b8c9d0e",
                "cache": {"hostPath": "/mnt/nvme/models", "staging": "PerNode"},
            },
            placement={"podsPerGroup": 3},
        ),
        2,
        "headless",
    ),
}

REFERENCE_ARGS = serve_args(spec_of())
NOT_A_NUMBER = list(REFERENCE_ARGS)
NOT_A_NUMBER[NOT_A_NUMBER.index("--tensor-parallel-size") + 1] = "notanumber"
# case id -> (argument list, text vLLM's error must contain)
BAD: dict[str, tuple[list[str], str]] = {
    "unknown-flag": ([*REFERENCE_ARGS, "--no-such-vllm-flag", "1"], "--no-such-vllm-flag"),
    "tp-not-a-number": (NOT_A_NUMBER, "notanumber"),
}


def vllm_python() -> Path:
    explicit = os.environ.get("DARWIN_VLLM_PYTHON")
    if explicit:
        python = Path(explicit)
        if not python.is_file():
            pytest.fail(f"DARWIN_VLLM_PYTHON={explicit} does not exist; run {SETUP}")
        return python
    cache = Path(os.environ.get("DARWIN_CACHE") or Path.home() / ".cache" / "darwin-operator")
    venv = cache / f"vllm-{VLLM_VERSION}"
    if not (venv / MARKER).is_file() or not (venv / "bin" / "python").is_file():
        pytest.fail(
            f"no complete vLLM {VLLM_VERSION} venv at {venv}: run {SETUP} "
            f"(or point DARWIN_VLLM_PYTHON at a python with vllm=={VLLM_VERSION})"
        )
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def verdicts() -> dict[str, dict[str, Any]]:
    """vLLM's verdict on every case and bad list, from one checker run (importing vllm is slow)."""
    lists = {name: serve_args(spec, rank) for name, (spec, rank, _) in CASES.items()}
    lists |= {name: argv for name, (argv, _) in BAD.items()}
    run = subprocess.run(
        [str(vllm_python()), str(CHECKER)],
        input=json.dumps(list(lists.values())),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode != 0:
        pytest.fail(f"check_serve_args.py failed ({run.returncode}):\n{run.stderr[-4000:]}")
    results = json.loads(run.stdout)
    return {
        name: {**result, "argv": argv}
        for (name, argv), result in zip(lists.items(), results, strict=True)
    }


@pytest.mark.parametrize("case", list(CASES))
def test_vllm_accepts_the_operators_command_line(verdicts, case):
    verdict = verdicts[case]
    command = "vllm serve " + " ".join(verdict["argv"])
    assert verdict["ok"], f"vLLM {VLLM_VERSION} rejects `{command}`: {verdict['error']}"
    assert verdict["launch"] == CASES[case][2], command
    assert verdict["warnings"] == [], f"vLLM warns about `{command}`: {verdict['warnings']}"


@pytest.mark.parametrize("case", list(BAD))
def test_vllm_rejects_a_bad_command_line(verdicts, case):
    verdict = verdicts[case]
    assert not verdict["ok"], f"vLLM accepted {verdict['argv']}"
    assert BAD[case][1] in verdict["error"], verdict["error"]


def test_vllm_reads_the_short_name_and_the_hub_id_as_served_names(verdicts):
    assert verdicts["reference"]["parsed"]["served_model_name"] == [
        ENDPOINT,
        "FINAL-Bench/Darwin-398B-JGOS",
    ]
    assert verdicts["revision-and-cache"]["parsed"]["served_model_name"] == [
        "darwin",
        "FINAL-Bench/Darwin-398B-JGOS",
    ]


def test_vllm_reads_the_shutdown_timeout_on_leaders_and_workers(verdicts):
    """vLLM 0.33 aborts in-flight requests on SIGTERM unless --shutdown-timeout is given."""
    for case in ("reference", "per-stage-leader", "per-stage-worker-2"):
        assert verdicts[case]["parsed"]["shutdown_timeout"] == engine.SHUTDOWN_TIMEOUT_SECONDS


def test_cases_cover_the_multi_node_flags():
    """The cases above exercise what the brief asks: mp multi-node flags, extras, revision."""
    worker = serve_args(*CASES["per-stage-worker-1"][:2])
    assert {"--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless"} <= set(
        worker
    )
    assert set(EXTRA_ARGS) <= set(serve_args(*CASES["extra-args"][:2]))
    revision_and_cache = serve_args(*CASES["revision-and-cache"][:2])
    assert "--revision" in revision_and_cache and "--download-dir" in revision_and_cache
