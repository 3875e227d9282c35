"""Cost of the operator's /metrics with N endpoints (default 50): series count and scrape time.

Each endpoint is reconciled to Ready in-process, against an in-memory cluster (the unit tests'
fake), by the operator's own Reconciler: every per-endpoint series a real run has (replicas,
phases, group phases, GPUs, recreation counters, startup histograms of every phase) is there.
Then /metrics is served by prometheus-client's HTTP server, as `darwin-operator run` does, and
scraped repeatedly. Prints a table; no thresholds.

    .venv/bin/python bench/bench_metrics.py [--endpoints 50] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import urllib.request

import cluster_setup  # noqa: F401 - the repo's test tooling on the import path
import prometheus_client
from tests.e2e.checks import free_port
from tests.specs import spec_doc
from tests.unit.fake_cluster import FakeCluster, endpoint_object

from darwin_operator.reconciler import Reconciler


async def reconcile_to_ready(namespace: str, name: str) -> None:
    fake = FakeCluster(endpoint_object(name, namespace, spec_doc()))
    fake.clock = 1000.0
    clock = [1000.0]
    reconciler = Reconciler(fake, clock=lambda: clock[0])  # type: ignore[arg-type]
    await reconciler.reconcile(namespace, name)
    clock[0] = 1010.0
    await reconciler.reconcile(namespace, name)
    fake.bind_all(at=1015.0)
    clock[0] = 1020.0
    await reconciler.reconcile(namespace, name)
    fake.ready_all(at=1100.0)
    clock[0] = 1105.0
    await reconciler.reconcile(namespace, name)
    assert fake.endpoint["status"]["phase"] == "Ready", fake.endpoint["status"]


def series(text: str, prefix: str = "") -> int:
    return sum(
        1
        for line in text.splitlines()
        if line and not line.startswith("#") and line.startswith(prefix)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()

    port = free_port()
    prometheus_client.start_http_server(port, addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> tuple[str, float]:
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        return body, time.perf_counter() - started

    baseline, _ = scrape()
    for i in range(args.endpoints):
        asyncio.run(reconcile_to_ready(f"team-{i % 5}", f"endpoint-{i}"))
    body, _ = scrape()
    timings = sorted(scrape()[1] for _ in range(args.scrapes))

    total, darwin = series(body), series(body, "darwin_")
    one = sum(1 for line in body.splitlines() if 'endpoint="endpoint-0"' in line)
    rows = [
        ("endpoints (2 Ready groups each)", f"{args.endpoints}"),
        ("series, all (process, python, darwin)", f"{total}"),
        ("series, darwin_*", f"{darwin}"),
        ("series per endpoint", f"{one}"),
        ("darwin_* series with no endpoint", f"{darwin - one * args.endpoints}"),
        ("series before any endpoint", f"{series(baseline)}"),
        ("/metrics size", f"{len(body.encode()) / 1024:.1f} KiB"),
        ("scrape time, median", f"{statistics.median(timings) * 1000:.1f} ms"),
        ("scrape time, p90", f"{timings[int(len(timings) * 0.9) - 1] * 1000:.1f} ms"),
        ("scrape time, max", f"{timings[-1] * 1000:.1f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
