"""The staging container's real `hf download` + `hf cache verify` against the hub stand-in.

The stand-in serves a generated safetensors repository (`--shards`, default 16, 32, 64 and
128 MiB) over one link of `--mib-per-second` (default 32); the staging script
(darwin_operator.staging) runs with the vLLM venv's hf, as the staging pod runs it in vLLM's
image. Printed: the time of each run next to its floor (bytes / bandwidth), the bytes the
stand-in served, and what a rerun costs after a kill half way through.

    .venv/bin/python bench/bench_staging.py [--shards 16M,32M,64M,128M] [--mib-per-second 32]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cluster_setup  # noqa: F401  (first: puts the repo's test tooling on the import path)
from tests.staging.conftest import Stager, staged_files
from tests.standin.hub.main import sizes
from tests.standin.hub_process import HubProcess
from tests.standin.standin_process import wait_for

MiB = 1 << 20
MODEL = "darwin-test/tiny-398b"


def timed_run(stager: Stager) -> tuple[int, float, float]:
    """(exit code, seconds until verification began, seconds in all)."""
    proc, termination, log, started = stager.start()
    verify_at = None
    while proc.poll() is None:
        if verify_at is None and "verifying " in log.read_text(errors="replace"):
            verify_at = time.monotonic()
        time.sleep(0.05)
    end = time.monotonic()
    return proc.returncode, (verify_at or end) - started, end - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=sizes, default=[n * MiB for n in (16, 32, 64, 128)])
    parser.add_argument("--mib-per-second", type=float, default=32.0)
    args = parser.parse_args()
    rate = args.mib_per_second * MiB
    tmp = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    options = ("--bytes-per-second", str(int(rate)))
    hub = HubProcess(MODEL, tmp / "data", tmp / "hub.log", shards=args.shards, options=options)
    try:
        total = hub.revision().total_bytes
        floor = total / rate
        print(f"repository: {len(hub.revision().files)} files, {total / MiB:.1f} MiB;")
        print(f"link {args.mib_per_second:g} MiB/s, floor {floor:.1f} s\n")
        print("| run | seconds | of which verifying | floor | MiB served |")
        print("|---|---|---|---|---|")

        def row(name, code, download, whole, served, floor_s):
            assert code == 0, f"{name}: staging exited {code}"
            print(
                f"| {name} | {whole:.1f} | {whole - download:.1f} | {floor_s:.1f} |"
                f" {served / MiB:.1f} |"
            )

        fresh = Stager(tmp / "fresh", hub)
        before = hub.stats()["bytes_served"]
        code, download, whole = timed_run(fresh)
        row("complete download", code, download, whole, hub.stats()["bytes_served"] - before, floor)
        before = hub.stats()["bytes_served"]
        code, download, whole = timed_run(fresh)
        row("again, marker present", code, whole, whole, hub.stats()["bytes_served"] - before, 0)

        killed = Stager(tmp / "killed", hub)
        before = hub.stats()["bytes_served"]
        proc, *_ = killed.start()
        wait_for(
            lambda: hub.stats()["bytes_served"] - before >= total // 2 or proc.poll() is not None,
            600,
            "half the bytes",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: hub.stats()["active"] == 0, 60, "the killed run's responses to end")
        kept = sum(staged_files(killed.target()).values())
        before = hub.stats()["bytes_served"]
        code, download, whole = timed_run(killed)
        served = hub.stats()["bytes_served"] - before
        row("rerun after a kill at 50 %", code, download, whole, served, (total - kept) / rate)
        print(f"\nkilled at 50 %: {kept / MiB:.1f} MiB of finished files kept, the rerun fetched")
        print(f"{served / MiB:.1f} MiB (the files in flight start over: hf keeps no partial file)")
    finally:
        hub.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
