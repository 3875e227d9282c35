"""Benchmark of how long `darwin-operator run` takes to exit on SIGTERM, on the local control
plane (64 fake B200 nodes by default), with its work queue busy.

For each count of endpoints (each 2 groups x 2 pods x 2 GPUs; past 64 of them the rest wait for
GPUs, and every reconcile of a waiting endpoint counts the free GPUs of the whole cluster), the
endpoints are applied at once, the operator (peering through a KopfPeering, as the chart runs
it) gets SIGTERM while it is creating pods ("burst") and again, restarted, once every pod exists
("settled"). With --api-latency, the operator talks to the API server through a proxy that
delays every response that long (an overloaded API server: requests hang in the client's
threads), and gets SIGTERM once 16 responses are held back. Prints seconds to exit, exit code,
whether the --shutdown-seconds budget cut the exit short, whether the peering keep-alive was
withdrawn, and how long a fresh start takes to have every pod the endpoints need. No thresholds.

    .venv/bin/python bench/bench_shutdown.py                  # starts and stops its own cluster
    .venv/bin/python bench/bench_shutdown.py --kubeconfig K   # a cluster that is already up
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time

from cluster_setup import DARWIN_CRDS, BenchCluster, add_cluster_arguments, bench_cluster
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.slow_api import SlowApi
from tests.specs import endpoint_manifest

SHAPE = dict(replicas=2, tp=2, pp=2, pods_per_group=2, ready_after="1s")
PODS_PER_ENDPOINT = 4
PEERING = "bench-shutdown"
BUDGET_SPENT = "still stopping after"  # shutdown.py's line when the budget cut the exit short


class Bench:
    def __init__(self, cluster: BenchCluster, budget: float | None):
        self.kubeconfig, self.workdir = cluster.kubeconfig, cluster.workdir
        self.kubectl = cluster.kubectl
        self.budget = budget
        self.raw = cluster.raw()
        self.runs = 0

    def pod_count(self, namespace: str) -> int:
        listing = self.raw.request_sync(
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        return len(listing.get("items") or [])

    def operator(self, namespace: str, name: str, kubeconfig: str | None = None) -> OperatorProcess:
        self.runs += 1
        args = ["--peering", PEERING, "--peering-lifetime", "60"]
        if self.budget is not None:
            args += ["--shutdown-seconds", str(self.budget)]
        return OperatorProcess(
            kubeconfig or self.kubeconfig,
            self.workdir / f"operator-{name}.log",
            resync_seconds=30,
            namespaces=(namespace,),
            extra_args=tuple(args),
            env={"POD_ID": f"bench-{self.runs}"},
        )

    def peers(self, namespace: str) -> dict:
        path = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}"
        return self.raw.request_sync("GET", path).get("status") or {}

    def sigterm(self, process: OperatorProcess, namespace: str) -> dict:
        identity = process.env["POD_ID"]
        registered = identity in self.peers(namespace)
        assert process.process is not None
        started = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        try:
            code = process.process.wait(300)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "killed after 300 s"
        seconds = time.monotonic() - started
        return {
            "seconds": seconds,
            "code": code,
            "cut": BUDGET_SPENT in process.log(tail=50),
            "released": registered and identity not in self.peers(namespace),
        }

    def run(self, count: int, latency: float) -> list[dict]:
        namespace = f"bench-stop-{count}-{int(time.time())}"
        self.kubectl("create", "namespace", namespace)
        expected = count * PODS_PER_ENDPOINT
        items = [endpoint_manifest(f"ep-{i}", **SHAPE) for i in range(count)]
        row = {"endpoints": count, "latency": latency}
        rows = []
        slow = SlowApi(self.kubeconfig, latency).start() if latency else None
        through = slow.kubeconfig(self.workdir / f"slow-{count}.kubeconfig") if slow else None
        first = self.operator(namespace, f"{count}-{latency:g}-burst", through)
        first.start(timeout=120)
        self.kubectl(
            "apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )  # fmt: skip
        deadline = time.monotonic() + 300
        busy_pods = min(expected // 4, 200)
        while not (slow.held >= 16 if slow else self.pod_count(namespace) >= busy_pods):
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.2)
        rows.append({**row, "moment": "burst", **self.sigterm(first, namespace)})
        if slow:
            slow.stop()

        second = self.operator(namespace, f"{count}-{latency:g}-settled")
        started = time.monotonic()
        second.start()
        while self.pod_count(namespace) < expected:
            assert time.monotonic() < started + 600, second.log()
            time.sleep(0.5)
        carried_on = time.monotonic() - started
        rows[-1]["carried_on"] = carried_on
        if not latency:
            time.sleep(5)  # the queue keeps resyncing the waiting endpoints
            rows.append({**row, "moment": "settled", **self.sigterm(second, namespace)})
        else:
            self.sigterm(second, namespace)
        self.kubectl("delete", "namespace", namespace, "--wait=false")
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=64)
    parser.add_argument("--counts", default="50,300")
    parser.add_argument(
        "--api-latency",
        default="0,5",
        help="seconds each API response is held back, comma-separated runs (default 0,5)",
    )
    parser.add_argument(
        "--shutdown-seconds",
        type=float,
        default=None,
        help="passed to the operator; default: the operator's own default",
    )
    args = parser.parse_args()
    with bench_cluster(args, "darwin-bench-stop-") as cluster:
        bench = Bench(cluster, args.shutdown_seconds)
        cluster.apply_crds(
            DARWIN_CRDS, "darwinendpoints.serving.darwin.ai", "kopfpeerings.kopf.dev"
        )
        rows = [
            row
            for latency in args.api_latency.split(",")
            for count in args.counts.split(",")
            for row in bench.run(int(count), float(latency))
        ]

    budget = "default" if args.shutdown_seconds is None else f"{args.shutdown_seconds:g} s"
    print(f"\nSIGTERM to exit: {args.nodes} nodes, each endpoint 2 groups x 2 pods x 2 GPUs")
    print(f"--shutdown-seconds: {budget}; peering through a KopfPeering (lifetime 60 s)")
    header = (
        f"{'API latency s':>13} {'endpoints':>9} {'moment':>8} {'exit s':>7} {'code':>5} "
        f"{'budget cut':>10} {'peering released':>16} {'restart to all pods s':>21}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        carried = f"{r['carried_on']:.1f}" if "carried_on" in r else ""
        print(
            f"{r['latency']:>13g} {r['endpoints']:>9} {r['moment']:>8} {r['seconds']:>7.2f} "
            f"{r['code']!s:>5} "
            f"{'yes' if r['cut'] else 'no':>10} {'yes' if r['released'] else 'no':>16} "
            f"{carried:>21}"
        )
    print(f"operator logs: {cluster.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
