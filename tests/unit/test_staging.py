"""The staging container's pure parts: its spec, the failure table and what the operator reads.

The script itself runs for real against the hub stand-in in tests/staging; here only its
classification of hf's output runs (bash, no hf), one known line per failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from darwin_operator import staging
from darwin_operator.api import SecretKeyRef

MODEL = "FINAL-Bench/Darwin-398B-JGOS"
TARGET = "/models/staged/FINAL-Bench--Darwin-398B-JGOS/main"


def container(**changes):
    args = {
        "model_id": MODEL,
        "revision": "main",
        "cache_dir": "/models",
        "token_secret_ref": {"name": "hf-token", "key": "token"},
        "image": "vllm/vllm-openai:v0.33.0",
    } | changes
    return staging.staging_container(**args)


def env_of(c):
    return {e["name"]: e for e in c["env"]}


def test_the_container_runs_hf_in_the_engine_image_with_its_inputs_in_the_environment():
    c = container()
    assert c["image"] == "vllm/vllm-openai:v0.33.0"
    assert c["command"][:2] == ["bash", "-c"]
    assert "hf download" in c["command"][2] and "hf cache verify" in c["command"][2]
    env = env_of(c)
    assert env["DARWIN_MODEL"]["value"] == MODEL
    assert env["DARWIN_REVISION"]["value"] == "main"
    assert env["DARWIN_TARGET"]["value"] == TARGET
    assert env["HF_HOME"]["value"] == "/models/hf-home"
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    assert c["volumeMounts"] == [{"name": "weights", "mountPath": "/models"}]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_token_reference_may_be_the_api_model():
    ref = SecretKeyRef(name="hub", key="t")
    assert env_of(container(token_secret_ref=ref))["HF_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "hub", "key": "t"}
    }


def test_no_token_no_hf_token_and_the_users_env_comes_last():
    c = container(
        token_secret_ref=None,
        revision=None,
        extra_env=[{"name": "HF_ENDPOINT", "value": "http://mirror:8080"}],
    )
    names = [e["name"] for e in c["env"]]
    assert "HF_TOKEN" not in names
    assert names[-1] == "HF_ENDPOINT"
    assert env_of(c)["DARWIN_REVISION"]["value"] == "main"


def test_layout_one_directory_per_revision_with_the_marker_inside():
    d = staging.model_dir("/mnt/nvme/", "org/model", "refs/pr/1")
    assert d == "/mnt/nvme/staged/org--model/refs--pr--1"
    assert staging.model_dir("/m", "org/model", None).endswith("/org--model/main")
    assert staging.marker_path("/mnt/nvme", "org/model", "refs/pr/1") == (
        d + "/" + staging.MARKER_NAME
    )


def test_prune_removes_the_marker_first_then_the_revision(tmp_path):
    cache = tmp_path / "models"
    target = Path(staging.model_dir(str(cache), "org/m", "main"))
    other = Path(staging.model_dir(str(cache), "org/m", "v2"))
    for d in (target, other):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "w.safetensors").write_bytes(b"x")
        Path(staging.marker_path(str(cache), "org/m", d.name)).write_text("{}")
    c = staging.prune_container("org/m", "main", str(cache), "img")
    assert c["volumeMounts"] == [{"name": "weights", "mountPath": str(cache)}]
    env = {e["name"]: e["value"] for e in c["env"]}
    for _ in range(2):  # a second run finds nothing and succeeds
        subprocess.run(c["command"], env=env, check=True, capture_output=True, timeout=30)
        assert not target.exists() and other.exists()
    assert script_order(c["command"][2], "rm -f", "rm -rf")


def script_order(script, first, second):
    return script.index(first) < script.index(second)


def test_exit_codes_and_reasons_are_distinct_and_clear_of_shell_and_signal_codes():
    codes = [f.exit_code for f in staging.FAILURES]
    assert len(set(codes)) == len(codes)
    assert len({f.reason for f in staging.FAILURES}) == len(codes)
    # 1 and 2 are hf's and bash's own; 126/127 command not found; >128 signals
    assert all(2 < c < 126 for c in codes)


@pytest.mark.parametrize("failure", staging.FAILURES, ids=lambda f: f.reason)
def test_every_exit_code_reads_back_as_its_reason_and_message(failure):
    parsed = staging.parse_staging_failure(
        {"exitCode": failure.exit_code, "reason": "Error", "message": "line one\nline two"}
    )
    assert parsed == (failure.reason, "line one line two")
    assert staging.is_retryable(failure.reason) == failure.retryable


def test_success_and_kubelet_reasons():
    assert staging.parse_staging_failure(None) is None
    assert staging.parse_staging_failure({"exitCode": 0, "reason": "Completed"}) is None
    assert staging.parse_staging_failure({"exit_code": 137, "reason": "OOMKilled"})[0] == (
        "StagingOOMKilled"
    )
    reason, message = staging.parse_staging_failure({"exitCode": 143, "reason": "Error"})
    assert reason == "StagingInterrupted" and "signal 15" in message
    assert staging.is_retryable("StagingInterrupted")
    reason, message = staging.parse_staging_failure({"exitCode": 1, "message": "boom"})
    assert (reason, message) == ("StagingFailed", "boom")
    assert not staging.is_retryable("HubUnauthorized")


# One line of hf 2.4's real output (tracebacks with HF_DEBUG=1) per failure.
HF_LINES = {
    "WeightsVolumeFull": "OSError: [Errno 28] No space left on device",
    "WeightsVolumeNotWritable": "PermissionError: [Errno 13] Permission denied: '/models/x'",
    "HubUnauthorized": "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error.",
    "HubAccessDenied": "huggingface_hub.errors.GatedRepoError: 403 Client Error.",
    "ModelNotFound": "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error.",
    "RevisionNotFound": "huggingface_hub.errors.RevisionNotFoundError: 404 Client Error.",
    "HubUnreachable": "httpx2.ConnectError: [Errno 111] Connection refused",
    "StagingFailed": "ValueError: something else entirely",
}


@pytest.mark.parametrize("reason", list(HF_LINES))
def test_the_script_classifies_hfs_output(tmp_path, reason):
    log = tmp_path / "hf.log"
    log.write_text(f"Traceback (most recent call last):\n  ...\n{HF_LINES[reason]}\n\n")
    termination = tmp_path / "termination-log"
    program = (
        "set -u; model=org/m; revision=main; target=/models/t; token_hint='no token'\n"
        'termination_log="$1"\n'
        + staging.staging_script()
        .split("\nfail() {", 1)[1]
        .split("\nif [ -f", 1)[0]
        .join(["fail() {", ""])
        + '\nclassify "$2"\n'
    )
    run = subprocess.run(
        ["bash", "-c", program, "classify", str(termination), str(log)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    expected = staging.FAILURE_BY_REASON[reason]
    assert run.returncode == expected.exit_code, run.stderr
    message = termination.read_text()
    assert "\n" not in message and message
    assert staging.parse_staging_failure({"exitCode": run.returncode, "message": message}) == (
        reason,
        message,
    )
