""" "Loading" a model: find its files where vLLM would and read every byte of them.

vLLM reads a model from a directory given as the model, or from the Hugging Face cache layout
(models--ORG--NAME/snapshots/REV/) under --download-dir or HF_HOME. So does the stand-in, plus
a plain ORG/NAME directory under --download-dir. It never downloads: a model not found locally
fails the load, as vLLM fails offline. Reading takes time in proportion to the bytes (throttled
by STANDIN_LOAD_BYTES_PER_SECOND), then STANDIN_LOAD_EXTRA_SECONDS and any slow-load fault.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from vllm_standin import log

CHUNK = 1 << 20


class ModelNotFound(Exception):
    pass


def _hub_roots(download_dir: str | None) -> list[Path]:
    if download_dir:
        return [Path(download_dir)]
    # expanduser, not Path.home(): a container may run as a uid without a passwd entry.
    home = os.path.expanduser("~")
    hf_home = Path(os.environ.get("HF_HOME") or Path(home) / ".cache" / "huggingface")
    hub = os.environ.get("HF_HUB_CACHE")
    return [Path(hub)] if hub else [hf_home / "hub"]


def model_dir(model: str, download_dir: str | None, revision: str | None) -> Path:
    if model.startswith(("/", "./", "../")):
        path = Path(model)
        if path.is_dir():
            return path
        raise ModelNotFound(f"model directory {model} does not exist")
    looked = []
    for root in _hub_roots(download_dir):
        repo = root / f"models--{model.replace('/', '--')}"
        snapshot = repo / "snapshots" / (revision or "main")
        for candidate in (snapshot, repo, root / model):
            looked.append(str(candidate))
            if candidate.is_dir():
                return candidate
    raise ModelNotFound(
        f"model {model} is not on this node (looked in {', '.join(looked)}); "
        "the vLLM stand-in never downloads"
    )


def model_files(directory: Path) -> list[Path]:
    files = [p for p in sorted(directory.rglob("*")) if p.is_file()]
    return files


def read_all(
    files: list[Path], bytes_per_second: float, extra_seconds: Callable[[], float]
) -> tuple[int, float]:
    """Read every byte; returns (bytes, seconds). extra_seconds() is asked once reading is done
    and again until the extra time has passed (a slow-load fault may raise it meanwhile)."""
    start = time.monotonic()
    total = sum(p.stat().st_size for p in files)
    done = 0
    next_report = 0.0
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                done += len(chunk)
                if bytes_per_second > 0:
                    ahead = done / bytes_per_second - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                if total and done / total >= next_report:
                    log.info(f"Loading weights: {100 * done / total:.0f}% of {total} bytes")
                    next_report += 0.25
    read_done = time.monotonic()
    while (left := read_done + extra_seconds() - time.monotonic()) > 0:
        time.sleep(min(left, 0.2))
    return done, time.monotonic() - start
