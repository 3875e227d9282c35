"""The operator in the cluster as users install it: the chart (charts/darwin-operator) with the
image built from operator/Dockerfile (tests/images), run by a real node's kubelet.

Shared by `make demo INSTALL=helm` (demo.py) and the real-node tests (tests/e2e_real).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from localcluster import CACHE, REPO, versions

sys.path.insert(0, str(REPO / "tests" / "images"))
import images  # noqa: E402

CHART = REPO / "charts" / "darwin-operator"
IMAGE_NAME = "darwin-operator"  # in tests/images' IMAGES


def helm_binary() -> Path:
    return CACHE / "bin" / f"helm-{versions()['HELM_VERSION']}" / "helm"


def build_image() -> Path:
    """The operator image's docker-archive tar (built unless cached: see operator_image.py)."""
    return images.build(IMAGE_NAME)


def values(
    *,
    tag: str = images.OPERATOR_TAG,
    namespaces: list[str] | None = None,
    replicas: int = 1,
    **extra,
) -> dict:
    """Chart values for the real nodes: the locally built image (never pulled: there is no
    registry), pods on the real nodes, watching `namespaces` or (None) the whole cluster."""
    chosen = {
        "replicaCount": replicas,
        "image": {
            "repository": images.OPERATOR_REPOSITORY,
            "tag": tag,
            "pullPolicy": "Never",
        },
        "nodeSelector": {"type": "real"},
        "watch": {"scope": "namespaces", "namespaces": namespaces}
        if namespaces
        else {"scope": "cluster"},
    }
    return chosen | extra


def helm(kubeconfig: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(helm_binary()), "--kubeconfig", str(kubeconfig), *args],
        text=True,
        capture_output=True,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def deploy(
    kubeconfig: str | Path,
    release: str,
    namespace: str,
    chosen: dict,
    *,
    timeout: int = 180,
    wait: bool = True,
) -> subprocess.CompletedProcess:
    """`helm upgrade --install` of the chart: installs, or upgrades a release that is there."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(chosen))
        args = ["upgrade", "--install", release, str(CHART), "--namespace", namespace]
        args += ["--create-namespace", "--values", str(path)]
        if wait:
            args += ["--wait", "--timeout", f"{timeout}s"]
        return helm(kubeconfig, *args)


def uninstall(kubeconfig: str | Path, release: str, namespace: str) -> None:
    helm(kubeconfig, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
