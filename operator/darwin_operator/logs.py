"""Log setup of `darwin-operator run`: text for people (the default), JSON for log pipelines.

A line about one endpoint carries the endpoint the way kopf's own per-object loggers do, as a
`k8s_ref` record attribute: text lines start with `[namespace/name]`, JSON lines have
`namespace` and `name` fields. `endpoint_log()` gives such a logger to the operator's code.
What is logged are names, phases and counts: never a pod body, an environment value or a
Secret (the operator does not read Secret data at all).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from darwin_operator import api

FORMATS = ("text", "json")
TEXT_FORMAT = "[%(asctime)s] %(name)-28.28s [%(levelname)-7.7s] %(message)s"


def _ref(record: logging.LogRecord) -> dict[str, Any] | None:
    ref = getattr(record, "k8s_ref", None)
    return ref if isinstance(ref, dict) else None


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ref = _ref(record)
        if ref is not None:
            namespace, name = ref.get("namespace"), ref.get("name")
            record = copy.copy(record)
            record.msg = (
                f"[{namespace}/{name}] {record.msg}" if namespace else f"[{name}] {record.msg}"
            )
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the object if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = _ref(record)
        if ref is not None:
            for key in ("kind", "namespace", "name"):
                if ref.get(key):
                    entry[key] = ref[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str = "text", verbose: bool = False) -> None:
    """Root logging to stderr in the given format (replaces what kopf.configure() would set)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # As kopf.configure(): asyncio's own chatter only with --verbose.
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.propagate = verbose
    if not verbose:
        asyncio_logger.handlers[:] = [logging.NullHandler()]


class _EndpointLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def endpoint_log(logger: logging.Logger, namespace: str, name: str) -> logging.LoggerAdapter:
    """`logger`, with every line marked as about the DarwinEndpoint namespace/name. k8s_skip
    keeps kopf from posting such lines as Kubernetes Events."""
    ref = {"apiVersion": api.API_VERSION, "kind": api.KIND, "namespace": namespace, "name": name}
    return _EndpointLogger(logger, {"k8s_ref": ref, "k8s_skip": True})
