"""What node-local weights buy for an 800 GB model, simulated on the local cluster.

The reference model's weights (800 GB) come from the hub at `--hub-gbps` (1.25 GB/s, per node)
and load from local NVMe at `--nvme-gbps` (25 GB/s). Those times are modelled with the kwok
knobs, scaled down by `--scale` so that a run takes minutes: without node-local weights each pod
downloads and then loads (`darwin.test/ready-after` = download + load); with
`model.cache.staging: PerNode` a staging pod per node takes the download
(`darwin.test/staged-after`) and a pod only the load. Everything else (the operator's decisions,
scheduling, the rollout's steps) runs for real at full speed, and the measured times are scaled
back up, so the operator's own seconds count 1/scale times over: the figures are an upper bound.

Two measurements per mode, 4 groups of TP2 x PP3 (one pod of 6 GPUs) on 4 nodes:
- failure to serving: a group's pod deleted -> the group Ready again;
- rollout: a new model revision -> all 4 groups Ready on it (maxUnavailable 1, maxSurge 0),
next to the floor, bytes / bandwidth: one download + one load per step without node-local
weights; with them, one download (all nodes in parallel, old groups serving) + one load per step.

    .venv/bin/python bench/bench_weights.py                  # starts and stops its own cluster
    .venv/bin/python bench/bench_weights.py --kubeconfig K   # a cluster that is already up
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench_rollout import CRD_FILE, Bench
from cluster_setup import add_cluster_arguments, bench_cluster
from tests.e2e.operator_process import OperatorProcess
from tests.specs import endpoint_manifest

GROUPS = 4
NAME = "weights"


def duration(seconds: float) -> str:
    return f"{max(0.0, seconds):.3f}s"


class WeightsBench(Bench):
    def ready_on(self, ns: str, revision: str | None, restarts: int = 0) -> bool:
        s = self.status(ns, NAME)
        groups = s.get("groups") or []
        return (
            s.get("readyReplicas") == GROUPS
            and len(groups) == GROUPS
            and all(g["phase"] == "Ready" for g in groups)
            and (revision is None or s.get("updateRevision") != revision)
            and (revision is None or all(g["revision"] == s.get("updateRevision") for g in groups))
            and sum(g.get("restarts", 0) for g in groups) >= restarts
        )

    def wait(self, check, log, timeout: float = 1800) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, log()
            time.sleep(0.1)

    def run(self, local: bool, download: float, load: float) -> dict:
        mode = "local" if local else "hub"
        ns = self.cluster.create_namespace(f"bench-weights-{mode}-{int(time.time())}")
        process = OperatorProcess(
            self.kubeconfig, self.workdir / f"operator-{ns}.log", namespaces=(ns,)
        )
        process.resync_seconds = 30
        process.start()
        ready_after = load if local else download + load
        manifest = endpoint_manifest(
            NAME, replicas=GROUPS, ready_after=duration(ready_after), drain_seconds=0
        )
        spec = manifest["spec"]
        spec["model"]["revision"] = "r1"
        spec["rollout"].update(maxUnavailable=1, maxSurge=0)
        if local:
            spec["model"]["cache"] = {"hostPath": "/mnt/nvme/models", "staging": "PerNode"}
            spec["podMetadata"]["annotations"]["darwin.test/staged-after"] = duration(download)
        try:
            self.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manifest))
            self.wait(lambda: self.ready_on(ns, None), process.log)
            first = self.status(ns, NAME)["updateRevision"]

            started = time.monotonic()
            core = self.cluster.core()
            leader = core.list_namespaced_pod(
                ns, label_selector="serving.darwin.ai/group=0,serving.darwin.ai/role=leader"
            ).items[0]
            core.delete_namespaced_pod(leader.metadata.name, ns)
            self.wait(lambda: self.ready_on(ns, None, restarts=1), process.log)
            failure = time.monotonic() - started

            patch = {"spec": {"model": {"revision": "r2"}}}
            started = time.monotonic()
            self.kubectl("patch", "dwe", NAME, "-n", ns, "--type", "merge", "-p", json.dumps(patch))
            self.wait(lambda: self.ready_on(ns, first), process.log)
            rollout = time.monotonic() - started
        finally:
            assert process.stop() == 0, process.log()
        self.cluster.delete_namespace(ns)
        return {"failure": failure, "rollout": rollout}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cluster_arguments(parser, nodes=GROUPS)
    parser.add_argument("--gigabytes", type=float, default=800.0)
    parser.add_argument("--hub-gbps", type=float, default=1.25, help="GB/s from the hub, per node")
    parser.add_argument("--nvme-gbps", type=float, default=25.0, help="GB/s from local NVMe")
    parser.add_argument("--scale", type=float, default=0.05, help="simulated s per modelled s")
    args = parser.parse_args()
    download = args.gigabytes / args.hub_gbps
    load = args.gigabytes / args.nvme_gbps
    results = {}
    with bench_cluster(args, "darwin-bench-weights-") as cluster:
        bench = WeightsBench(cluster)
        cluster.apply_crds(CRD_FILE, "darwinendpoints.serving.darwin.ai")
        for local in (False, True):
            measured = bench.run(local, download * args.scale, load * args.scale)
            results[local] = {k: v / args.scale for k, v in measured.items()}
            print(f"  done: local={local} {measured} (simulated seconds)", file=sys.stderr)

    floors = {
        False: {"failure": download + load, "rollout": GROUPS * (download + load)},
        True: {"failure": load, "rollout": download + GROUPS * load},
    }
    print(
        f"\nweights benchmark: {args.gigabytes:g} GB, hub {args.hub_gbps:g} GB/s per node "
        f"({download:.0f} s), local NVMe {args.nvme_gbps:g} GB/s ({load:.0f} s); {GROUPS} groups "
        f"of 6 GPUs on {GROUPS} nodes, maxUnavailable 1; simulated at {args.scale:g}x, "
        "shown in modelled seconds"
    )
    header = f"{'weights':<23} {'':<20} {'measured s':>11} {'floor s':>9} {'x floor':>8}"
    print(header)
    print("-" * len(header))
    for local in (False, True):
        mode = "node-local (PerNode)" if local else "every pod from the hub"
        for what, label in (("failure", "failure -> serving"), ("rollout", "rollout of 4 groups")):
            got, floor = results[local][what], floors[local][what]
            print(f"{mode:<23} {label:<20} {got:>11.0f} {floor:>9.0f} {got / floor:>8.2f}")
    print(
        "\nfloor: bytes / bandwidth only. Without node-local weights a recreated group downloads "
        "and loads again, and each rollout step does too; with them a recreated group returns to "
        "its node and loads, and a rollout downloads once on all nodes (old groups serving), then "
        "each step loads. The operator's own seconds are multiplied by 1/scale in the measured "
        "column."
    )
    print(f"operator logs: {cluster.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
