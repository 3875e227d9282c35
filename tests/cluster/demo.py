"""`make demo`: the reference endpoint on the local simulated cluster, from apply to Ready.

    python tests/cluster/demo.py up      # CRD, operator in the background, reference endpoint
    python tests/cluster/demo.py up --real   # the same shape on the real nodes (REAL_NODES=2)
    python tests/cluster/demo.py down    # stop the demo's operator, delete the endpoint

With --real the endpoint runs the vLLM stand-in image (tests/standin) as real processes on the
real nodes: the reference shape (TP2 x PP3 = 6 GPUs a pod, two replicas) with requests the
machine can give (a real node has the host's CPUs and memory) and small fake weights in a
hostPath cache under the cluster directory.

Idempotent: a second `up` reuses the running operator and re-applies the manifest. The operator
runs as a local process (as in the e2e tests) with its log in $CLUSTER_DIR/demo-operator.log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from localcluster import REPO, Cluster, default_dir, free_port

MANIFEST = REPO / "manifests" / "darwin-endpoint.yaml"
STANDIN_IMAGE = "localhost/darwin/vllm-standin:0.33.0"
WEIGHT_FILES, WEIGHT_FILE_BYTES = 4, 8 << 20
CRD = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"
OPERATOR = Path(sys.executable).parent / "darwin-operator"
NAMESPACE = "default"
READY_TIMEOUT = 300


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def real_node_manifest(reference: dict, models: Path) -> dict:
    """The reference endpoint for the real nodes: same shape, the stand-in image, requests a
    real node can give, weights from `models` on the node."""
    spec = reference["spec"]
    spec["engine"]["image"] = STANDIN_IMAGE
    spec["resources"] = {"cpu": "100m", "memory": "256Mi", "sharedMemory": "64Mi"}
    spec["placement"]["nodeSelector"] = {"type": "real"}
    spec["model"]["cache"] = {"hostPath": str(models)}
    return reference


def fake_weights(models: Path, model: str) -> None:
    """A few files of bytes where the stand-in looks for a hub model (DOWNLOAD_DIR/ORG/NAME)."""
    directory = models / model
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "demo"}))
    for i in range(WEIGHT_FILES):
        shard = directory / f"model-{i:05d}-of-{WEIGHT_FILES:05d}.safetensors"
        if not shard.exists():
            shard.write_bytes(os.urandom(WEIGHT_FILE_BYTES))


class Demo:
    def __init__(self, cluster: Cluster, real: bool = False):
        self.cluster = cluster
        self.pid_file = cluster.dir / "demo-operator.pid"
        self.log_file = cluster.dir / "demo-operator.log"
        self.manifest = MANIFEST
        if real:
            self.manifest = cluster.dir / "demo-real-endpoint.json"
            models = cluster.dir / "models"
            reference = yaml.safe_load(MANIFEST.read_text())
            fake_weights(models, reference["spec"]["model"]["name"])
            self.manifest.write_text(json.dumps(real_node_manifest(reference, models), indent=2))

    def kubectl(self, *args: str, check: bool = True) -> str:
        return self.cluster.kubectl(*args, check=check).stdout

    def operator_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"darwin-operator" in cmdline else None

    def start_operator(self) -> None:
        if pid := self.operator_pid():
            say(f"operator already running (pid {pid}); log: {self.log_file}")
            return
        metrics, health = free_port(), free_port()
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [
                    str(OPERATOR),
                    "run",
                    "--kubeconfig",
                    str(self.cluster.kubeconfig),
                    "--metrics-port",
                    str(metrics),
                    "--health-port",
                    str(health),
                    "--standalone",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},  # the flag does it
            )
        self.pid_file.write_text(str(proc.pid))
        (self.cluster.dir / "demo-operator.ports").write_text(
            json.dumps({"metrics": metrics, "health": health})
        )
        say(f"operator started (pid {proc.pid}); metrics on http://127.0.0.1:{metrics}/metrics")

    def up(self) -> int:
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/darwinendpoints.serving.darwin.ai",
        )
        self.start_operator()
        self.kubectl("apply", "-n", NAMESPACE, "-f", str(self.manifest))
        name = json.loads(
            self.kubectl("get", "-n", NAMESPACE, "-f", str(self.manifest), "-o", "json")
        )["metadata"]["name"]
        say(f"applied {self.manifest}; waiting for darwinendpoint/{name} to be Ready")
        if not self.watch(name):
            say(f"not Ready after {READY_TIMEOUT}s; the operator's log: {self.log_file}")
            return 1
        print(self.kubectl("get", "-n", NAMESPACE, "dwe,pods", "-o", "wide"))
        kubeconfig = self.cluster.kubeconfig
        say(f"""the endpoint is Ready. Look around:
  export KUBECONFIG={kubeconfig}
  kubectl get dwe {name} -o yaml            # status: groups, conditions, endpoint URL
  kubectl get pods,svc,endpointslices,pdb -l serving.darwin.ai/endpoint={name}
  kubectl scale dwe {name} --replicas=3     # a third group; 4 nodes x 8 GPUs fit 4 groups of 6
  tail -f {self.log_file}
(kubectl: {self.cluster.state()["binaries"]["kubectl"]})
Stop it all with: make demo-down""")
        return 0

    def watch(self, name: str) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            raw = self.kubectl("get", "-n", NAMESPACE, "dwe", name, "-o", "json", check=False)
            status = json.loads(raw).get("status", {}) if raw else {}
            groups = ", ".join(
                f"g{g.get('index')}={g.get('phase')}" for g in status.get("groups", [])
            )
            line = f"phase={status.get('phase', '-')} ready={status.get('ready', '-')} {groups}"
            if line != last:
                say(line)
                last = line
            if status.get("phase") == "Ready":
                return True
            time.sleep(1)
        return False

    def down(self) -> None:
        if self.cluster.healthy():
            self.kubectl("delete", "-n", NAMESPACE, "--ignore-not-found", "-f", str(self.manifest))
        if pid := self.operator_pid():
            os.killpg(pid, signal.SIGTERM)
            say(f"operator (pid {pid}) stopped")
        self.pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=default_dir())
    parser.add_argument("--real", action="store_true", help="on the real nodes (stand-in image)")
    args = parser.parse_args(argv)
    demo = Demo(Cluster(args.dir), real=args.real)
    if args.command == "up":
        return demo.up()
    demo.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
