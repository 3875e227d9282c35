"""Rolling updates by darwin-operator and by LeaderWorkerSet on the same local cluster.

One local control plane with 48 kwok B200 nodes (8 GPUs each); LeaderWorkerSet's manager
(v0.9.0, built by `tests/cluster/build.sh lws`) runs as a host process with its webhooks on
127.0.0.1 behind a CA made here, darwin-operator runs as a process too, each with its own
namespace. Both get the same shape: 16 groups of 3 pods x 2 GPUs, pods Ready as soon as they
start, maxUnavailable 1, maxSurge 0 (darwin: drainSeconds 0). In alternating trials (one
workload at a time, so they never compete for the nodes) each is applied, then its image is
changed. A pod watch per trial measures: apply -> all groups Ready; the image change -> every
group Ready on the new revision; each rollout step (to the next group Ready on the new revision);
the controller's CPU during the rollout (LeaderWorkerSet's pods are created by the StatefulSet
controller, so kube-controller-manager's CPU is shown as well); and the limits broken:
more than maxUnavailable groups down at once, a group rebuilt more than once, a node holding
more GPUs than it has. Prints medians, darwin/LWS ratios and violations; no thresholds.

    .venv/bin/python bench/bench_vs_lws.py [--trials 7]      # starts and stops its own cluster
    .venv/bin/python bench/bench_vs_lws.py --kubeconfig K    # a cluster that is already up
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster_setup import (
    DARWIN_CRDS,
    BenchCluster,
    PodStream,
    add_cluster_arguments,
    bench_cluster,
    cpu_seconds,
)
from localcluster import CACHE, NodeShape, free_port, versions
from lws_manifests import (
    leader_worker_set,
    local_webhook_configurations,
    manager_configuration,
    pod_template_like,
)
from pki import issue_cert
from processes import http_ok, spawn, stop
from rollout_record import PodView, RolloutRecord, darwin_view, lws_view
from tests.e2e.operator_process import OperatorProcess
from tests.specs import endpoint_manifest

from darwin_operator import render
from darwin_operator.api import DarwinEndpointSpec

GROUPS, PODS_PER_GROUP, GPUS_PER_POD = 16, 3, 2
NODE_GPUS = NodeShape().gpus
MAX_UNAVAILABLE, MAX_SURGE = 1, 0
IMAGES = ("vllm/vllm-openai:v0.33.0", "vllm/vllm-openai:v0.34.0")
NAME = "roll"
DARWIN_IMAGE_PATCH = {"spec": {"engine": {"image": IMAGES[1]}}}
LWS_IMAGE_PATCH = {
    "op": "replace",
    "path": "/spec/leaderWorkerTemplate/workerTemplate/spec/containers/0/image",
    "value": IMAGES[1],
}
# The manager watches both of its kinds; upstream's file names are <group>_<plural>.yaml.
LWS_CRDS = (
    "leaderworkersets.leaderworkerset.x-k8s.io",
    "disaggregatedsets.disaggregatedset.x-k8s.io",
)


def darwin_manifest() -> dict:
    manifest = endpoint_manifest(
        NAME,
        replicas=GROUPS,
        tp=GPUS_PER_POD,
        pp=PODS_PER_GROUP,
        pods_per_group=PODS_PER_GROUP,
        ready_after="0s",
        drain_seconds=0,
    )
    manifest["spec"]["engine"]["image"] = IMAGES[0]
    manifest["spec"]["rollout"].update(maxUnavailable=MAX_UNAVAILABLE, maxSurge=MAX_SURGE)
    return manifest


def lws_manifest() -> dict:
    """A LeaderWorkerSet whose pods ask for what darwin's pods of the same shape ask for."""
    spec = DarwinEndpointSpec.model_validate(darwin_manifest()["spec"])
    ref = render.EndpointRef(NAME, "x", "00000000-0000-0000-0000-000000000000")
    leader = render.render_group(ref, spec, "rev", 0, gated=False)[0]
    return leader_worker_set(
        NAME,
        groups=GROUPS,
        size=PODS_PER_GROUP,
        pod_template=pod_template_like(leader),
        max_unavailable=MAX_UNAVAILABLE,
        max_surge=MAX_SURGE,
    )


class LwsManager:
    """LeaderWorkerSet's manager as a host process: CRDs, a CA and a serving certificate for
    127.0.0.1, webhook configurations that call it there, started and stopped by pid."""

    def __init__(self, cluster: BenchCluster) -> None:
        self.cluster = cluster
        self.files = CACHE / "bin" / f"lws-{versions()['LWS_VERSION']}"
        self.dir = cluster.workdir / "lws"
        self.log = self.dir / "manager.log"
        self.pid = 0

    def start(self) -> LwsManager:
        binary = self.files / "manager"
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} missing: run `bash tests/cluster/build.sh lws`")
        certs = self.dir / "certs"
        certs.mkdir(parents=True)
        self._issue_certificate(certs)
        for crd in LWS_CRDS:
            plural, group = crd.split(".", 1)
            self.cluster.apply_crds(self.files / f"{group}_{plural}.yaml", crd)
        port, health = free_port(), free_port()
        config = self.dir / "config.yaml"
        config.write_text(json.dumps(manager_configuration(port, health, str(certs))))
        ca = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        hooks = local_webhook_configurations(
            (self.files / "manifests.yaml").read_text(),
            (self.files / "mutating-patch.yaml").read_text(),
            (self.files / "validating-patch.yaml").read_text(),
            f"https://127.0.0.1:{port}",
            ca,
        )
        self.cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": hooks}),
        )  # fmt: skip
        argv = [
            str(binary),
            "--config",
            str(config),
            "--kubeconfig",
            self.cluster.kubeconfig,
            "--zap-log-level=2",  # as upstream's install runs it (config/default, the chart)
        ]
        self.pid = spawn(argv, self.log)
        deadline = time.monotonic() + 120
        while not (http_ok(f"http://127.0.0.1:{health}/readyz") and self._serving(port, certs)):
            if time.monotonic() > deadline or not Path(f"/proc/{self.pid}").exists():
                self.stop()
                raise SystemExit(f"LWS manager not serving:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    @staticmethod
    def _issue_certificate(certs: Path) -> None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=bench-lws-webhook-ca"],
            cwd=certs, check=True, capture_output=True,
        )  # fmt: skip
        # controller-runtime's webhook server reads tls.crt and tls.key from its certDir
        issue_cert(certs, "tls", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1")

    @staticmethod
    def _serving(port: int, certs: Path) -> bool:
        """The webhook server completes a TLS handshake with the certificate it was given."""
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stops the manager and removes its webhook configurations (which would refuse every
        LeaderWorkerSet of a cluster that outlives the benchmark)."""
        if self.pid:
            stop(self.pid)
        self.cluster.kubectl(
            "delete",
            "--ignore-not-found",
            "mutatingwebhookconfiguration/lws-mutating-webhook-configuration",
            "validatingwebhookconfiguration/lws-validating-webhook-configuration",
        )


@dataclass
class Contender:
    label: str
    namespace: str
    manifest: dict
    image_patch: tuple[str, ...]  # kubectl patch arguments that change the image
    resource: str  # kubectl's name of the workload's kind
    path: str  # the workload's API path
    view: Callable[[dict], PodView | None]
    pid: Callable[[], int]
    settled: Callable[[dict], bool]  # the controller's own status says all groups are Ready


def darwin_settled(obj: dict) -> bool:
    status = obj.get("status") or {}
    return (
        status.get("phase") == "Ready"
        and status.get("readyReplicas") == GROUPS
        and status.get("updatedReplicas") == GROUPS
    )


def lws_settled(obj: dict) -> bool:
    status = obj.get("status") or {}
    available = any(
        c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions") or []
    )
    return (
        available
        and status.get("readyReplicas") == GROUPS
        and status.get("updatedReplicas") == GROUPS
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )


class Trials:
    def __init__(self, cluster: BenchCluster, timeout: float) -> None:
        self.cluster, self.timeout = cluster, timeout
        self.raw = cluster.raw()
        self.kcm = cluster.component_pid("kube-controller-manager")

    def wait(
        self, done: Callable[[], object], what: str, log: Callable[[], str], every: float = 0.05
    ) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {self.timeout:g} s\n{log()}")
            time.sleep(every)

    def run(self, c: Contender, log: Callable[[], str]) -> dict:
        record = RolloutRecord(GROUPS, PODS_PER_GROUP, MAX_UNAVAILABLE, NODE_GPUS)
        lock = threading.Lock()

        def on_event(kind: str, pod: dict, at: float) -> None:
            view = c.view(pod) if kind in ("ADDED", "MODIFIED", "DELETED") else None
            if view is None:
                return
            with lock:
                if kind == "DELETED":
                    record.gone(at, view.uid)
                else:
                    record.seen(at, view)

        def read(get: Callable[[], object]) -> Callable[[], object]:
            def locked() -> object:
                with lock:
                    return get()

            return locked

        watch = PodStream(self.cluster.kubeconfig, c.namespace, on_event)
        try:
            started = time.monotonic()
            self.cluster.kubectl(
                "apply", "-n", c.namespace, "-f", "-", input=json.dumps(c.manifest)
            )
            self.wait(read(lambda: record.all_available_at), f"{c.label}: all groups Ready", log)
            self.wait(
                lambda: c.settled(self.raw.request_sync("GET", c.path)),
                f"{c.label}: status Ready",
                log,
                every=0.2,
            )
            cpu, kcm = cpu_seconds(c.pid()), self._kcm_cpu()
            with lock:
                record.start_rollout(time.monotonic())
            self.cluster.kubectl("patch", c.resource, NAME, "-n", c.namespace, *c.image_patch)
            self.wait(read(lambda: record.rolled_out_at), f"{c.label}: rolled out", log)
            cpu, kcm = cpu_seconds(c.pid()) - cpu, self._kcm_cpu() - kcm
        finally:
            watch.stop()
        self.remove(c, log)
        with lock:
            assert record.all_available_at is not None and record.rolled_out_at is not None
            assert record.rollout_started is not None
            steps = record.step_seconds()
            return {
                "apply": record.all_available_at - started,
                "rollout": record.rolled_out_at - record.rollout_started,
                "step": statistics.median(steps),
                "cpu": cpu,
                "kcm_cpu": kcm,
                "violations": record.violations,
            }

    def _kcm_cpu(self) -> float:
        return cpu_seconds(self.kcm) if self.kcm else float("nan")

    def remove(self, c: Contender, log: Callable[[], str]) -> None:
        """Deletes the workload and waits until its pods (and LWS's StatefulSets) are gone, so
        the next trial finds the nodes empty."""
        self.cluster.kubectl("delete", c.resource, NAME, "-n", c.namespace, "--wait=false")

        def empty() -> bool:
            pods = self.raw.request_sync("GET", f"/api/v1/namespaces/{c.namespace}/pods")
            sets = self.raw.request_sync(
                "GET", f"/apis/apps/v1/namespaces/{c.namespace}/statefulsets"
            )
            return not pods.get("items") and not sets.get("items")

        self.wait(empty, f"{c.label}: workload removed", log, every=0.5)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(results: dict[str, list[dict]], args: argparse.Namespace, loads: list[str]) -> None:
    lws, darwin = results["LWS"], results["darwin"]
    print(
        f"\ndarwin-operator vs LeaderWorkerSet {versions()['LWS_VERSION']}, one cluster: "
        f"{args.nodes} kwok nodes x {NODE_GPUS} GPUs"
    )
    print(
        f"{GROUPS} groups of {PODS_PER_GROUP} pods x {GPUS_PER_POD} GPUs, pods Ready at start; "
        f"maxUnavailable {MAX_UNAVAILABLE}, maxSurge {MAX_SURGE}, drainSeconds 0"
    )
    print(
        f"{len(lws)} trials each, alternating which goes first, one workload at a time; "
        f"load average (1, 5, 15 min) at start {loads[0]}, at end {loads[1]}"
    )
    header = f"{'median':<44} {'LWS':>8} {'darwin':>8} {'darwin/LWS':>11}"
    print("\n" + header)
    print("-" * len(header))
    for key, title in (
        ("apply", "apply -> all groups Ready, s"),
        ("rollout", "image change -> all groups Ready on it, s"),
        ("step", "rollout step, s"),
        ("cpu", "controller CPU during the rollout, s"),
        ("kcm_cpu", "kube-controller-manager CPU during it, s"),
    ):
        a, b = median(lws, key), median(darwin, key)
        if math.isnan(a):  # kube-controller-manager's CPU: only of a cluster started here
            continue
        print(f"{title:<44} {a:>8.2f} {b:>8.2f} {b / a if a else float('nan'):>11.2f}")
    print("\nrollout s per trial:")
    for label, rows in results.items():
        print(f"  {label:<7} " + " ".join(f"{r['rollout']:.1f}" for r in rows))

    header = f"{'limit violations: trials with any (total)':<44} {'LWS':>8} {'darwin':>8}"
    print("\n" + header)
    print("-" * len(header))

    def cell(rows: list[dict], count: Callable[[object], int]) -> str:
        counts = [count(r["violations"]) for r in rows]
        return f"{sum(1 for n in counts if n)}/{len(rows)} ({sum(counts)})"

    for title, count in (
        (f"more than {MAX_UNAVAILABLE} group(s) down at once", lambda v: v.too_many_down),
        ("a group rebuilt more than once", lambda v: len(v.rebuilt_twice)),
        ("a node holding more GPUs than it has", lambda v: v.nodes_over_gpus),
    ):
        print(f"{title:<44} {cell(lws, count):>8} {cell(darwin, count):>8}")
    most = {k: max(r["violations"].most_down for r in rows) for k, rows in results.items()}
    print(f"{'most groups down at once':<44} {most['LWS']:>8} {most['darwin']:>8}")
    print(
        "\nLeaderWorkerSet's pods are created by the StatefulSet controller in "
        "kube-controller-manager; darwin-operator creates its own"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=48)  # 16 groups x 6 GPUs = 96 of 384 GPUs
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds any one wait may take before failing"
    )
    args = parser.parse_args()
    loads = [", ".join(f"{x:.1f}" for x in os.getloadavg())]
    results: dict[str, list[dict]] = {"LWS": [], "darwin": []}
    with bench_cluster(args, "darwin-bench-vs-lws-") as cluster:
        cluster.apply_crds(DARWIN_CRDS, "darwinendpoints.serving.darwin.ai")
        lws_ns = cluster.create_namespace(f"bench-lws-{int(time.time())}")
        darwin_ns = cluster.create_namespace(f"bench-darwin-{int(time.time())}")
        manager = LwsManager(cluster)
        operator = OperatorProcess(
            cluster.kubeconfig,
            cluster.workdir / "operator.log",
            namespaces=(darwin_ns,),
            resync_seconds=30,
        )
        try:
            manager.start()
            operator.start()
            contenders = {
                "LWS": Contender(
                    "LWS",
                    lws_ns,
                    lws_manifest(),
                    ("--type", "json", "-p", json.dumps([LWS_IMAGE_PATCH])),
                    "leaderworkersets.leaderworkerset.x-k8s.io",
                    f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{lws_ns}/leaderworkersets/{NAME}",
                    lws_view,
                    lambda: manager.pid,
                    lws_settled,
                ),
                "darwin": Contender(
                    "darwin",
                    darwin_ns,
                    darwin_manifest(),
                    ("--type", "merge", "-p", json.dumps(DARWIN_IMAGE_PATCH)),
                    "darwinendpoints.serving.darwin.ai",
                    f"/apis/serving.darwin.ai/v1alpha1/namespaces/{darwin_ns}/darwinendpoints/{NAME}",
                    darwin_view,
                    lambda: operator.pid,
                    darwin_settled,
                ),
            }
            logs = {
                "LWS": lambda: manager.log.read_text(errors="replace")[-3000:],
                "darwin": operator.log,
            }
            trials = Trials(cluster, args.timeout)
            for i in range(args.trials):
                order = ("LWS", "darwin") if i % 2 == 0 else ("darwin", "LWS")
                for label in order:
                    results[label].append(trials.run(contenders[label], logs[label]))
                    row = results[label][-1]
                    print(
                        f"  trial {i + 1} {label}: apply {row['apply']:.2f} s, "
                        f"rollout {row['rollout']:.2f} s, step {row['step']:.2f} s, "
                        f"CPU {row['cpu']:.2f} s, violations {row['violations']}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            manager.stop()
            operator.stop()
            for ns in (lws_ns, darwin_ns):
                cluster.kubectl("delete", "namespace", ns, "--wait=false")
        loads.append(", ".join(f"{x:.1f}" for x in os.getloadavg()))
    report(results, args, loads)
    print(f"logs: {cluster.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
