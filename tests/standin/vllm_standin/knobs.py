"""The stand-in's own settings, from environment variables (all optional).

STANDIN_LOAD_BYTES_PER_SECOND  read the model files no faster than this (0: as fast as the disk)
STANDIN_LOAD_EXTRA_SECONDS     a slow load: this much longer after the files are read
STANDIN_REQUEST_SECONDS        time each completion takes (header x-standin-delay-seconds
                               overrides it per request), so that tests can hold requests open
STANDIN_FAULT                  a fault from the start (see faults.py)
STANDIN_FAULT_FILE             a file whose content, when it changes, is a fault to inject now
                               (default /tmp/vllm-standin-fault)
STANDIN_DEATH_EXIT_SECONDS     how long /health answers 503 after the engine died, before the
                               process exits (vLLM exits by itself soon after its engine died)
STANDIN_OOM_CAP_MB             the `oom` fault gives up (exit 1) past this, should no memory
                               limit stop it (default 2048)
vLLM's own: VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1 keeps a dead engine's server up (503 forever);
VLLM_ENGINE_READY_TIMEOUT_S (default 600) bounds the wait for every rank's load.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


def _float(env: dict, name: str, default: float) -> float:
    text = env.get(name, "")
    return float(text) if text.strip() else default


@dataclass(frozen=True)
class Knobs:
    load_bytes_per_second: float
    load_extra_seconds: float
    request_seconds: float
    fault: str
    fault_file: Path
    death_exit_seconds: float
    oom_cap_mb: float
    keep_alive_on_engine_death: bool
    engine_ready_timeout: float
    hostname: str

    @classmethod
    def from_env(cls, env: dict | None = None) -> Knobs:
        env = dict(os.environ if env is None else env)
        return cls(
            load_bytes_per_second=_float(env, "STANDIN_LOAD_BYTES_PER_SECOND", 0.0),
            load_extra_seconds=_float(env, "STANDIN_LOAD_EXTRA_SECONDS", 0.0),
            request_seconds=_float(env, "STANDIN_REQUEST_SECONDS", 0.0),
            fault=env.get("STANDIN_FAULT", "").strip(),
            fault_file=Path(env.get("STANDIN_FAULT_FILE") or "/tmp/vllm-standin-fault"),
            death_exit_seconds=_float(env, "STANDIN_DEATH_EXIT_SECONDS", 2.0),
            oom_cap_mb=_float(env, "STANDIN_OOM_CAP_MB", 2048.0),
            keep_alive_on_engine_death=env.get("VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "0")
            in ("1", "true", "True"),
            engine_ready_timeout=_float(env, "VLLM_ENGINE_READY_TIMEOUT_S", 600.0),
            hostname=socket.gethostname(),
        )
