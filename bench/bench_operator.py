"""Benchmark of the operator on the local control plane (64 fake B200 nodes by default).

For 1, 10 and 50 endpoints applied at once: seconds from `kubectl apply` to every pod created,
to every gate lifted and to every group Ready; the operator's pod creation rate next to a plain
client loop creating the same pods against the same API server at the same concurrency (the
operator's API worker pool, `--api-workers`, 16 by default) and, for scale, with one thread;
operator CPU seconds and peak RSS. Both rates are timed by the same pod watch (first pod seen
to last pod seen), in alternating trials. Prints a table; no thresholds.

    .venv/bin/python bench/bench_operator.py                  # starts and stops its own cluster
    .venv/bin/python bench/bench_operator.py --kubeconfig K   # a cluster that is already up
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from cluster_setup import (
    REPO,
    BenchCluster,
    PodStream,
    add_cluster_arguments,
    apiserver_requests,
    bench_cluster,
)
from stuck import stuck_report
from tests.e2e.operator_process import OperatorProcess
from tests.specs import endpoint_manifest

from darwin_operator import render
from darwin_operator.api import DarwinEndpointSpec

CRD_FILE = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"
# The operator's concurrent API requests (darwin-operator run --api-workers, its default).
API_WORKERS = 16
# Each endpoint: 2 groups of 2 pods x 2 GPUs (TP2 x PP2), 8 GPUs; 50 of them use 400 of 512.
SHAPE = dict(replicas=2, tp=2, pp=2, pods_per_group=2, ready_after="1s")
PODS_PER_ENDPOINT = 4


@contextmanager
def stopped_at_the_end(process: OperatorProcess) -> Iterator[None]:
    """The operator stops with SIGTERM (and must exit 0) when the block ends, and is killed if
    the block fails or the benchmark is stopped: never left running after the benchmark."""
    try:
        yield
    except BaseException:
        process.kill()
        raise
    assert process.stop() == 0, process.log()


class PodWatch:
    """Notes from a namespace's pod watch, as events arrive, when the last pod appeared and when
    the last scheduling gate went."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self._gated: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.first_created = self.last_created = self.last_ungated = 0.0
        self._stream = PodStream(kubeconfig, namespace, self._event)

    def _event(self, kind: str, pod: dict, now: float) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        name = pod["metadata"]["name"]
        gated = bool(pod["spec"].get("schedulingGates"))
        with self._lock:
            if kind == "DELETED":
                self._gated.pop(name, None)
                return
            if name not in self._gated:
                self.first_created = self.first_created or now
                self.last_created = now
            if self._gated.get(name) and not gated:
                self.last_ungated = now
            self._gated[name] = gated

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._gated), sum(self._gated.values())

    def creation_rate(self, expected: int, timeout: float) -> float | None:
        """Pods per second from the first pod seen to the last, once `expected` pods were seen;
        None if they were not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.counts()[0] < expected:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return (expected - 1) / (self.last_created - self.first_created)

    def stop(self) -> None:
        self._stream.stop()


class Bench:
    def __init__(self, cluster: BenchCluster, ready_timeout: float) -> None:
        self.cluster, self.kubeconfig, self.workdir = cluster, cluster.kubeconfig, cluster.workdir
        self.kubectl = cluster.kubectl
        self.ready_timeout = ready_timeout
        self.raw = cluster.raw()

    def namespace(self, name: str) -> str:
        return self.cluster.create_namespace(name)

    def drop_namespace(self, name: str) -> None:
        self.cluster.delete_namespace(name, timeout=180)

    def run_endpoints(self, count: int) -> dict[str, float]:
        ns = self.namespace(f"bench-{count}-{int(time.time())}")
        process = OperatorProcess(
            self.kubeconfig,
            self.workdir / f"operator-{count}.log",
            namespaces=(ns,),
            extra_args=("--api-workers", str(API_WORKERS)),
            resync_seconds=30,
        ).start()
        with stopped_at_the_end(process):
            result = self.measure(process, ns, count)
        self.drop_namespace(ns)
        return result

    def measure(self, process: OperatorProcess, ns: str, count: int) -> dict[str, float]:
        cpu_start = process.cpu_seconds()
        items = [endpoint_manifest(f"ep-{i}", **SHAPE) for i in range(count)]
        expected = count * PODS_PER_ENDPOINT
        watch = PodWatch(self.kubeconfig, ns)
        started = time.monotonic()
        self.apply(ns, items)
        applied = time.monotonic() - started
        marks: dict[str, float] = {}
        deadline = started + self.ready_timeout
        endpoints_path = f"/apis/serving.darwin.ai/v1alpha1/namespaces/{ns}/darwinendpoints"
        while "ready" not in marks:
            if time.monotonic() > deadline:
                watch.stop()
                raise AssertionError(self.stuck(ns, marks, watch, expected, process))
            seen, gated = watch.counts()
            if seen == expected:
                marks.setdefault("created", watch.last_created - started)
                if gated == 0:
                    marks.setdefault("ungated", watch.last_ungated - started)
            if "ungated" in marks:
                endpoints = self.raw.request_sync("GET", endpoints_path)["items"]
                if all(
                    (e.get("status") or {}).get("phase") == "Ready"
                    and e["status"].get("readyReplicas") == 2
                    for e in endpoints
                ):
                    marks["ready"] = time.monotonic() - started
            process.rss_peak_kib()
            time.sleep(0.1)
        watch.stop()
        return {
            "endpoints": count,
            "pods": expected,
            "apply": applied,
            **marks,
            "cpu_seconds": process.cpu_seconds() - cpu_start,
            "peak_rss_mib": process.rss_peak_kib() / 1024,
        }

    def stuck(
        self, ns: str, marks: dict, watch: PodWatch, expected: int, process: OperatorProcess
    ) -> str:
        """What the cluster looks like when the endpoints are not all Ready in time: the last
        lines of the output (what bench/run.py keeps) must tell where they stopped."""
        seen, gated = watch.counts()
        endpoints = self.raw.request_sync(
            "GET", f"/apis/serving.darwin.ai/v1alpha1/namespaces/{ns}/darwinendpoints"
        )["items"]
        pods = self.raw.request_sync("GET", f"/api/v1/namespaces/{ns}/pods")["items"]
        nodes = self.raw.request_sync("GET", "/api/v1/nodes")["items"]
        return "\n".join(
            [
                process.log(),
                f"not all Ready after {self.ready_timeout:g} s; reached: {marks or 'nothing'}; "
                f"the pod watch saw {seen} of {expected} pods, {gated} gated",
                *stuck_report(endpoints, pods, nodes),
            ]
        )

    def apply(self, ns: str, items: list[dict]) -> None:
        self.cluster.apply_items(ns, items)

    def resume(self, count: int) -> float:
        """Pods per second the operator creates when it starts and finds `count` endpoints
        already there: its own pace, not that of `kubectl apply` handing them over."""
        ns = self.namespace(f"bench-resume-{count}-{int(time.time())}")
        self.apply(ns, [endpoint_manifest(f"ep-{i}", **SHAPE) for i in range(count)])
        expected = count * PODS_PER_ENDPOINT
        watch = PodWatch(self.kubeconfig, ns)
        # read before the operator starts: it may create pods before start() returns
        before = apiserver_requests(self.raw)
        process = OperatorProcess(
            self.kubeconfig,
            self.workdir / f"operator-resume-{count}.log",
            namespaces=(ns,),
            extra_args=("--api-workers", str(API_WORKERS)),
        ).start()
        with stopped_at_the_end(process):
            rate = watch.creation_rate(expected, timeout=300)
            assert rate is not None, process.log()
            after = apiserver_requests(self.raw)
            watch.stop()
        self.drop_namespace(ns)
        # what the API server was asked while the pods were created (the operator's share:
        # every client counts; kwok's and the scheduler's are mostly pods/status and bindings)
        self.requests_per_pod = {
            k: (after[k] - before.get(k, 0)) / expected
            for k in after
            if after[k] - before.get(k, 0) >= expected / 10
        }
        return rate

    def plain_loop(self, count: int, threads: int) -> float:
        """Pods per second for a plain loop of POSTs of the same (gated) pods, no operator:
        the API server's practical limit from this machine. Timed as resume() is, by a pod
        watch: the watch costs the API server and this machine the same in both."""
        ns = self.namespace(f"bench-plain-{threads}-{int(time.time())}")
        spec = DarwinEndpointSpec.model_validate(endpoint_manifest("x", **SHAPE)["spec"])
        bodies = []
        for i in range(count):
            ref = render.EndpointRef(f"ep-{i}", ns, "00000000-0000-0000-0000-000000000000")
            for group in range(spec.replicas):
                for pod in render.render_group(ref, spec, "rev", group, gated=True):
                    pod["metadata"].pop("ownerReferences")
                    bodies.append(pod)
        watch = PodWatch(self.kubeconfig, ns)
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda body: self.raw.request_sync(
                        "POST", f"/api/v1/namespaces/{ns}/pods", body=body
                    ),
                    bodies,
                )
            )
        rate = watch.creation_rate(len(bodies), timeout=60)
        assert rate is not None, f"the watch saw {watch.counts()[0]} of {len(bodies)} pods"
        watch.stop()
        self.drop_namespace(ns)
        return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=64)
    parser.add_argument("--counts", default="1,10,50")
    parser.add_argument(
        "--trials", type=int, default=9, help="alternating pod creation trials, operator and plain"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600,
        help="seconds from apply to all Ready before the run fails with an account of the pods",
    )
    args = parser.parse_args()
    with bench_cluster(args, "darwin-bench-") as cluster:
        bench = Bench(cluster, args.ready_timeout)
        cluster.apply_crds(CRD_FILE, "darwinendpoints.serving.darwin.ai")
        rows = [bench.run_endpoints(int(c)) for c in args.counts.split(",")]
        largest = max(int(c) for c in args.counts.split(","))
        trials = [
            (bench.resume(largest), bench.plain_loop(largest, threads=API_WORKERS))
            for _ in range(args.trials)
        ]
        sequential = bench.plain_loop(largest, threads=1)

    print(f"\noperator benchmark: {args.nodes} nodes, each endpoint 2 groups x 2 pods x 2 GPUs")
    print(
        "seconds from `kubectl apply` (server-side, Lists of 25, 8 at once; it takes `apply s` "
        "to hand the endpoints over)"
    )
    header = (
        f"{'endpoints':>9} {'pods':>5} {'apply s':>8} {'created s':>10} {'ungated s':>10} "
        f"{'ready s':>8} {'cpu s':>6} {'rss MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['endpoints']:>9} {r['pods']:>5} {r['apply']:>8.2f} {r['created']:>10.2f} "
            f"{r['ungated']:>10.2f} {r['ready']:>8.2f} {r['cpu_seconds']:>6.2f} "
            f"{r['peak_rss_mib']:>8.1f}"
        )
    pods = largest * PODS_PER_ENDPOINT
    print(
        f"\npod creation, {pods} pods of {largest} endpoints, pods/s from the first pod seen by "
        f"a pod watch to the last, {args.trials} alternating trials:"
    )
    same = f"{API_WORKERS} threads, the operator's --api-workers"
    print(f"  {'trial':>5} {'operator':>9} {'plain':>7} {'ratio':>6}")
    for i, (resumed, concurrent) in enumerate(trials):
        print(f"  {i + 1:>5} {resumed:>9.1f} {concurrent:>7.1f} {resumed / concurrent:>6.2f}")
    print(f"  operator: started with the endpoints present; plain: POST loop, {same}")
    print(f"  plain POST loop, 1 thread: {sequential:7.1f} pods/s")
    ratio = statistics.median(r / c for r, c in trials)
    print(f"  operator / plain loop at the same concurrency, median of the trials: {ratio:.2f}")
    asked = sorted(bench.requests_per_pod.items(), key=lambda kv: -kv[1])
    print(
        "  API requests per pod created while the operator created them (every client): "
        + ", ".join(
            f"{verb} {res}{'/' + sub if sub else ''} {n:.2f}" for (verb, res, sub), n in asked
        )
    )
    print(f"operator logs: {cluster.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
