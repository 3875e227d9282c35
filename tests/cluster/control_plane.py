"""The control plane's command lines: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, as the local cluster starts them (pure: paths and ports in, argv out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
ALWAYS_ALLOW = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"


@dataclass(frozen=True)
class Layout:
    """Where a cluster's files are and which ports and address it uses."""

    dir: Path
    ports: dict[str, int]
    apiserver_host: str = "127.0.0.1"
    real_nodes: int = 0
    # How long a node may go without renewing its lease before it is NotReady. The tests' 20 s
    # keeps lost-node tests short; Kubernetes' default 50 s suits benchmarks with 1,000 kwok
    # nodes, whose renewals run late when the machine is loaded (every node NotReady at once).
    node_monitor_grace_seconds: int = 20

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd']}"


def etcd(binary: Path, c: Layout) -> list[str]:
    peer_url = f"http://127.0.0.1:{c.ports['etcd-peer']}"
    return [
        str(binary),
        "--name=default",
        f"--data-dir={c.dir / 'etcd'}",
        f"--listen-client-urls={c.etcd_url}",
        f"--advertise-client-urls={c.etcd_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync",
        "--quota-backend-bytes=8589934592",
        "--log-level=warn",
    ]


def apiserver(binary: Path, c: Layout) -> list[str]:
    pki = c.pki
    # Without real nodes nothing could reach an endpoint of the `kubernetes` Service.
    reconciler = "lease" if c.real_nodes else "none"
    return [
        str(binary),
        f"--etcd-servers={c.etcd_url}",
        f"--bind-address={c.apiserver_host}",
        f"--advertise-address={c.apiserver_host}",
        f"--secure-port={c.ports['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--endpoint-reconciler-type={reconciler}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--v=1",
    ]


def controller_manager(binary: Path, c: Layout) -> list[str]:
    kubeconfig, pki = c.dir / "controller-manager.kubeconfig", c.pki
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={c.ports['controller-manager']}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--controllers=*",
        f"--node-monitor-grace-period={c.node_monitor_grace_seconds}s",
        # As large clusters run it: with the default 20 requests/s, the node controller lifting
        # not-ready taints and posting events lags minutes behind 1,000 kwok nodes.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        ALWAYS_ALLOW,
        "--v=1",
    ]


def scheduler(binary: Path, c: Layout) -> list[str]:
    kubeconfig = c.dir / "scheduler.kubeconfig"
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={c.ports['scheduler']}",
        "--leader-elect=false",
        ALWAYS_ALLOW,
        "--v=1",
    ]


def kwok(binary: Path, c: Layout) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={c.dir / 'kwok.kubeconfig'}",
        f"--config={HERE / 'kwok-stages.yaml'}",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--node-ip=10.0.0.1",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{c.ports['kwok']}",
    ]
