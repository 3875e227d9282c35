"""Logs: text by default, JSON with --log-format json; every line about an endpoint names it;
no secret value ever reaches a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from darwin_operator import logs, runner
from darwin_operator.cluster import ApiError
from darwin_operator.reconciler import Controller, Reconciler
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object

SECRET = "hf_TOKENVALUE-never-in-logs-0123456789"
SPEC = spec_doc(
    model={"name": "FINAL-Bench/Darwin-398B-JGOS", "tokenSecretRef": {"name": "hf-token"}},
    engine={"env": [{"name": "WANDB_API_KEY", "value": SECRET}]},
)


def test_run_takes_a_log_format_and_defaults_to_text():
    parser = runner.argparse.ArgumentParser()
    runner.add_arguments(parser)
    assert parser.parse_args([]).log_format == "text"
    assert parser.parse_args(["--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-format", "xml"])


def capture(log_format: str) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(log_format))
    handler.setLevel(logging.DEBUG)
    return stream, handler


def run_everything(name: str) -> FakeCluster:
    """A whole life at DEBUG level: creation, admission, Ready, a failing reconcile, and a
    rendered object the API server rejects."""
    fake = FakeCluster(endpoint_object(name, "llm", SPEC))

    async def scenario() -> None:
        reconciler = Reconciler(fake)  # type: ignore[arg-type]
        await reconciler.reconcile("llm", name)
        await reconciler.reconcile("llm", name)
        fake.bind_all(at=0)
        fake.ready_all(at=0)
        await reconciler.reconcile("llm", name)
        controller = Controller(reconciler.reconcile, debounce_seconds=0, error_backoff=(10,))
        fake.apply_error = ApiError(500, "InternalError", "etcd is down")
        fake.endpoint["status"] = {}  # the services are applied again
        controller.trigger("llm", name)
        await asyncio.sleep(0.2)
        await controller.stop()
        fake.apply_error = ApiError(422, "Invalid", 'Service "x" is invalid: spec.ports')
        await reconciler.reconcile("llm", name)
        await reconciler.events_posted()

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        asyncio.run(scenario())
    finally:
        root.setLevel(level)
    return fake


@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_no_secret_value_is_ever_logged_and_endpoint_lines_name_the_endpoint(log_format):
    stream, handler = capture(log_format)
    logging.getLogger().addHandler(handler)
    try:
        fake = run_everything(f"logs-{log_format}")
    finally:
        logging.getLogger().removeHandler(handler)
    assert fake.endpoint["status"]["phase"] == "Failed"  # every path above was taken
    text = stream.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    assert any("create group 0" in line for line in lines)
    assert any("reconcile failed" in line for line in lines)
    assert SECRET not in text
    assert SECRET not in json.dumps(fake.endpoint["status"]) + " ".join(fake.events)
    for line in lines:
        if log_format == "json":
            entry = json.loads(line)
            if entry["logger"].startswith("darwin_operator"):
                assert (entry["namespace"], entry["name"]) == ("llm", "logs-json"), line
                assert entry["kind"] == "DarwinEndpoint"
        elif line.startswith("[") and "darwin_operator" in line:  # not a traceback line
            assert "[llm/logs-text] " in line, line


def test_text_lines_are_for_people_and_json_lines_are_objects():
    record = logging.LogRecord(
        "darwin_operator.x", logging.WARNING, __file__, 1, "a %s", ("b",), None
    )
    record.k8s_ref = {"kind": "DarwinEndpoint", "namespace": "llm", "name": "e"}
    text = logs.formatter("text").format(record)
    assert text.endswith("[WARNING] [llm/e] a b")
    entry = json.loads(logs.formatter("json").format(record))
    assert entry["message"] == "a b" and entry["level"] == "warning"
    assert (entry["namespace"], entry["name"]) == ("llm", "e")
