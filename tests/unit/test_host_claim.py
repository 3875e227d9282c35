"""The claim on the host's real-node state: who holds it, and whether it is still being started."""

from __future__ import annotations

import os
import subprocess
import sys

import host


def test_a_claim_is_starting_while_the_process_that_took_it_runs(tmp_path):
    claim = host.Claim(tmp_path / "claim")
    state = claim.take(tmp_path / "cluster")
    assert state["owner"] == str(tmp_path / "cluster")
    assert claim.read()["starter"][0] == os.getpid()
    assert claim.starting()


def test_a_claim_whose_starter_is_gone_is_not_starting(tmp_path):
    claim = host.Claim(tmp_path / "claim")
    claim.take(tmp_path / "cluster")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    state = claim.read()
    state["starter"] = [int(gone.stdout), host.process_start_time(os.getpid())]
    claim.write(state)
    assert not claim.starting()


def test_removing_a_claim_leaves_nothing(tmp_path):
    claim = host.Claim(tmp_path / "claim")
    with claim.locked():
        claim.take(tmp_path / "cluster")
    claim.remove()
    assert list(tmp_path.iterdir()) == []
