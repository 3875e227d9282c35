"""Run every benchmark and write what they print to bench/results/<date>-<time>-<host>.md, with
the date, the machine and the commit, so that the figures README quotes come from a file anyone
can regenerate (`make bench`).

    .venv/bin/python bench/run.py                        # all of them
    .venv/bin/python bench/run.py bench_metrics.py       # some
    .venv/bin/python bench/run.py "bench_vs_lws.py --trials 3"   # with arguments
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCHMARKS = (
    "bench_operator.py",
    "bench_rollout.py",
    "bench_vs_lws.py",
    "bench_metrics.py",
    "bench_shutdown.py",
    "bench_weights.py",
    "bench_scale.py",
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown memory"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{socket.gethostname()}: {os.cpu_count()} cores ({cpu}), {memory}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"load average at the start {load}"
    )


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    chosen = argv or list(BENCHMARKS)
    started = datetime.now(UTC)
    # one file per run: several runs a day each keep their own
    out = HERE / "results" / f"{started:%Y-%m-%d-%H%M}-{socket.gethostname()}.md"
    out.parent.mkdir(exist_ok=True)
    lines = [
        f"# Benchmarks, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine()}",
        f"- commit: {commit()}",
        f"- command: `make bench` (bench/run.py {' '.join(chosen)})",
        "",
    ]
    failed = 0
    for name in chosen:
        began = time.monotonic()
        print(f"== {name}", flush=True)
        script, *arguments = shlex.split(name)
        done = subprocess.run(
            [sys.executable, str(HERE / script), *arguments],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        print(done.stdout, end="", flush=True)
        took = time.monotonic() - began
        lines += [f"## {name}", "", f"exit status {done.returncode}, {took:.0f} s", "", "```"]
        lines += [done.stdout.rstrip()]
        if done.returncode != 0:
            failed += 1
            lines += ["--- stderr (last lines) ---", *done.stderr.rstrip().splitlines()[-20:]]
        lines += ["```", ""]
        out.write_text("\n".join(lines))  # after each one: a later failure keeps the others
    print(f"results: {out.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
