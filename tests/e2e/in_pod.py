"""The operator process as the chart's pod runs it: the Deployment's own arguments, no kubeconfig
anywhere, the ServiceAccount's token and CA at the in-cluster path, KUBERNETES_SERVICE_HOST/PORT
naming the API server. The kwok nodes run no containers, so the pod's process runs here; the
files are mounted in a mount namespace of that process alone (unshare), the host is untouched."""

from __future__ import annotations

import base64
import os
import urllib.parse
from pathlib import Path

import yaml

from tests.e2e.operator_process import OperatorProcess

# The in-cluster path (/var/run/secrets/kubernetes.io/serviceaccount) lies under /var/run, a
# symlink to /run here: a tmpfs there, in the private namespace, holds the account's files.
_MOUNT_AND_RUN = """
set -e
run=$(readlink -f /var/run)
mount -t tmpfs tmpfs "$run"
mkdir -p "$run/secrets/kubernetes.io/serviceaccount"
cp "$1"/token "$1"/ca.crt "$1"/namespace "$run/secrets/kubernetes.io/serviceaccount/"
shift
exec "$@"
"""


def launcher(account_dir: Path) -> tuple[str, ...]:
    unprivileged = () if os.geteuid() == 0 else ("--user", "--map-root-user")
    return (
        "unshare", *unprivileged, "--mount", "--propagation", "private", "--",
        "sh", "-c", _MOUNT_AND_RUN, "sh", str(account_dir),
    )  # fmt: skip


def account_files(cluster, namespace: str, account: str, directory: Path) -> Path:
    """What the kubelet mounts into a pod of this ServiceAccount: token, ca.crt, namespace."""
    directory.mkdir(parents=True, exist_ok=True)
    token = cluster.kubectl(
        "create", "token", account, "--namespace", namespace, "--duration", "1h"
    ).stdout.strip()
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(_ca(cluster))
    (directory / "namespace").write_text(namespace)
    return directory


def _ca(cluster) -> bytes:
    server = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    if "certificate-authority-data" in server:
        return base64.b64decode(server["certificate-authority-data"])
    return Path(server["certificate-authority"]).read_bytes()


def service_env(cluster, home: Path) -> dict[str, str]:
    """The variables a pod gets for the `kubernetes` Service, pointed at the local API server
    (whose certificate names 127.0.0.1); HOME without a ~/.kube/config."""
    server = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
    address = urllib.parse.urlsplit(server["server"])
    home.mkdir(parents=True, exist_ok=True)
    return {
        "KUBERNETES_SERVICE_HOST": address.hostname or "",
        "KUBERNETES_SERVICE_PORT": str(address.port or 443),
        "HOME": str(home),
    }


def deployment_args(cluster, namespace: str, name: str) -> list[str]:
    """The operator container's arguments in the installed Deployment, without the ports
    (OperatorProcess picks free ones: other operators run on this host)."""
    deployment = cluster.json("get", "deployment", name, "-n", namespace)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = list(container.get("args") or [])
    assert args[:1] == ["run"], args
    return [a for a in args[1:] if not a.startswith(("--metrics-port=", "--health-port="))]


def operator_in_pod(cluster, namespace: str, deployment: str, tmp_path: Path) -> OperatorProcess:
    spec = cluster.json("get", "deployment", deployment, "-n", namespace)["spec"]["template"]
    account = spec["spec"]["serviceAccountName"]
    files = account_files(cluster, namespace, account, tmp_path / "serviceaccount")
    return OperatorProcess(
        None,
        tmp_path / "operator.log",
        extra_args=tuple(deployment_args(cluster, namespace, deployment)),
        env={**service_env(cluster, tmp_path / "home"), "POD_ID": f"{deployment}-in-pod"},
        launcher=launcher(files),
    )
