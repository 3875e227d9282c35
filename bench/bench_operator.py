"""Benchmark of the operator on the local control plane (64 fake B200 nodes by default).

For 1, 10 and 50 endpoints applied at once: seconds from `kubectl apply` to every pod created,
to every gate lifted and to every group Ready; the operator's pod creation rate next to a plain
client loop creating the same pods against the same API server at the same concurrency (the
operator's API worker pool, `--api-workers`, 16 by default) and, for scale, with one thread;
operator CPU seconds and peak RSS. Prints a table; no thresholds.

    .venv/bin/python bench/bench_operator.py                  # starts and stops its own cluster
    .venv/bin/python bench/bench_operator.py --kubeconfig K   # a cluster that is already up
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "operator", REPO / "tests" / "cluster"):
    sys.path.insert(0, str(path))

from bench.stuck import stuck_report  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from tests.e2e.operator_process import OperatorProcess  # noqa: E402
from tests.specs import endpoint_manifest  # noqa: E402

from darwin_operator import render  # noqa: E402
from darwin_operator.api import DarwinEndpointSpec  # noqa: E402
from darwin_operator.cluster import Cluster, load_api_client  # noqa: E402

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
    """Watches a namespace's pods in a thread and notes, as events arrive, when the last pod
    appeared and when the last scheduling gate went: polling full pod lists instead would load
    the API server and this machine's CPUs, and skew what is measured."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        raw = Cluster(load_api_client(kubeconfig), workers=1)  # a connection of its own
        self._gated: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.first_created = self.last_created = self.last_ungated = 0.0
        method, url, headers, _, _ = raw.client.param_serialize(
            method="GET",
            resource_path=f"/api/v1/namespaces/{namespace}/pods",
            query_params=[("watch", "true")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        self._response = raw.client.rest_client.pool_manager.request(
            method, url, headers=headers, preload_content=False, timeout=None
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        try:
            for chunk in self._response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._event(json.loads(line))
        except Exception:  # the watch is closed by stop()
            return

    def _event(self, event: dict) -> None:
        pod = event["object"]
        name = pod["metadata"]["name"]
        gated = bool(pod["spec"].get("schedulingGates"))
        now = time.monotonic()
        with self._lock:
            if event["type"] == "DELETED":
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

    def stop(self) -> None:
        self._response.shutdown()  # ends the stream; the connection is not reused


class Bench:
    def __init__(self, kubeconfig: str, kubectl: str, workdir: Path, ready_timeout: float) -> None:
        self.kubeconfig, self.kubectl_binary, self.workdir = kubeconfig, kubectl, workdir
        self.ready_timeout = ready_timeout
        self.api = k8s_config.new_client_from_config(kubeconfig)
        self.core = k8s.CoreV1Api(self.api)
        self.raw = Cluster(load_api_client(kubeconfig), workers=2)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        import subprocess

        result = subprocess.run(
            [self.kubectl_binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            text=True,
            capture_output=True,
            check=True,
        )
        return result.stdout

    def namespace(self, name: str) -> str:
        self.core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        deadline = time.monotonic() + 30
        while not any(
            sa.metadata.name == "default"
            for sa in self.core.list_namespaced_service_account(name).items
        ):
            assert time.monotonic() < deadline, "no default ServiceAccount"
            time.sleep(0.1)
        return name

    def drop_namespace(self, name: str) -> None:
        self.core.delete_namespace(name)
        deadline = time.monotonic() + 180
        while any(ns.metadata.name == name for ns in self.core.list_namespace().items):
            assert time.monotonic() < deadline, f"namespace {name} not deleted"
            time.sleep(0.5)

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
        self.kubectl(
            "apply",
            "-n",
            ns,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )

    def resume(self, count: int) -> float:
        """Pods per second the operator creates when it starts and finds `count` endpoints
        already there: its own pace, not that of `kubectl apply` handing them over."""
        ns = self.namespace(f"bench-resume-{count}-{int(time.time())}")
        self.apply(ns, [endpoint_manifest(f"ep-{i}", **SHAPE) for i in range(count)])
        expected = count * PODS_PER_ENDPOINT
        watch = PodWatch(self.kubeconfig, ns)
        process = OperatorProcess(
            self.kubeconfig,
            self.workdir / f"operator-resume-{count}.log",
            namespaces=(ns,),
            extra_args=("--api-workers", str(API_WORKERS)),
        ).start()
        with stopped_at_the_end(process):
            deadline = time.monotonic() + 300
            while watch.counts()[0] < expected:
                assert time.monotonic() < deadline, process.log()
                time.sleep(0.1)
            rate = (expected - 1) / (watch.last_created - watch.first_created)
            watch.stop()
        self.drop_namespace(ns)
        return rate

    def plain_loop(self, count: int, threads: int) -> float:
        """Pods per second for a plain loop of POSTs of the same (gated) pods, no operator:
        the API server's practical limit from this machine."""
        ns = self.namespace(f"bench-plain-{threads}-{int(time.time())}")
        spec = DarwinEndpointSpec.model_validate(endpoint_manifest("x", **SHAPE)["spec"])
        bodies = []
        for i in range(count):
            ref = render.EndpointRef(f"ep-{i}", ns, "00000000-0000-0000-0000-000000000000")
            for group in range(spec.replicas):
                for pod in render.render_group(ref, spec, "rev", group, gated=True):
                    pod["metadata"].pop("ownerReferences")
                    bodies.append(pod)
        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda body: self.raw.request_sync(
                        "POST", f"/api/v1/namespaces/{ns}/pods", body=body
                    ),
                    bodies,
                )
            )
        rate = len(bodies) / (time.monotonic() - started)
        self.drop_namespace(ns)
        return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--counts", default="1,10,50")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600,
        help="seconds from apply to all Ready before the run fails with an account of the pods",
    )
    args = parser.parse_args()
    # stopped from outside, still stop the cluster it started (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from localcluster import Binaries, Cluster, NodeShape

    workdir = Path(tempfile.mkdtemp(prefix="darwin-bench-"))
    local = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        local = Cluster(workdir / "cluster")
        local.up(args.nodes, NodeShape(), timeout=300)
        kubeconfig = str(local.kubeconfig)
    try:
        bench = Bench(kubeconfig, str(Binaries.from_cache().kubectl), workdir, args.ready_timeout)
        bench.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        bench.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/darwinendpoints.serving.darwin.ai",
        )
        rows = [bench.run_endpoints(int(c)) for c in args.counts.split(",")]
        largest = max(int(c) for c in args.counts.split(","))
        resumed = bench.resume(largest)
        sequential = bench.plain_loop(largest, threads=1)
        concurrent = bench.plain_loop(largest, threads=API_WORKERS)
    finally:
        if local is not None:
            local.down()

    print(f"\noperator benchmark: {args.nodes} nodes, each endpoint 2 groups x 2 pods x 2 GPUs")
    print("seconds from `kubectl apply` (which itself takes `apply s` to hand the endpoints over)")
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
    print(f"\npod creation, {pods} pods of {largest} endpoints:")
    same = f"{API_WORKERS} threads, the operator's --api-workers"
    print(f"  operator started with the endpoints present: {resumed:7.1f} pods/s")
    print(f"  plain POST loop, {same}: {concurrent:7.1f} pods/s")
    print(f"  plain POST loop, 1 thread: {sequential:7.1f} pods/s")
    print(f"  operator / plain loop at the same concurrency: {resumed / concurrent:.2f}")
    print(f"operator logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
