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
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "operator", REPO / "tests" / "cluster"):
    sys.path.insert(0, str(path))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from tests.e2e.operator_process import OperatorProcess  # noqa: E402
from tests.specs import endpoint_manifest  # noqa: E402

from darwin_operator.cluster import Cluster, load_api_client  # noqa: E402

CRD_FILE = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"
PODS_PER_GROUP = 3
LABEL = "serving.darwin.ai/"


class GroupTimes:
    """Watches a namespace's pods in a thread and notes, per group and pod uid, when its first
    pod appeared and when its last pod turned Ready: polling full pod lists instead would load
    the API server and this machine's CPUs, and skew what is measured."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        raw = Cluster(load_api_client(kubeconfig), workers=1)  # a connection of its own
        self._lock = threading.Lock()
        self.created: dict[str, float] = {}  # pod uid -> first seen
        self.ready: dict[str, float] = {}  # pod uid -> first seen Ready
        self.group_of: dict[str, tuple[int, str]] = {}  # pod uid -> (group, revision)
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
        uid, labels = pod["metadata"]["uid"], pod["metadata"].get("labels") or {}
        now = time.monotonic()
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
        self._response.shutdown()


class Bench:
    def __init__(self, kubeconfig: str, kubectl: str, workdir: Path) -> None:
        self.kubeconfig, self.kubectl_binary, self.workdir = kubeconfig, kubectl, workdir
        self.core = k8s.CoreV1Api(k8s_config.new_client_from_config(kubeconfig))
        self.raw = Cluster(load_api_client(kubeconfig), workers=2)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        import subprocess

        return subprocess.run(
            [self.kubectl_binary, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            text=True,
            capture_output=True,
            check=True,
        ).stdout

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
        deadline = time.monotonic() + 300
        while any(ns.metadata.name == name for ns in self.core.list_namespace().items):
            assert time.monotonic() < deadline, f"namespace {name} not deleted"
            time.sleep(0.5)

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
        ns = self.namespace(f"bench-rollout-{groups}-{int(time.time())}")
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
        self.drop_namespace(ns)
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
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--nodes", type=int, default=48)  # 64 groups x 6 GPUs = 48 x 8
    parser.add_argument(
        "--runs",
        default="4:1,16:1,64:1,64:25%",
        help="groups:maxUnavailable pairs, comma separated",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop the cluster it started

    from localcluster import Binaries, Cluster, NodeShape

    workdir = Path(tempfile.mkdtemp(prefix="darwin-bench-rollout-"))
    local = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        local = Cluster(workdir / "cluster")
        local.up(args.nodes, NodeShape(), timeout=300)
        kubeconfig = str(local.kubeconfig)
    rows = []
    try:
        bench = Bench(kubeconfig, str(Binaries.from_cache().kubectl), workdir)
        bench.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        bench.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/darwinendpoints.serving.darwin.ai",
        )
        for pair in args.runs.split(","):
            groups, unavailable = pair.split(":")
            value: int | str = unavailable if unavailable.endswith("%") else int(unavailable)
            rows.append(bench.run(int(groups), value))
            print(f"  done: {rows[-1]}", file=sys.stderr)
    finally:
        if local is not None:
            local.down()

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
    print(f"operator logs: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
