"""The staging script with the real `hf` against the hub stand-in: a complete download, a dropped
connection, a killed run resumed, a hub gone away, a corrupt file, and the failures a user causes
(revision, token, disk). What was fetched is counted by the stand-in, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct

import pytest

from darwin_operator import staging
from tests.standin.hub.repo import shard_name
from tests.standin.standin_process import wait_for

from .conftest import Stager, marker_of, staged_files

KiB, MiB = 1 << 10, 1 << 20
# Two small shards finish early and two large ones are still moving when a fault strikes.
SHARDS = [512 * KiB, 512 * KiB, 6 * MiB, 6 * MiB]
SMALL = [256 * KiB]
RATE = 4 * MiB  # bytes per second of the stand-in's link in the tests that interrupt
HF_CHUNK = 10 * MiB  # huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def safetensors_end(path) -> int:
    """Where the last tensor of a safetensors file ends, from its header."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    return 8 + length + max(ends)


def test_a_complete_download_is_the_hubs_files_and_is_marked_last(start_hub, tmp_path):
    hub = start_hub(SHARDS)
    stager = Stager(tmp_path, hub)
    run = stager.run()
    assert run.code == 0, run.output[-4000:]
    rev, target = hub.revision(), stager.target()
    assert staged_files(target) == {path: f.size for path, f in rev.files.items()}
    for path, f in rev.files.items():
        assert sha256_of(target / path) == f.sha256, path
        if path.endswith(".safetensors"):
            assert safetensors_end(target / path) == f.size, path
    marker = marker_of(stager.marker())
    assert marker["commit"] == rev.commit and marker["model"] == "darwin-test/tiny-398b"
    assert (marker["files"], marker["bytes"]) == (len(rev.files), rev.total_bytes)
    assert hub.stats()["bytes_served"] == rev.total_bytes

    # With the marker there, staging again asks the hub for nothing.
    before = hub.stats()
    again = stager.run()
    assert again.code == 0 and "already staged" in again.output
    assert hub.stats() == before


def test_a_connection_dropped_mid_file_resumes_with_a_range_request(start_hub, tmp_path):
    # hf writes what it received in chunks of HF_CHUNK and asks for the rest from the last whole
    # chunk on: a drop 16 MiB into a 24 MiB shard costs at most what came after 10 MiB again.
    hub = start_hub([24 * MiB], "--drop-after-bytes", str(16 * MiB))
    stager = Stager(tmp_path, hub)
    run = stager.run()
    assert run.code == 0, run.output[-4000:]
    requests = hub.stats()["requests"]
    (drop,) = [r for r in requests if "dropped" in r]
    resumed = [r for r in requests if r.get("range") and r.get("path") == drop["dropped"]]
    assert len(resumed) == 1 and resumed[0]["status"] == 206, requests
    start = int(resumed[0]["range"].removeprefix("bytes=").rstrip("-"))
    assert start == drop["at"] - drop["at"] % HF_CHUNK and start > 0
    refetched = drop["at"] - start
    assert hub.stats()["bytes_served"] == hub.revision().total_bytes + refetched
    assert marker_of(stager.marker())["bytes"] == hub.revision().total_bytes


def test_a_killed_run_resumes_without_fetching_finished_files_again(start_hub, tmp_path):
    hub = start_hub(SHARDS, "--bytes-per-second", str(RATE))
    stager = Stager(tmp_path, hub)
    proc, *_ = stager.start()
    wait_for(
        lambda: hub.stats()["bytes_served"] >= 8 * MiB or proc.poll() is not None,
        stager.deadline(RATE),
        "8 MiB served",
        interval=0.05,
    )
    os.killpg(proc.pid, signal.SIGKILL)  # as a node reboot or a deleted pod would
    proc.wait()
    # what the stand-in was still sending into the dead connections counts for the killed run
    wait_for(lambda: hub.stats()["active"] == 0, 60, "the killed run's responses to end")
    target, rev = stager.target(), hub.revision()
    assert not stager.marker().exists()
    finished = staged_files(target)
    assert any(name.endswith(".safetensors") for name in finished), finished
    assert len(finished) < len(rev.files)
    assert list(target.rglob("*.incomplete")), "hf left no partial file behind"

    before = hub.stats()["bytes_served"]
    run = stager.run(bps=RATE)
    assert run.code == 0, run.output[-4000:]
    assert not list(target.rglob("*.incomplete"))
    fetched = hub.stats()["bytes_served"] - before
    assert fetched == rev.total_bytes - sum(finished.values())
    assert marker_of(stager.marker())["bytes"] == rev.total_bytes


def test_a_hub_gone_away_is_a_retryable_failure_and_the_next_run_completes(start_hub, tmp_path):
    hub = start_hub(SHARDS, "--bytes-per-second", str(RATE), "--die-after-bytes", str(8 * MiB))
    stager = Stager(tmp_path, hub)
    run = stager.run(bps=RATE)
    assert hub.wait_exit(30) == 3
    reason, message = run.failure
    assert (run.code, reason) == (26, "HubUnreachable"), run.output[-4000:]
    assert "darwin-test/tiny-398b@main" in message and staging.is_retryable(reason)
    assert not stager.marker().exists()
    finished = staged_files(stager.target())

    hub = start_hub(SHARDS, "--bytes-per-second", str(RATE), port=hub.port)
    run = stager.run(bps=RATE)
    assert run.code == 0, run.output[-4000:]
    assert hub.stats()["bytes_served"] == hub.revision().total_bytes - sum(finished.values())


def test_a_file_that_fails_verification_is_removed_and_fetched_again(start_hub, tmp_path):
    bad = shard_name(2, len(SHARDS))
    hub = start_hub(SHARDS, "--corrupt", bad)
    stager = Stager(tmp_path, hub)
    run = stager.run()
    assert run.failure[0] == "DownloadIncomplete", run.output[-4000:]
    assert bad in run.message and staging.is_retryable("DownloadIncomplete")
    assert not stager.marker().exists() and not (stager.target() / bad).exists()
    hub.stop()

    hub = start_hub(SHARDS, port=hub.port)
    run = stager.run()
    assert run.code == 0, run.output[-4000:]
    assert hub.stats()["bytes_served"] == hub.revision().files[bad].size


def test_a_revision_the_hub_does_not_have(start_hub, tmp_path):
    stager = Stager(tmp_path, start_hub(SMALL))
    run = stager.run(revision="no-such-branch")
    assert run.failure == (
        "RevisionNotFound",
        "the hub has no revision no-such-branch of darwin-test/tiny-398b",
    ), run.output[-4000:]
    assert run.code == 25 and not staging.is_retryable("RevisionNotFound")
    assert not stager.marker("no-such-branch").exists()


@pytest.mark.parametrize(
    ("options", "token", "reason", "says"),
    [
        ((), None, "HubUnauthorized", "no token was given"),
        ((), "wrong", "HubUnauthorized", "the token from model.tokenSecretRef was refused"),
        (("--gated",), None, "HubUnauthorized", "no token was given"),
        (("--gated",), "wrong", "HubAccessDenied", "has not been granted access"),
    ],
    ids=["private-no-token", "private-wrong-token", "gated-no-token", "gated-wrong-token"],
)
def test_a_repository_that_needs_a_token(start_hub, tmp_path, options, token, reason, says):
    hub = start_hub(SMALL, "--token", "hf_right", *options)
    stager = Stager(tmp_path, hub)
    run = stager.run(token=token)
    assert run.failure[0] == reason, run.output[-4000:]
    assert says in run.message and not staging.is_retryable(reason)
    assert not stager.marker().exists()
    assert stager.run(token="hf_right").code == 0


def in_private_tmpfs(cache_dir, options: str) -> list[str]:
    """Runs the command with a small tmpfs over cache_dir in a mount namespace of its own, so
    nothing outside the process changes (root)."""
    mount = f'mount -t tmpfs -o {options} darwin-test "$0" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(cache_dir)]


@pytest.mark.parametrize(
    ("options", "reason"),
    [("size=4m", "WeightsVolumeFull"), ("size=4m,ro", "WeightsVolumeNotWritable")],
    ids=["full", "read-only"],
)
def test_a_weights_volume_that_cannot_hold_the_model(start_hub, tmp_path, options, reason):
    if os.geteuid() != 0:
        pytest.fail("needs root for a mount namespace with a tmpfs")
    stager = Stager(tmp_path, start_hub(SHARDS))
    run = stager.run(wrap=in_private_tmpfs(stager.cache_dir, options))
    assert run.failure[0] == reason, run.output[-4000:]
    assert str(stager.target()) in run.message and not staging.is_retryable(reason)
    assert not stager.marker().exists()
