"""`make demo`: the reference endpoint on the local simulated cluster, from apply to Ready.

    python tests/cluster/demo.py up      # CRD, operator in the background, reference endpoint
    python tests/cluster/demo.py up --real   # the same shape on the real nodes (REAL_NODES=2)
    python tests/cluster/demo.py down    # stop the demo's operator, delete the endpoint
    python tests/cluster/demo.py up --install helm   # the operator from the chart, in a pod

With --install helm (`make demo INSTALL=helm REAL_NODES=2`) the operator is not a local process:
the chart installs it (release darwin-operator in darwin-system, watching the whole cluster
unless --watch-namespace) from the image built from operator/Dockerfile (`make operator-image`),
imported into the real nodes, and it runs on one of them as the chart runs it: non-root, a
read-only root filesystem, its liveness probe, the chart's RBAC and an in-cluster client that
reaches the API server through the `kubernetes` Service. The reference endpoint then goes to the
kwok nodes (its B200-sized pods fit no real node), unless --real is given as well.

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

import in_cluster
import yaml
from localcluster import REPO, Cluster, default_dir, free_port

MANIFEST = REPO / "manifests" / "darwin-endpoint.yaml"
STANDIN_IMAGE = "localhost/darwin/vllm-standin:0.33.0"
WEIGHT_FILES, WEIGHT_FILE_BYTES = 4, 8 << 20
CRD = REPO / "crds" / "serving.darwin.ai_darwinendpoints.yaml"
OPERATOR = Path(sys.executable).parent / "darwin-operator"
NAMESPACE = "default"
READY_TIMEOUT = 300
RELEASE, OPERATOR_NAMESPACE = "darwin-operator", "darwin-system"


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
    def __init__(
        self,
        cluster: Cluster,
        real: bool = False,
        install: str = "process",
        namespace: str = NAMESPACE,
        watch_namespaces: list[str] | None = None,
    ):
        self.cluster = cluster
        self.install, self.namespace, self.watch_namespaces = install, namespace, watch_namespaces
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

    def install_chart(self) -> None:
        """The chart, with the operator image loaded into the real nodes (no registry)."""
        if not json.loads(self.kubectl("get", "nodes", "-l", "type=real", "-o", "json"))["items"]:
            raise SystemExit(
                "demo: --install helm runs the operator on a real node: start the cluster with "
                "REAL_NODES=2 (kwok nodes run no process)"
            )
        tar = in_cluster.build_image()
        say(f"importing {tar.name} into the real nodes")
        self.cluster.real_nodes().import_image(tar)
        say(f"helm upgrade --install {RELEASE} charts/darwin-operator -n {OPERATOR_NAMESPACE}")
        values = in_cluster.values(namespaces=self.watch_namespaces)
        kubeconfig = self.cluster.kubeconfig
        in_cluster.deploy(kubeconfig, RELEASE, OPERATOR_NAMESPACE, values)  # --wait: available
        say("the operator runs in the cluster:")
        print(self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"))
        pod = json.loads(
            self.kubectl(
                "get",
                "pods",
                "-n",
                OPERATOR_NAMESPACE,
                "-o",
                "json",
                "-l",
                f"app.kubernetes.io/instance={RELEASE}",
            )  # fmt: skip
        )["items"][0]
        context = pod["spec"]["containers"][0]["securityContext"]
        status = pod["status"]["containerStatuses"][0]
        say(
            f"{pod['metadata']['name']} on {pod['spec']['nodeName']}: user "
            f"{pod['spec']['securityContext']['runAsUser']}, readOnlyRootFilesystem "
            f"{context['readOnlyRootFilesystem']}, ready {status['ready']}, restarts "
            f"{status['restartCount']}"
        )

    def up(self) -> int:
        if self.namespace != NAMESPACE:  # before the chart, which may grant a Role in it
            self.kubectl("create", "namespace", self.namespace, check=False)
        if self.install == "helm":
            self.install_chart()  # the chart brings the CRDs
        else:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/darwinendpoints.serving.darwin.ai",
        )
        if self.install != "helm":
            self.start_operator()
        self.kubectl("apply", "-n", self.namespace, "-f", str(self.manifest))
        name = json.loads(
            self.kubectl("get", "-n", self.namespace, "-f", str(self.manifest), "-o", "json")
        )["metadata"]["name"]
        say(f"applied {self.manifest}; waiting for darwinendpoint/{name} to be Ready")
        if not self.watch(name):
            say(f"not Ready after {READY_TIMEOUT}s; the operator's log: {self.log_file}")
            return 1
        print(self.kubectl("get", "-n", self.namespace, "dwe,pods", "-o", "wide"))
        kubeconfig = self.cluster.kubeconfig
        say(f"""the endpoint is Ready. Look around:
  export KUBECONFIG={kubeconfig}
  kubectl get dwe {name} -o yaml            # status: groups, conditions, endpoint URL
  kubectl get pods,svc,endpointslices,pdb -l serving.darwin.ai/endpoint={name}
  kubectl scale dwe {name} --replicas=3     # a third group; 4 nodes x 8 GPUs fit 4 groups of 6
  {self.operator_log_command()}
(kubectl: {self.cluster.state()["binaries"]["kubectl"]})
Stop it all with: make demo-down""")
        return 0

    def watch(self, name: str) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            raw = self.kubectl("get", "-n", self.namespace, "dwe", name, "-o", "json", check=False)
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

    def operator_log_command(self) -> str:
        if self.install == "helm":
            return f"kubectl logs -n {OPERATOR_NAMESPACE} deploy/{RELEASE} -f"
        return f"tail -f {self.log_file}"

    def down(self) -> None:
        if self.cluster.healthy():
            self.kubectl(
                "delete", "-n", self.namespace, "--ignore-not-found", "-f", str(self.manifest)
            )
        if self.cluster.healthy() and in_cluster.helm_binary().exists():
            releases = in_cluster.helm(
                self.cluster.kubeconfig, "list", "-n", OPERATOR_NAMESPACE, "-q", check=False
            ).stdout.split()
            if RELEASE in releases:
                in_cluster.uninstall(self.cluster.kubeconfig, RELEASE, OPERATOR_NAMESPACE)
                say(f"helm release {RELEASE} uninstalled")
        if pid := self.operator_pid():
            os.killpg(pid, signal.SIGTERM)
            say(f"operator (pid {pid}) stopped")
        self.pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=default_dir())
    parser.add_argument("--real", action="store_true", help="on the real nodes (stand-in image)")
    parser.add_argument(
        "--install",
        choices=["process", "helm"],
        default="process",
        help="process: the operator as a local process; helm: the chart installs it in a pod "
        "on a real node (a cluster with REAL_NODES)",
    )
    parser.add_argument("--namespace", default=NAMESPACE, help="the endpoint's namespace")
    parser.add_argument(
        "--watch-namespace",
        action="append",
        metavar="NAMESPACE",
        help="with --install helm: watch only this namespace (repeatable); default: all",
    )
    args = parser.parse_args(argv)
    demo = Demo(
        Cluster(args.dir),
        real=args.real,
        install=args.install,
        namespace=args.namespace,
        watch_namespaces=args.watch_namespace,
    )
    if args.command == "up":
        return demo.up()
    demo.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
