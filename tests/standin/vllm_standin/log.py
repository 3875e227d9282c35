"""Log lines shaped like vLLM's (`INFO 11-29 08:50:01 [where] message`), to stdout."""

from __future__ import annotations

import os
import sys
import time


def _emit(level: str, message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    sys.stdout.write(f"(pid={os.getpid()}) {level} {stamp} [vllm-standin] {message}\n")
    sys.stdout.flush()


def info(message: str) -> None:
    _emit("INFO", message)


def warning(message: str) -> None:
    _emit("WARNING", message)


def error(message: str) -> None:
    _emit("ERROR", message)
