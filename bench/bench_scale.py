"""Benchmark of the operator at scale on the local control plane: by default 300 endpoints of
2 groups x 1 pod x 6 GPUs (TP2 x PP3) on 1,000 fake B200 nodes.

Prints: seconds from `kubectl apply` to every pod created, every gate lifted and every endpoint
Ready, with the operator's CPU and RSS while converging; the operator's CPU and RSS while idle
(nothing changing, resyncs going on), and the API server's requests per minute by verb and
resource in that steady state, with and without the operator (the API server's own
apiserver_request_total, diffed; the rest of the control plane and kwok send requests too);
for a few pods deleted under that load (a fault: someone deletes a group member), seconds to
the replacement pods existing and to the endpoint Ready again (p50 and max); and, after an
operator restart at that size, seconds until it has reconciled every endpoint, with the writes
the API server received meanwhile. No thresholds.

    .venv/bin/python bench/bench_scale.py                              # 300 on 1,000 nodes
    .venv/bin/python bench/bench_scale.py --nodes 100 --endpoints 30   # smaller
    .venv/bin/python bench/bench_scale.py --kubeconfig K               # a cluster already up
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench_operator import CRD_FILE, Bench, PodWatch, stopped_at_the_end
from cluster_setup import add_cluster_arguments, apiserver_requests, bench_cluster
from tests.e2e.operator_process import OperatorProcess
from tests.specs import endpoint_manifest

from darwin_operator import vocabulary
from darwin_operator.vocabulary import parse_time

SHAPE = dict(replicas=2, tp=2, pp=3, pods_per_group=1, ready_after="1s")
PODS_PER_ENDPOINT = 2
API_WORKERS = 16
RESYNC_SECONDS = 30
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "CREATE", "UPDATE")


class GroupWatch(PodWatch):
    """PodWatch, also noting when each pod (by uid) of each endpoint's group first appeared."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.appeared: dict[tuple[str, str], dict[str, float]] = {}  # (endpoint, group) -> uids
        super().__init__(kubeconfig, namespace)

    def _event(self, kind: str, pod: dict, now: float) -> None:
        super()._event(kind, pod, now)
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        key = (labels.get(vocabulary.LABEL_ENDPOINT, ""), labels.get(vocabulary.LABEL_GROUP, ""))
        if kind in ("ADDED", "MODIFIED"):
            with self._lock:
                self.appeared.setdefault(key, {}).setdefault(meta["uid"], now)

    def new_pods(self, endpoint: str, group: str, old: set[str]) -> list[float]:
        with self._lock:
            seen = self.appeared.get((endpoint, group), {})
            return [at for uid, at in seen.items() if uid not in old]


class RssSampler:
    """Peak and last RSS of the operator, sampled in a thread (VmHWM would keep the peak of the
    whole run, not of one phase)."""

    def __init__(self, process: OperatorProcess) -> None:
        self.process, self.peak, self.last = process, 0, 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.last = int(line.split()[1]) // 1024
                        self.peak = max(self.peak, self.last)
            except (OSError, AssertionError):
                continue

    def reset(self) -> None:
        self.peak = self.last

    def stop(self) -> None:
        self._stop.set()


class ScaleBench(Bench):
    def requests(self) -> Counter:
        return apiserver_requests(self.raw)

    def endpoints(self, ns: str) -> list[dict]:
        path = f"/apis/serving.darwin.ai/v1alpha1/namespaces/{ns}/darwinendpoints"
        return self.raw.request_sync("GET", path)["items"]

    def ready(self, endpoint: dict) -> bool:
        status = endpoint.get("status") or {}
        return status.get("phase") == "Ready" and status.get("readyReplicas") == SHAPE["replicas"]

    def converge(self, process: OperatorProcess, rss: RssSampler, ns: str, count: int) -> dict:
        watch = GroupWatch(self.kubeconfig, ns)
        cpu = process.cpu_seconds()
        rss.reset()
        started = time.monotonic()
        items = [endpoint_manifest(f"ep-{i}", **SHAPE) for i in range(count)]
        self.apply(ns, items)
        marks: dict[str, float] = {"apply": time.monotonic() - started}
        expected = count * PODS_PER_ENDPOINT
        deadline = started + self.ready_timeout
        while "ready" not in marks:
            if time.monotonic() > deadline:
                ready = sum(map(self.ready, self.endpoints(ns)))
                raise AssertionError(
                    f"{process.log()[-3000:]}\nnot all Ready after {self.ready_timeout:g} s: "
                    f"{ready} of {count} endpoints, marks {marks}, pods {watch.counts()}"
                )
            seen, gated = watch.counts()
            if seen >= expected:
                marks.setdefault("created", watch.last_created - started)
                if gated == 0:
                    marks.setdefault("ungated", watch.last_ungated - started)
            if "ungated" in marks and all(map(self.ready, self.endpoints(ns))):
                marks["ready"] = time.monotonic() - started
            time.sleep(2)
        marks["cpu"] = process.cpu_seconds() - cpu
        marks["rss_peak"] = rss.peak
        marks["rss"] = rss.last
        self.watch = watch
        return marks

    def idle(self, process: OperatorProcess | None, rss: RssSampler | None, seconds: float):
        """CPU (share of one core), RSS and API requests per minute over a quiet window."""
        before = self.requests()
        cpu = process.cpu_seconds() if process else 0.0
        since = time.time()
        started = time.monotonic()
        time.sleep(seconds)
        took = time.monotonic() - started
        after = self.requests()
        rates = {k: (after[k] - before.get(k, 0)) * 60 / took for k in after}
        share = (process.cpu_seconds() - cpu) / took if process else 0.0
        rates = {k: v for k, v in rates.items() if v > 0}
        return share, (rss.last if rss else 0), rates, self.events_since(since)

    def events_since(self, since: float) -> Counter:
        """Events created since `since` (wall clock), by who reported them, on what and why:
        the API server's request counts say how many were posted, not by whom."""
        counts: Counter = Counter()
        for event in self.raw.request_sync("GET", "/api/v1/events")["items"]:
            created = event["metadata"].get("creationTimestamp") or ""
            if not created or (parse_time(created) or 0) < int(since):
                continue
            source = event.get("reportingComponent") or (event.get("source") or {}).get(
                "component", "?"
            )
            kind = (event.get("involvedObject") or {}).get("kind", "?")
            counts[(source, kind, event.get("reason", "?"))] += 1
        return counts

    def fault(self, ns: str, endpoint: str) -> tuple[float, float]:
        """Delete group 0's leader as a user would; seconds to every pod of a new group 0, and
        to the endpoint Ready again."""
        selector = f"{vocabulary.LABEL_ENDPOINT}={endpoint},{vocabulary.LABEL_GROUP}=0"
        pods = self.raw.request_sync(
            "GET", f"/api/v1/namespaces/{ns}/pods", query=[("labelSelector", selector)]
        )["items"]
        old = {p["metadata"]["uid"] for p in pods}
        leader = next(p for p in pods if p["metadata"]["labels"].get(vocabulary.LABEL_RANK) == "0")
        path = f"/apis/serving.darwin.ai/v1alpha1/namespaces/{ns}/darwinendpoints/{endpoint}"
        started = time.monotonic()
        self.raw.request_sync(
            "DELETE", f"/api/v1/namespaces/{ns}/pods/{leader['metadata']['name']}"
        )
        replaced = ready = None
        deadline = started + 600
        while ready is None:
            assert time.monotonic() < deadline, f"{endpoint} not back within 600 s"
            new = self.watch.new_pods(endpoint, "0", old)
            if replaced is None and len(new) >= len(pods):
                replaced = max(new) - started
            if replaced is not None and self.ready(self.raw.request_sync("GET", path)):
                ready = time.monotonic() - started
            time.sleep(0.1)
        return replaced, ready

    def restart(self, process: OperatorProcess, rss: RssSampler, count: int) -> dict:
        """Start the operator again; seconds until it has reconciled every endpoint once, and the
        writes the API server received meanwhile."""
        before = self.requests()
        started = time.monotonic()
        process.start()
        rss.reset()
        deadline = started + self.ready_timeout
        while reconciles(process) < count:
            assert time.monotonic() < deadline, process.log()[-3000:]
            time.sleep(0.2)
        took = time.monotonic() - started
        time.sleep(2)  # writes of the last reconciles land
        after = self.requests()
        writes = {
            k: after[k] - before.get(k, 0)
            for k in after
            if k[0] in WRITE_VERBS and after[k] > before.get(k, 0)
        }
        return {"seconds": took, "cpu": process.cpu_seconds(), "rss": rss.peak, "writes": writes}


def reconciles(process: OperatorProcess) -> float:
    """Reconciles run so far, whatever their result (a skipped one has read its endpoint too)."""
    samples = re.findall(r"^darwin_reconcile_total\{[^}]*\} (\S+)$", process.metrics(), re.M)
    return sum(float(value) for value in samples)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rate_table(with_operator: dict, without: dict, top: int) -> list[str]:
    keys = sorted(with_operator.keys() | without.keys(), key=lambda k: -with_operator.get(k, 0))
    lines = [f"  {'verb':<8} {'resource':<28} {'with operator /min':>19} {'without /min':>13}"]
    for verb, resource, sub in keys[:top]:
        name = f"{resource}/{sub}" if sub else resource
        lines.append(
            f"  {verb:<8} {name:<28} {with_operator.get((verb, resource, sub), 0):>19.1f} "
            f"{without.get((verb, resource, sub), 0):>13.1f}"
        )
    return lines


def event_table(with_operator: Counter, without: Counter) -> list[str]:
    keys = sorted(with_operator.keys() | without.keys(), key=lambda k: -with_operator[k])
    if not keys:
        return []
    header = f"  {'reported by':<24} {'on':<22} {'reason':<28} {'with':>6} {'without':>7}"
    return [header] + [
        f"  {source:<24} {kind:<22} {reason:<28} {with_operator[k]:>6} {without[k]:>7}"
        for k in keys
        for source, kind, reason in (k,)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=1000)
    parser.add_argument("--endpoints", type=int, default=300)
    parser.add_argument("--faults", type=int, default=5, help="pods deleted, one at a time")
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--ready-timeout", type=float, default=1200)
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    # a thousand nodes take a while to be Ready on a busy machine
    with bench_cluster(
        args, "darwin-bench-scale-", up_timeout=max(300, 1.5 * args.nodes)
    ) as cluster:
        bench = ScaleBench(cluster, args.ready_timeout)
        cluster.apply_crds(CRD_FILE, "darwinendpoints.serving.darwin.ai")
        ns = bench.namespace(f"scale-{int(time.time())}")
        process = OperatorProcess(
            cluster.kubeconfig,
            cluster.workdir / "operator.log",
            namespaces=(ns,),
            resync_seconds=RESYNC_SECONDS,
            extra_args=("--api-workers", str(API_WORKERS)),
        ).start(timeout=120)
        rss = RssSampler(process)
        with stopped_at_the_end(process):
            converged = bench.converge(process, rss, ns, args.endpoints)
            time.sleep(2 * RESYNC_SECONDS)  # every endpoint has resynced since
            idle_cpu, idle_rss, with_operator, events = bench.idle(process, rss, args.idle_seconds)
            faults = [
                bench.fault(ns, f"ep-{i * args.endpoints // args.faults}")
                for i in range(args.faults)
            ]
        _, _, without, events_without = bench.idle(None, None, args.idle_seconds)
        with stopped_at_the_end(process):
            restarted = bench.restart(process, rss, args.endpoints)
        rss.stop()
        bench.watch.stop()
        workdir = cluster.workdir

    load_at_end = os.getloadavg()
    print(
        f"\nscale benchmark: {args.endpoints} endpoints x 2 groups x 1 pod x 6 GPUs on "
        f"{args.nodes} nodes (resync {RESYNC_SECONDS} s, {API_WORKERS} API workers); load "
        f"average {load_at_start[0]:.1f} at the start, {load_at_end[0]:.1f} at the end"
    )
    c = converged
    print(
        f"apply -> all pods created {c['created']:.1f} s, last gate lifted {c['ungated']:.1f} s, "
        f"all endpoints Ready {c['ready']:.1f} s (kubectl apply, 8 at once, {c['apply']:.1f} s)"
    )
    print(
        f"operator while converging: {c['cpu']:.1f} CPU s ({c['cpu'] / c['ready']:.0%} of a "
        f"core), RSS peak {c['rss_peak']} MiB, {c['rss']} MiB at Ready"
    )
    print(
        f"operator idle over {args.idle_seconds:g} s: {idle_cpu:.1%} of a core, RSS {idle_rss} MiB"
    )
    print("API requests per minute in that steady state (top 15 by the rate with the operator):")
    print("\n".join(rate_table(with_operator, without, 15)))
    print("Events created in those windows, by reporter, object kind and reason:")
    print("\n".join(event_table(events, events_without)) or "  none")
    replaced = [r for r, _ in faults]
    back = [b for _, b in faults]
    print(
        f"a pod deleted -> replacement pods exist ({len(faults)} samples): "
        f"p50 {statistics.median(replaced):.2f} s, p99 {quantile(replaced, 0.99):.2f} s; "
        f"-> endpoint Ready again: p50 {statistics.median(back):.2f} s, "
        f"p99 {quantile(back, 0.99):.2f} s"
    )
    r = restarted
    writes = ", ".join(
        f"{verb} {resource}{'/' + sub if sub else ''} {int(n)}"
        for (verb, resource, sub), n in sorted(r["writes"].items(), key=lambda kv: -kv[1])
    )
    print(
        f"operator restart: every endpoint reconciled {r['seconds']:.1f} s after the start "
        f"({r['cpu']:.1f} CPU s, RSS peak {r['rss']} MiB); writes the API server received "
        f"meanwhile (from every client): {writes or 'none'}"
    )
    print(f"operator log: {workdir / 'operator.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
