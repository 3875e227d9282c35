"""A local Kubernetes control plane with simulated B200 nodes, for tests, demos and benchmarks.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by build.sh from the
official Go modules) on 127.0.0.1 with free ports, and kwok playing kubelet for fake 8-GPU nodes.

    python tests/cluster/localcluster.py up [--dir DIR] [--nodes N]   # idempotent
    python tests/cluster/localcluster.py down [--dir DIR]
    python tests/cluster/localcluster.py status [--dir DIR]

Standard library only, so it runs before any venv exists. `down` stops only the processes that
`up` started (by pid, checked against their command line) and removes the cluster's directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("DARWIN_CACHE", Path.home() / ".cache" / "darwin-operator"))
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"


def versions() -> dict[str, str]:
    pinned = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            pinned[key.strip()] = value.strip()
    return pinned


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    kubectl: Path
    kwok: Path

    @classmethod
    def from_cache(cls) -> Binaries:
        v = versions()
        kube = CACHE / "bin" / f"kubernetes-{v['K8S_VERSION']}"
        return cls(
            etcd=CACHE / "bin" / f"etcd-{v['ETCD_VERSION']}" / "etcd",
            apiserver=kube / "kube-apiserver",
            controller_manager=kube / "kube-controller-manager",
            scheduler=kube / "kube-scheduler",
            kubectl=kube / "kubectl",
            kwok=CACHE / "bin" / f"kwok-{v['KWOK_VERSION']}" / "kwok",
        )

    def missing(self) -> list[Path]:
        return [p for p in vars(self).values() if not os.access(p, os.X_OK)]


@dataclass(frozen=True)
class NodeShape:
    gpus: int = 8
    cpu: str = "224"
    memory: str = "2Ti"
    gpu_product: str = "NVIDIA-B200"
    nodes_per_rack: int = 2
    racks_per_zone: int = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


# --- PKI -------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, client certs per component, service-account keys."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=darwin-test-ca",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    sans = (
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local"
    )
    certs = {
        "apiserver": ("/CN=kube-apiserver", sans),
        "admin": ("/O=system:masters/CN=darwin-admin", None),
        "controller-manager": ("/CN=system:kube-controller-manager", None),
        "scheduler": ("/CN=system:kube-scheduler", None),
        "kwok": ("/O=system:masters/CN=kwok", None),
    }
    for name, (subject, ext) in certs.items():
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=pki,
        )
        extra = []
        if ext:
            (pki / f"{name}.ext").write_text(ext + "\n")
            extra = ["-extfile", f"{name}.ext"]
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3650",
            "-out",
            f"{name}.crt",
            *extra,
            cwd=pki,
        )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "darwin-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": "darwin-local", "context": {"cluster": "darwin-local", "user": user}}
                ],
                "current-context": "darwin-local",
            },
            indent=2,
        )
    )


# --- processes -------------------------------------------------------------------------------


class Cluster:
    def __init__(self, directory: Path):
        self.dir = directory.resolve()
        self.state_file = self.dir / "state.json"
        self.kubeconfig = self.dir / "kubeconfig"
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"

    # state.json holds the pids and ports `up` chose; it is what `down` and `status` trust.
    def state(self) -> dict:
        if not self.state_file.exists():
            return {}
        return json.loads(self.state_file.read_text())

    def _save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def _spawn(self, state: dict, name: str, argv: list[str]) -> None:
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        state.setdefault("pids", {})[name] = proc.pid
        self._save(state)

    def _alive(self, state: dict, name: str) -> bool:
        pid = state.get("pids", {}).get(name)
        return pid is not None and _is_ours(pid, state.get("binaries", {}).get(name, ""))

    # --- health ------------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def apiserver_ready(self, state: dict) -> bool:
        port = state.get("ports", {}).get("apiserver")
        if not port:
            return False
        try:
            url = f"https://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, context=self._ssl(), timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def healthy(self) -> bool:
        state = self.state()
        names = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        return (
            bool(state)
            and all(self._alive(state, n) for n in names)
            and self.apiserver_ready(state)
        )

    def kubectl(self, *args: str, input: str | None = None, check: bool = True):
        kubectl = self.state()["binaries"]["kubectl"]
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            text=True,
            capture_output=True,
            check=check,
        )

    # --- up / down ---------------------------------------------------------------------------

    def up(self, nodes: int, shape: NodeShape, timeout: float = 120, attempts: int = 2) -> None:
        """Start the cluster, or keep the healthy one that is here. A start that fails (a port
        taken between choosing and binding it, a component that exits) is torn down and retried
        with fresh ports, so a failed `up` never leaves processes behind."""
        if self.healthy():
            log(f"already up: KUBECONFIG={self.kubeconfig}")
            self.ensure_nodes(nodes, shape, timeout)
            return
        if self.dir.exists():
            log("a previous cluster here is not healthy: tearing it down first")
            self.down()
        bins = Binaries.from_cache()
        if missing := bins.missing():
            raise SystemExit(
                f"cluster: missing binaries {[str(m) for m in missing]}; "
                f"run tests/cluster/build.sh first"
            )
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                self._start(bins, nodes, shape, timeout)
            except (SystemExit, Exception) as error:
                kept = self.dir.with_name(f"{self.dir.name}-failed-start-logs")
                subprocess.run(["rm", "-rf", str(kept)], check=False)
                if self.logs.exists():
                    shutil.copytree(self.logs, kept)
                self.down()
                log(f"start attempt {attempt} failed ({error}); logs kept in {kept}")
                if attempt == attempts:
                    raise
                continue
            log(f"up in {time.monotonic() - started:.1f}s: KUBECONFIG={self.kubeconfig}")
            return

    def _start(self, bins: Binaries, nodes: int, shape: NodeShape, timeout: float) -> None:
        self.logs.mkdir(parents=True)
        make_pki(self.pki)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        state = {
            "ports": {name: free_port() for name in names},
            "binaries": {
                "etcd": str(bins.etcd),
                "kube-apiserver": str(bins.apiserver),
                "kube-controller-manager": str(bins.controller_manager),
                "kube-scheduler": str(bins.scheduler),
                "kwok": str(bins.kwok),
                "kubectl": str(bins.kubectl),
            },
        }
        self._save(state)
        server = f"https://127.0.0.1:{state['ports']['apiserver']}"
        write_kubeconfig(self.kubeconfig, server, self.pki, "admin")
        for user in ("controller-manager", "scheduler", "kwok"):
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.pki, user)
        self._start_control_plane(state, bins, shape)
        self.ensure_nodes(nodes, shape, timeout)

    def _start_control_plane(self, state: dict, bins: Binaries, shape: NodeShape) -> None:
        p, pki, d = state["ports"], self.pki, self.dir
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self._spawn(
            state,
            "etcd",
            [
                str(bins.etcd),
                "--name=default",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        _wait(lambda: _http_ok(f"{etcd_url}/health"), 30, "etcd healthy", self.logs / "etcd.log")

        self._spawn(
            state,
            "kube-apiserver",
            [
                str(bins.apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--v=1",
            ],
        )
        _wait(
            lambda: self.apiserver_ready(state),
            90,
            "kube-apiserver ready",
            self.logs / "kube-apiserver.log",
        )

        self._spawn(
            state,
            "kube-controller-manager",
            [
                str(bins.controller_manager),
                f"--kubeconfig={d / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={d / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={d / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['controller-manager']}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--controllers=*",
                "--node-monitor-grace-period=20s",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                "--v=1",
            ],
        )
        self._spawn(
            state,
            "kube-scheduler",
            [
                str(bins.scheduler),
                f"--kubeconfig={d / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={d / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={d / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p['scheduler']}",
                "--leader-elect=false",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                "--v=1",
            ],
        )
        self._spawn(
            state,
            "kwok",
            [
                str(bins.kwok),
                f"--kubeconfig={d / 'kwok.kubeconfig'}",
                f"--config={HERE / 'kwok-stages.yaml'}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=10.0.0.1",
                f"--cidr={POD_CIDR}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{p['kwok']}",
            ],
        )
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            if not self._alive(state, name):
                raise SystemExit(f"cluster: {name} exited; see {self.logs / (name + '.log')}")

    def ensure_nodes(self, count: int, shape: NodeShape, timeout: float) -> None:
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [node_manifest(i, shape) for i in range(count)],
                }
            ),
        )

        def all_ready() -> bool:
            out = self.kubectl("get", "nodes", "-o", "json", check=False)
            if out.returncode:
                return False
            items = json.loads(out.stdout)["items"]
            ready = [
                n
                for n in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) >= count

        _wait(all_ready, timeout, f"{count} nodes Ready", self.logs / "kwok.log")

    def down(self) -> None:
        state = self.state()
        # Reverse start order: kwok and controllers first, etcd last.
        for name in reversed(list(state.get("pids", {}))):
            pid = state["pids"][name]
            if _is_ours(pid, state.get("binaries", {}).get(name, "")):
                _stop(pid)
        if self.dir.exists():
            subprocess.run(["rm", "-rf", str(self.dir)], check=True)
        log(f"down: removed {self.dir}")


def node_manifest(index: int, shape: NodeShape) -> dict:
    rack = index // shape.nodes_per_rack
    zone = rack // shape.racks_per_zone
    name = f"kwok-node-{index}"
    resources = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": "110",
        "nvidia.com/gpu": str(shape.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.product": shape.gpu_product,
                "nvidia.com/gpu.count": str(shape.gpus),
                "topology.kubernetes.io/zone": f"zone-{zone}",
                "darwin.test/rack": f"rack-{rack}",
            },
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


def _is_ours(pid: int, binary: str) -> bool:
    """True only if pid is alive and still runs our binary (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return bool(binary) and cmdline == binary


def _stop(pid: int, grace: float = 10) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        try:  # reap if it is our child; otherwise just poll /proc
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float, what: str, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
    raise SystemExit(f"cluster: timed out after {timeout:.0f}s waiting for {what}\n{tail}")


def default_dir() -> Path:
    return Path(os.environ.get("CLUSTER_DIR", REPO / ".cluster"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_dir(),
        help="cluster directory (default $CLUSTER_DIR or .cluster)",
    )
    parser.add_argument("--nodes", type=int, default=int(os.environ.get("CLUSTER_NODES", 4)))
    parser.add_argument("--gpus-per-node", type=int, default=8)
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.command == "up":
        cluster.up(args.nodes, NodeShape(gpus=args.gpus_per_node))
        print(cluster.kubeconfig)
    elif args.command == "down":
        cluster.down()
    else:
        healthy = cluster.healthy()
        print(f"{'up' if healthy else 'down'}: {cluster.dir}")
        return 0 if healthy else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
