"""The chart installed into the local cluster with the pinned helm, and a kubeconfig that acts as
its ServiceAccount (a token from the TokenRequest API), for e2e tests."""

from __future__ import annotations

import base64
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from kubernetes import client as k8s

from tests.e2e.waiting import wait_for
from tests.helm import CHART, helm, values_file

STANDBY_LIFETIME = 15  # the chart's default peering.lifetime


class Release:
    def __init__(self, cluster, name: str, namespace: str) -> None:
        self.cluster, self.name, self.namespace = cluster, name, namespace

    @property
    def fullname(self) -> str:  # the chart's darwin-operator.fullname for our release names
        return self.name

    def helm(self, *args: str, check: bool = True):
        return helm(*args, "--kubeconfig", self.cluster.kubeconfig, check=check)

    def install(self, values: dict):
        return self._deploy("install", values)

    def upgrade(self, values: dict):
        return self._deploy("upgrade", values)

    def _deploy(self, action: str, values: dict):
        with tempfile.TemporaryDirectory() as tmp:
            return self.helm(
                action, self.name, str(CHART), "--namespace", self.namespace, "--wait",
                "--timeout", "120s", "--values", str(values_file(values, Path(tmp))),
            )  # fmt: skip

    def uninstall(self):
        return self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")

    def account_kubeconfig(self, path: Path) -> str:
        """A kubeconfig holding a token of the release's ServiceAccount and nothing else."""
        token = self.cluster.kubectl(
            "create", "token", self.fullname, "--namespace", self.namespace, "--duration", "2h"
        ).stdout.strip()
        admin = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())
        server = admin["clusters"][0]["cluster"]
        ca = (
            server.get("certificate-authority-data")
            or base64.b64encode(Path(server["certificate-authority"]).read_bytes()).decode()
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {"server": server["server"], "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": self.fullname, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": self.fullname}}],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        return str(path)


def release_name() -> str:
    # Contains "darwin-operator", so the chart uses it as the object name prefix unchanged;
    # unique, because ClusterRoles are cluster-wide.
    return f"darwin-operator-{uuid.uuid4().hex[:6]}"


@contextmanager
def extra_namespace(cluster, prefix: str) -> Iterator[str]:
    name = f"{re.sub(r'[^a-z0-9-]', '-', prefix)[:40]}-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(cluster.api)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    wait_for(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


@contextmanager
def installed(cluster, namespace: str, values: dict) -> Iterator[Release]:
    release = Release(cluster, release_name(), namespace)
    release.install(values)
    try:
        yield release
    finally:
        release.uninstall()
