"""Benchmark of rolling updates on the local control plane (48 fake B200 nodes by default).

For 4, 16 and 64 replica groups (TP2 x PP3 as 3 pods of 2 GPUs, Ready as soon as they start,
drainSeconds 0, maxSurge 0): seconds from the image change to every group Ready on the new
revision, next to the lower bound the limits allow: ceil(groups / maxUnavailable) steps, one
after another, each as long as one group's create-to-Ready (the median measured during the same
rollout, from its first pod created to its last pod Ready). The difference is what the operator
adds per step: seeing the old group gone, creating the new one, admitting it. Prints a table; no
thresholds.

    .venv/bin/python bench/bench_rollout.py                  # starts and stops its own cluster
    .venv/bin/python bench/bench_rollout.py --kubeconfig K   # a cluster that is already up
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
import time

from cluster_setup import REPO, BenchCluster, PodStream, add_cluster_arguments, bench_cluster
from tests.e2e.operator_process import OperatorProcess
from tests.specs import endpoint_manifest

CRD_FILE = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"
PODS_PER_GROUP = 3
LABEL = "serving.darwin.ai/"


class GroupTimes:
    """Notes from a namespace's pod watch, per group and pod uid, when its first pod appeared
    and when its last pod turned Ready."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self._lock = threading.Lock()
        self.created: dict[str, float] = {}  # pod uid -> first seen
        self.ready: dict[str, float] = {}  # pod uid -> first seen Ready
        self.group_of: dict[str, tuple[int, str]] = {}  # pod uid -> (group, revision)
        self._watch = PodStream(kubeconfig, namespace, self._event)

    def _event(self, kind: str, pod: dict, now: float) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        uid, labels = pod["metadata"]["uid"], pod["metadata"].get("labels") or {}
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (pod.get("status") or {}).get("conditions") or []
        )
        with self._lock:
            self.created.setdefault(uid, now)
            self.group_of[uid] = (int(labels[LABEL + "group"]), labels[LABEL + "revision"])
            if ready:
                self.ready.setdefault(uid, now)

    def create_to_ready(self, revision: str) -> list[float]:
        """Per group of `revision`: first pod created -> last pod Ready."""
        with self._lock:
            by_group: dict[int, list[str]] = {}
            for uid, (group, rev) in self.group_of.items():
                if rev == revision:
                    by_group.setdefault(group, []).append(uid)
            return [
                max(self.ready[u] for u in uids) - min(self.created[u] for u in uids)
                for uids in by_group.values()
                if len(uids) == PODS_PER_GROUP and all(u in self.ready for u in uids)
            ]

    def stop(self) -> None:
        self._watch.stop()


class Bench:
    def __init__(self, cluster: BenchCluster) -> None:
        self.cluster, self.kubeconfig, self.workdir = cluster, cluster.kubeconfig, cluster.workdir
        self.kubectl = cluster.kubectl
        self.raw = cluster.raw()

    def status(self, ns: str, name: str) -> dict:
        path = f"/apis/serving.darwin.ai/v1alpha1/namespaces/{ns}/darwinendpoints/{name}"
        return self.raw.request_sync("GET", path).get("status") or {}

    def wait_rolled_out(self, ns: str, name: str, groups: int, previous: str | None, log) -> str:
        deadline = time.monotonic() + 1800
        while True:
            s = self.status(ns, name)
            revision = s.get("updateRevision")
            entries = s.get("groups") or []
            if (
                revision
                and revision != previous
                and s.get("phase") == "Ready"
                and len(entries) == groups
                and all(g["revision"] == revision and g["phase"] == "Ready" for g in entries)
            ):
                return revision
            assert time.monotonic() < deadline, log()
            time.sleep(0.1)

    def run(self, groups: int, max_unavailable: int | str) -> dict:
        ns = self.cluster.create_namespace(f"bench-rollout-{groups}-{int(time.time())}")
        process = OperatorProcess(
            self.kubeconfig, self.workdir / f"operator-{groups}.log", namespaces=(ns,)
        )
        process.resync_seconds = 30
        process.start()
        name = "roll"
        manifest = endpoint_manifest(
            name,
            replicas=groups,
            tp=2,
            pp=3,
            pods_per_group=PODS_PER_GROUP,
            ready_after="0s",
            drain_seconds=0,
        )
        manifest["spec"]["rollout"].update(maxUnavailable=max_unavailable, maxSurge=0)
        watch = GroupTimes(self.kubeconfig, ns)
        try:
            self.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
            first = self.wait_rolled_out(ns, name, groups, None, process.log)
            patch = {"spec": {"engine": {"image": "vllm/vllm-openai:v0.34.0"}}}
            started = time.monotonic()
            self.kubectl("patch", "dwe", name, "-n", ns, "--type", "merge", "-p", json.dumps(patch))
            second = self.wait_rolled_out(ns, name, groups, first, process.log)
            took = time.monotonic() - started
            per_group = watch.create_to_ready(second)
        finally:
            watch.stop()
            assert process.stop() == 0, process.log()
        self.cluster.delete_namespace(ns)
        unavailable = (
            int(max_unavailable)
            if isinstance(max_unavailable, int)
            else math.floor(int(max_unavailable[:-1]) * groups / 100)
        )
        steps = math.ceil(groups / max(1, unavailable))
        group_seconds = statistics.median(per_group)
        return {
            "groups": groups,
            "max_unavailable": str(max_unavailable),
            "steps": steps,
            "rollout": took,
            "group": group_seconds,
            "bound": steps * group_seconds,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=48)  # 64 groups x 6 GPUs = 48 x 8
    parser.add_argument(
        "--runs",
        default="4:1,16:1,64:1,64:25%",
        help="groups:maxUnavailable pairs, comma separated",
    )
    args = parser.parse_args()
    rows = []
    with bench_cluster(args, "darwin-bench-rollout-") as cluster:
        bench = Bench(cluster)
        cluster.apply_crds(CRD_FILE, "darwinendpoints.serving.darwin.ai")
        for pair in args.runs.split(","):
            groups, unavailable = pair.split(":")
            value: int | str = unavailable if unavailable.endswith("%") else int(unavailable)
            rows.append(bench.run(int(groups), value))
            print(f"  done: {rows[-1]}", file=sys.stderr)

    print(
        f"\nrollout benchmark: {args.nodes} nodes; groups of 3 pods x 2 GPUs, Ready at start, "
        "drainSeconds 0, maxSurge 0"
    )
    header = (
        f"{'groups':>6} {'maxUnav':>7} {'steps':>5} {'rollout s':>10} {'group s':>8} "
        f"{'bound s':>8} {'x bound':>8} {'s/step over':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        over = (r["rollout"] - r["bound"]) / r["steps"]
        print(
            f"{r['groups']:>6} {r['max_unavailable']:>7} {r['steps']:>5} {r['rollout']:>10.1f} "
            f"{r['group']:>8.2f} {r['bound']:>8.1f} {r['rollout'] / r['bound']:>8.2f} "
            f"{over:>12.2f}"
        )
    print(
        "\ngroup s: median create-to-Ready of one new group in that rollout; bound s: steps x "
        "group s, the fastest the limits allow; s/step over: what each step takes beyond that"
    )
    print(f"operator logs: {cluster.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
