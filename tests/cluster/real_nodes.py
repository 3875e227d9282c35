"""Real nodes: a kubelet with its own containerd per node, running pods as real processes.

Each node `real-node-K` is, on this one host:
  - a mount namespace of its own (a holder process keeps it alive) in which /run, /var/lib and
    /var/log are the node's directories: the kubelet's fixed paths (device-plugin sockets under
    /var/lib/kubelet, /var/log/pods) and containerd's (/run/containerd, shim sockets, netns) stay
    apart from the other nodes', and every mount the node makes disappears with it;
  - containerd (cgroupfs, overlayfs, restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE) with
    the CNI bridge `dwbrK` (10.245.K.0/24) and the images of node_images.image_tars imported;
  - a kubelet (cgroupRoot /darwin-real-node-K) and the fake GPU device plugin (8 x nvidia.com/gpu);
  - its daemons in the cgroup /darwin-real-node-K-daemons, so that stopping a node kills every
    process it started, shims and containers included.
Shared by the nodes: the host address HOST_IP on `dwhost0` (a bridge without ports; this kernel
has no dummy links), where the apiserver, the kubelets and CoreDNS listen so that pods reach them;
CoreDNS (the `kubernetes` plugin; every kubelet's clusterDNS) and kube-proxy (iptables mode:
ClusterIP Services from the host and from pods).
Everything the nodes change on the host is recorded in host.Claim first and undone by `down`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import host
from kwok_nodes import NodeShape, gpu_node_labels
from node_images import image_tars
from pki import issue_cert, write_kubeconfig
from processes import free_port, http_ok, is_ours, log, spawn, stop, wait

HERE = Path(__file__).resolve().parent
HOST_LINK = "dwhost0"
HOST_IP = "10.245.255.1"
CLUSTER_CIDR = "10.245.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
NAMESPACE_HOLDER = "darwin-node-namespace"  # argv[0] of the process that holds a node's mounts
GPU_RESOURCE = "nvidia.com/gpu"
# containerd's socket as the node's processes see it (host-side paths can exceed the 107-byte
# limit of a unix socket path, so tools reach it from inside the node's namespace).
CTR = ["ctr", "--address", "/run/containerd/containerd.sock"]


def in_namespace(holder: int) -> list[str]:
    """The command prefix that runs a program in the mount namespace `holder` keeps."""
    return ["nsenter", f"--mount=/proc/{holder}/ns/mnt", "--"]


def node_name(index: int) -> str:
    return f"real-node-{index}"


def bridge_name(index: int) -> str:
    return f"dwbr{index}"


def subnet(index: int) -> tuple[str, str]:
    """The node's pod subnet and its gateway (the bridge's address)."""
    return f"10.245.{index}.0/24", f"10.245.{index}.1"


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    coredns: Path

    @classmethod
    def from_cache(cls, cache: Path, versions: dict[str, str]) -> NodeBinaries:
        node = cache / "bin" / f"kubernetes-node-{versions['K8S_VERSION']}"
        return cls(
            kubelet=node / "kubelet",
            kube_proxy=node / "kube-proxy",
            coredns=cache / "bin" / f"coredns-{versions['COREDNS_VERSION']}" / "coredns",
        )

    def all(self) -> list[Path]:
        return [self.kubelet, self.kube_proxy, self.coredns]


def preflight(binaries: NodeBinaries, cluster_dir: Path) -> None:
    """Exits with one line before anything changes if real nodes cannot start here."""
    problem = host.preflight_problem(binaries.all(), cluster_dir)
    if not problem and importlib.util.find_spec("grpc") is None:
        problem = f"the fake GPU plugin needs grpcio in {sys.executable}; run `make venv`"
    if problem:
        raise SystemExit(f"cluster: {problem}")


# --- configuration files (pure) ----------------------------------------------------------------


def containerd_config(node_dir: Path) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{node_dir / "containerd"}"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{node_dir / "opt"}"
[{cri}]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  stream_server_address = "127.0.0.1"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{host.CNI_BIN_DIR}"
  conf_dir = "{node_dir / "cni"}"
"""


def cni_config(index: int) -> dict:
    pod_subnet, gateway = subnet(index)
    return {
        "cniVersion": "0.4.0",
        "name": "darwin-real-nodes",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name(index),
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def kubelet_config(pki: Path, index: int, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": HOST_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "x509": {"clientCAFile": str(pki / "ca.crt")},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/darwin-{node_name(index)}",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "failSwapOn": False,
        "clusterDNS": [HOST_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/run/darwin-resolv.conf",
        # The host's other tenants use memory and disk: evict only when truly short, and never
        # garbage-collect the imported images (there is no registry to pull them back from).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s",
        "shutdownGracePeriod": "0s",
    }


def corefile(kubeconfig: Path, health_port: int, ready_port: int) -> str:
    return f""".:53 {{
    bind {HOST_IP}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} darwin-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
}}
"""


# --- start and stop ----------------------------------------------------------------------------


class RealNodes:
    """The real nodes of the cluster in `cluster_dir` and what they share on the host."""

    def __init__(self, cluster_dir: Path, kubectl, binaries: NodeBinaries, cache: Path):
        self.dir = cluster_dir
        self.cache = cache
        self.pki = cluster_dir / "pki"
        self.logs = cluster_dir / "logs"
        self.kubectl = kubectl
        self.bins = binaries
        self.claim = host.Claim()

    # The claim is written before each change, so that `down` undoes a start that failed midway.
    def _record(self, key: str, item) -> None:
        state = self.claim.read()
        if isinstance(state[key], dict):
            state[key].update(item)
        elif item not in state[key]:
            state[key].append(item)
        self.claim.write(state)

    def _spawn(self, name: str, argv: list[str], binary: str, cgroup: str | None = None) -> int:
        def enter_cgroup() -> None:
            if cgroup:
                host.join_cgroup(cgroup)

        pid = spawn(argv, self.logs / f"{name}.log", preexec_fn=enter_cgroup)
        self._record("pids", {name: [pid, binary]})
        return pid

    def owner(self) -> Path | None:
        owner = self.claim.read().get("owner")
        return Path(owner) if owner else None

    def healthy(self) -> bool:
        state = self.claim.read()
        return (
            state.get("owner") == str(self.dir)
            and bool(state.get("pids"))
            and all(is_ours(pid, binary) for pid, binary in state["pids"].values())
        )

    def refuse_if_taken(self) -> None:
        """Exits if the real nodes of another cluster are up on this host."""
        owner = self.owner()
        if (
            owner
            and owner != self.dir
            and (owner / "state.json").exists()
            and (self.claim.starting() or RealNodes(owner, None, self.bins, self.cache).healthy())
        ):
            raise SystemExit(
                f"cluster: real nodes of the cluster in {owner} are up on this host (one "
                f"cluster with real nodes at a time); stop them first: "
                f"python tests/cluster/localcluster.py down --dir {owner}"
            )

    def claim_host(self) -> None:
        """Takes the host for this cluster and creates the host address the control plane
        binds; first undoes the leftovers of real nodes whose cluster died."""
        with self.claim.locked():
            self.refuse_if_taken()
            if owner := self.owner():
                log(f"undoing the host changes left by the real nodes of {owner}")
                release_host(self.claim)
            self.claim.take(self.dir)
        self._record("links", HOST_LINK)
        host.add_link(HOST_LINK, "bridge", f"{HOST_IP}/32")

    def up(self, count: int, shape: NodeShape, server: str, timeout: float) -> None:
        for user, subject in (
            ("kube-proxy", "/CN=system:kube-proxy"),
            *(
                (node_name(i), f"/O=system:nodes/CN=system:node:{node_name(i)}")
                for i in range(count)
            ),
        ):
            issue_cert(self.pki, user, subject)
            write_kubeconfig(self.dir / f"{user}.kubeconfig", server, self.pki, user)
        self._start_coredns()
        holders = [self._start_runtime(index) for index in range(count)]
        tars = image_tars(self.cache)
        with ThreadPoolExecutor(max_workers=count) as pool:  # imports unpack layers: in parallel
            list(pool.map(lambda holder: self._import(holder, tars), holders))
        for index, holder in enumerate(holders):
            self._start_kubelet(index, holder, shape)
        self._wait_ready(count, shape, timeout)
        # kube-proxy takes its node's address from the Node object: start it once that exists.
        self._start_kube_proxy()

    def _start_coredns(self) -> None:
        health, ready = free_port(), free_port()
        conf = self.dir / "Corefile"
        conf.write_text(corefile(self.dir / "kubeconfig", health, ready))
        binary = str(self.bins.coredns)
        self._spawn("coredns", [binary, "-conf", str(conf)], binary)
        wait(
            lambda: http_ok(f"http://127.0.0.1:{ready}/ready"),
            60,
            "CoreDNS ready",
            self.logs / "coredns.log",
        )

    def _start_kube_proxy(self) -> None:
        healthz = free_port()
        binary = str(self.bins.kube_proxy)
        self._spawn(
            "kube-proxy",
            [
                binary,
                f"--kubeconfig={self.dir / 'kube-proxy.kubeconfig'}",
                "--proxy-mode=iptables",
                f"--hostname-override={node_name(0)}",
                f"--cluster-cidr={CLUSTER_CIDR}",
                f"--nodeport-addresses={HOST_IP}/32",
                "--iptables-localhost-nodeports=false",
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0s",
                "--conntrack-tcp-timeout-close-wait=0s",
                f"--healthz-bind-address=127.0.0.1:{healthz}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
                "--v=1",
            ],
            binary,
        )
        wait(
            lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            60,
            "kube-proxy healthy",
            self.logs / "kube-proxy.log",
        )

    def _start_runtime(self, index: int) -> int:
        """The node's mount namespace, cgroups, bridge and containerd; returns the pid holding
        the namespace (its processes enter it with nsenter)."""
        name = node_name(index)
        node_dir = self.dir / "nodes" / name
        for sub in ("run", "var-lib", "var-log", "containerd", "cni", "opt"):
            (node_dir / sub).mkdir(parents=True, exist_ok=True)
        (node_dir / "run" / "darwin-resolv.conf").write_text(f"nameserver {HOST_IP}\n")
        pods, daemons = f"darwin-{name}", f"darwin-{name}-daemons"
        for cgroup in (pods, daemons):
            self._record("cgroups", cgroup)
            host.make_cgroup(cgroup)
        pod_subnet, gateway = subnet(index)
        self._record("links", bridge_name(index))
        host.add_link(bridge_name(index), "bridge", f"{gateway}/24")

        holder = self._spawn(
            f"{name}-namespace",
            [
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "--",
                "bash",
                "-c",
                f"set -e; mount --bind {node_dir / 'run'} /run; "
                f"mount --bind {node_dir / 'var-lib'} /var/lib; "
                f"mount --bind {node_dir / 'var-log'} /var/log; "
                f"exec -a {NAMESPACE_HOLDER} sleep infinity",
            ],
            NAMESPACE_HOLDER,
            daemons,
        )
        logfile = self.logs / f"{name}-namespace.log"
        wait(lambda: is_ours(holder, NAMESPACE_HOLDER), 10, f"{name} mount namespace", logfile)
        enter = in_namespace(holder)
        (node_dir / "containerd.toml").write_text(containerd_config(node_dir))
        (node_dir / "cni" / "10-darwin.conflist").write_text(json.dumps(cni_config(index)))
        containerd = "/usr/bin/containerd"
        self._spawn(
            f"{name}-containerd",
            [*enter, containerd, "--config", str(node_dir / "containerd.toml")],
            containerd,
            daemons,
        )

        def containerd_up() -> bool:
            return subprocess.run([*enter, *CTR, "version"], capture_output=True).returncode == 0

        wait(containerd_up, 30, f"{name} containerd", self.logs / f"{name}-containerd.log")
        return holder

    def _import(self, holder: int, tars: list[Path]) -> None:
        """Imports the tars; only the first (the sandbox and toolbox) must succeed: another
        tar can be mid-rebuild by tests/images, and its tests then import it themselves."""
        for position, tar in enumerate(tars):
            done = subprocess.run(
                [*in_namespace(holder), *CTR, "-n", "k8s.io", "images", "import", str(tar)],
                capture_output=True,
                text=True,
            )
            if done.returncode and position == 0:
                raise SystemExit(f"cluster: importing {tar} failed: {done.stderr.strip()}")
            if done.returncode:
                log(f"skipped the image {tar}: {done.stderr.strip()}")

    def _start_kubelet(self, index: int, holder: int, shape: NodeShape) -> None:
        """The kubelet and the fake GPU plugin, in the node's namespace."""
        name, daemons = node_name(index), f"darwin-{node_name(index)}-daemons"
        node_dir = self.dir / "nodes" / name
        enter = in_namespace(holder)
        config = node_dir / "kubelet.json"
        config.write_text(json.dumps(kubelet_config(self.pki, index, free_port(), free_port())))
        labels = {"type": "real", **gpu_node_labels(index, shape)}
        kubelet = str(self.bins.kubelet)
        self._spawn(
            f"{name}-kubelet",
            [
                *enter,
                kubelet,
                f"--config={config}",
                f"--kubeconfig={self.dir / f'{name}.kubeconfig'}",
                f"--hostname-override={name}",
                f"--node-ip={HOST_IP}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
                "--v=1",
            ],
            kubelet,
            daemons,
        )
        python = sys.executable
        self._spawn(
            f"{name}-gpu-plugin",
            [
                *enter,
                python,
                str(HERE / "fake_gpu_plugin.py"),
                "--plugin-dir=/var/lib/kubelet/device-plugins",
                f"--resource={GPU_RESOURCE}",
                f"--count={shape.gpus}",
                f"--prefix=GPU-{name}",
            ],
            python,
            daemons,
        )

    @contextlib.contextmanager
    def kubelet_stopped(self, node: str) -> Iterator[int]:
        """The node's kubelet frozen (SIGSTOP): it stops reporting to the control plane, as if
        the node were cut off, while its containers keep running; continued (SIGCONT) on the
        way out, also when the body fails. Yields the kubelet's pid."""
        pid, binary = self.claim.read().get("pids", {}).get(f"{node}-kubelet", (0, ""))
        if not is_ours(pid, binary):
            raise SystemExit(f"cluster: no kubelet of {node} runs (claim: {pid} {binary})")
        os.kill(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)

    def _wait_ready(self, count: int, shape: NodeShape, timeout: float) -> None:
        names = {node_name(i) for i in range(count)}

        def ready() -> bool:
            out = self.kubectl("get", "nodes", "-l", "type=real", "-o", "json", check=False)
            if out.returncode:
                return False
            done = {
                n["metadata"]["name"]
                for n in json.loads(out.stdout)["items"]
                if n["status"].get("allocatable", {}).get(GPU_RESOURCE) == str(shape.gpus)
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n["status"].get("conditions", [])
                )
            }
            return names <= done

        what = f"{count} real nodes Ready with {shape.gpus} x {GPU_RESOURCE}"
        wait(ready, timeout, what, self.logs / f"{node_name(count - 1)}-kubelet.log")

    def import_image(self, tar: Path) -> None:
        """Loads an image tar into every node's containerd (pods use imagePullPolicy Never)."""
        holders = [
            pid
            for name, (pid, _) in self.claim.read()["pids"].items()
            if name.endswith("-namespace")
        ]
        with ThreadPoolExecutor(max_workers=max(1, len(holders))) as pool:
            list(pool.map(lambda holder: self._import(holder, [tar]), holders))

    def down(self) -> None:
        if self.owner() == self.dir:
            release_host(self.claim)


def release_host(claim: host.Claim) -> None:
    """Stops every process the claim records and undoes its host changes, in dependency order:
    kubelets and plugins, then every container and shim (by cgroup), then the holders (their
    mount namespaces and every mount in them go), links, chains, cgroups, sysctls."""
    state = claim.read()
    if not state:
        return
    started = time.monotonic()
    pids = state.get("pids", {})
    first = ("kube-proxy", "coredns")
    for name, (pid, binary) in pids.items():
        if (name.endswith(("-kubelet", "-gpu-plugin")) or name in first) and is_ours(pid, binary):
            stop(pid, grace=5)
    cgroups = state.get("cgroups", [])
    for cgroup in cgroups:
        if not cgroup.endswith("-daemons"):
            host.kill_cgroup(cgroup)
    for name, (pid, binary) in pids.items():
        if name.endswith("-containerd") and is_ours(pid, binary):
            stop(pid, grace=5)
    for cgroup in cgroups:
        host.kill_cgroup(cgroup)
    for pid, binary in pids.values():  # anything not in a cgroup of ours
        if is_ours(pid, binary):
            stop(pid, grace=2)
    for link in state.get("links", []):
        for port in host.links_on(link):
            host.delete_link(port)
        host.delete_link(link)
    host.remove_new_chains(state.get("chains", {}))
    for cgroup in cgroups:
        host.remove_cgroup(cgroup)
    host.restore_sysctls(state.get("sysctls", {}))
    claim.remove()
    log(f"real nodes stopped and the host restored in {time.monotonic() - started:.1f}s")
