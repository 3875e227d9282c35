"""Faults injected on request, from STANDIN_FAULT (at start) or the fault file (any time).

    crash          the engine dies: the leader's /health turns 503 and the process exits 1
                   (a worker's process exits 1 at once, which kills its leader's engine)
    hang           the engine stops making progress: requests never finish, /health stays 200
                   (a hung worker hangs its leader's engine the same way)
    freeze         the whole process stops answering: HTTP requests, /health included, get no
                   response, SIGTERM is ignored (only SIGKILL ends it), as a stopped process
    slow-load:S    loading takes S seconds longer (default 30); only matters before it is loaded
    oom            allocate memory until the kernel's OOM killer ends the process
    exit:CODE      the process exits with CODE at once (default 1)
A fault from the environment that is not about loading applies once the rank has loaded. The
fault file is read every 0.2 s; writing a new content injects it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vllm_standin import log

KINDS = ("crash", "hang", "freeze", "slow-load", "oom", "exit")
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Fault:
    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> Fault:
        kind, _, value = text.strip().partition(":")
        if kind not in KINDS:
            raise ValueError(f"unknown fault {text!r}; known: {', '.join(KINDS)}")
        return cls(kind, float(value) if value else None)


def watch(path: Path, inject: Callable[[Fault], None]) -> None:
    """Call inject() for each new content of `path`, from a daemon thread."""

    def loop() -> None:
        seen = _read(path)  # a file left from before the start is not a new request
        while True:
            time.sleep(POLL_SECONDS)
            text = _read(path)
            if text and text != seen:
                try:
                    inject(Fault.parse(text))
                except ValueError as e:
                    log.error(f"fault file {path}: {e}")
            seen = text

    threading.Thread(target=loop, name="fault-file", daemon=True).start()


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def allocate_until_killed(cap_mb: float, on_cap: Callable[[], None]) -> None:
    """Touch memory at 256 MiB/s until killed; past cap_mb call on_cap (no limit stopped us)."""
    chunk = 64 << 20
    held: list[bytes] = []
    while len(held) * 64 < cap_mb:
        held.append(b"\x01" * chunk)  # bytes of ones: every page is written, so really resident
        time.sleep(0.25)
    on_cap()
