"""A local Kubernetes control plane with simulated B200 nodes, and optionally real ones.

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by build.sh from the
official Go modules) on free ports, kwok playing kubelet for fake 8-GPU nodes, and with
--real-nodes N real kubelets running pods as processes (real_nodes.py; root only).

    python tests/cluster/localcluster.py up [--dir DIR] [--nodes N] [--real-nodes N]  # idempotent
    python tests/cluster/localcluster.py down [--dir DIR]
    python tests/cluster/localcluster.py status [--dir DIR]

This file is the orchestration and the command line; pki.py makes the certificates,
control_plane.py the components' command lines, processes.py starts and stops processes,
kwok_nodes.py and real_nodes.py make the nodes.
The control plane needs only the standard library (it runs before any venv exists); real nodes
also need grpcio for their fake GPU plugin. `down` stops only the processes that `up` started
(by pid, checked against their command line), undoes the real nodes' host changes and removes
the cluster's directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import control_plane
from kwok_nodes import NodeShape, node_lists, node_manifest, ready_node_names
from pki import make_pki, write_kubeconfig
from processes import free_port, http_ok, is_ours, log, spawn, stop, wait

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("DARWIN_CACHE", Path.home() / ".cache" / "darwin-operator"))
# kwok nodes are applied in Lists of this many, this many kubectl processes at a time.
NODES_PER_APPLY = 50
APPLIES_AT_ONCE = 8
# Re-exported for the callers of this module (tests, demo, bench).
__all__ = [
    "CACHE",
    "REPO",
    "Binaries",
    "apply_in_parallel",
    "Cluster",
    "NodeShape",
    "default_dir",
    "free_port",
    "node_manifest",
    "versions",
]


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


# --- processes -------------------------------------------------------------------------------


def apply_in_parallel(kubectl: str, kubeconfig: str, documents: list[str], *extra: str) -> None:
    """`kubectl apply --server-side` of each document (a List), APPLIES_AT_ONCE at a time: one
    kubectl sends one request per object, so 1,000 nodes (or hundreds of endpoints) in one List
    take minutes."""
    argv = [kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts"]
    argv += [*extra, "-f", "-"]
    with ThreadPoolExecutor(APPLIES_AT_ONCE) as pool:
        runs = pool.map(
            lambda doc: subprocess.run(argv, input=doc, text=True, capture_output=True),
            documents,
        )
        for run in runs:
            if run.returncode:
                raise SystemExit(f"cluster: kubectl apply failed: {run.stderr.strip()}")


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
        state.setdefault("pids", {})[name] = spawn(argv, self.logs / f"{name}.log")
        self._save(state)

    def _alive(self, state: dict, name: str) -> bool:
        pid = state.get("pids", {}).get(name)
        return pid is not None and is_ours(pid, state.get("binaries", {}).get(name, ""))

    def flag(self, component: str, name: str) -> str | None:
        """The value of `--name=` a running component of this cluster was started with (read
        from its command line), None if it was not given."""
        pid = self.state().get("pids", {}).get(component)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if pid else []
        prefix = f"--{name}="
        return next((a[len(prefix) :] for a in argv if a.startswith(prefix)), None)

    def real_nodes(self):
        """The real nodes' manager (imported lazily: it is needed only with --real-nodes)."""
        from real_nodes import NodeBinaries, RealNodes

        return RealNodes(self.dir, self.kubectl, NodeBinaries.from_cache(CACHE, versions()), CACHE)

    def server(self, state: dict) -> str:
        return f"https://{state.get('apiserver_host', '127.0.0.1')}:{state['ports']['apiserver']}"

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
            url = f"{self.server(state)}/readyz"
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
            and (not state.get("real_nodes") or self.real_nodes().healthy())
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

    def apply_in_parallel(self, documents: list[str]) -> None:
        apply_in_parallel(self.state()["binaries"]["kubectl"], str(self.kubeconfig), documents)

    # --- up / down ---------------------------------------------------------------------------

    def up(
        self,
        nodes: int,
        shape: NodeShape,
        timeout: float = 120,
        attempts: int = 2,
        real_nodes: int = 0,
        node_monitor_grace_seconds: int = 20,
    ) -> None:
        """Start the cluster, or keep the healthy one that is here. A start that fails (a port
        taken between choosing and binding it, a component that exits) is torn down and retried
        with fresh ports, so a failed `up` never leaves processes or host changes behind."""
        if self.healthy():
            have = self.state().get("real_nodes", 0)
            if have != real_nodes:
                raise SystemExit(
                    f"cluster: the cluster in {self.dir} is up with {have} real nodes, not "
                    f"{real_nodes}; run `down` first to change that"
                )
            log(f"already up: KUBECONFIG={self.kubeconfig}")
            self.ensure_nodes(nodes, shape, timeout)
            return
        bins = Binaries.from_cache()
        if missing := bins.missing():
            raise SystemExit(
                f"cluster: missing binaries {[str(m) for m in missing]}; "
                f"run tests/cluster/build.sh first"
            )
        if real_nodes:
            from real_nodes import preflight

            preflight(self.real_nodes().bins, self.dir)
            self.real_nodes().refuse_if_taken()
        if self.dir.exists():
            log("a previous cluster here is not healthy: tearing it down first")
            self.down()
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                self._start(bins, nodes, shape, timeout, real_nodes, node_monitor_grace_seconds)
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

    def _start(
        self,
        bins: Binaries,
        nodes: int,
        shape: NodeShape,
        timeout: float,
        real_nodes: int,
        node_monitor_grace_seconds: int,
    ) -> None:
        self.logs.mkdir(parents=True)
        names = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        state = {
            "ports": {name: free_port() for name in names},
            "node_monitor_grace_seconds": node_monitor_grace_seconds,
            "binaries": {
                "etcd": str(bins.etcd),
                "kube-apiserver": str(bins.apiserver),
                "kube-controller-manager": str(bins.controller_manager),
                "kube-scheduler": str(bins.scheduler),
                "kwok": str(bins.kwok),
                "kubectl": str(bins.kubectl),
            },
        }
        extra_ips: tuple[str, ...] = ()
        if real_nodes:
            # The apiserver listens on the host address pods reach, and is the endpoint of the
            # `kubernetes` Service there (so in-cluster clients work).
            from real_nodes import HOST_IP

            state.update(real_nodes=real_nodes, apiserver_host=HOST_IP)
            extra_ips = (HOST_IP,)
        self._save(state)
        if real_nodes:
            self.real_nodes().claim_host()
        make_pki(self.pki, extra_ips)
        server = self.server(state)
        write_kubeconfig(self.kubeconfig, server, self.pki, "admin")
        for user in ("controller-manager", "scheduler", "kwok"):
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.pki, user)
        self._start_control_plane(state, bins, shape)
        self.ensure_nodes(nodes, shape, timeout)
        if real_nodes:
            self.real_nodes().up(real_nodes, shape, server, timeout)

    def _start_control_plane(self, state: dict, bins: Binaries, shape: NodeShape) -> None:
        c = control_plane.Layout(
            self.dir,
            state["ports"],
            state.get("apiserver_host", "127.0.0.1"),
            state.get("real_nodes", 0),
            state.get("node_monitor_grace_seconds", 20),
        )
        self._spawn(state, "etcd", control_plane.etcd(bins.etcd, c))
        wait(lambda: http_ok(f"{c.etcd_url}/health"), 30, "etcd healthy", self.logs / "etcd.log")
        self._spawn(state, "kube-apiserver", control_plane.apiserver(bins.apiserver, c))
        wait(
            lambda: self.apiserver_ready(state),
            90,
            "kube-apiserver ready",
            self.logs / "kube-apiserver.log",
        )
        self._spawn(
            state,
            "kube-controller-manager",
            control_plane.controller_manager(bins.controller_manager, c),
        )
        self._spawn(state, "kube-scheduler", control_plane.scheduler(bins.scheduler, c))
        self._spawn(state, "kwok", control_plane.kwok(bins.kwok, c))
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            if not self._alive(state, name):
                raise SystemExit(f"cluster: {name} exited; see {self.logs / (name + '.log')}")

    def ensure_nodes(self, count: int, shape: NodeShape, timeout: float) -> None:
        """The kwok nodes 0..count-1 exist and are Ready."""
        if count == 0:
            return
        self.apply_in_parallel(node_lists(count, shape, per_list=NODES_PER_APPLY))
        wanted = {node_manifest(i, shape)["metadata"]["name"] for i in range(count)}

        def all_ready() -> bool:
            out = self.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json", check=False)
            return not out.returncode and wanted <= ready_node_names(json.loads(out.stdout))

        wait(all_ready, timeout, f"{count} kwok nodes Ready", self.logs / "kwok.log")

    def down(self) -> None:
        state = self.state()
        if state.get("real_nodes"):
            self.real_nodes().down()
        # Reverse start order: kwok and controllers first, etcd last.
        for name in reversed(list(state.get("pids", {}))):
            pid = state["pids"][name]
            if is_ours(pid, state.get("binaries", {}).get(name, "")):
                stop(pid)
        if self.dir.exists():
            subprocess.run(["rm", "-rf", str(self.dir)], check=True)
        log(f"down: removed {self.dir}")


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
    parser.add_argument(
        "--real-nodes",
        type=int,
        default=int(os.environ.get("REAL_NODES", 0)),
        help="real kubelet nodes beside the kwok ones (root; default $REAL_NODES or 0)",
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.command == "up":
        cluster.up(args.nodes, NodeShape(gpus=args.gpus_per_node), real_nodes=args.real_nodes)
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
