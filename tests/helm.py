"""The pinned helm binary (built by tests/cluster/build.sh) and chart rendering, for the tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from localcluster import CACHE, versions

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "darwin-operator"
INSTALL_MANIFEST = REPO / "manifests" / "install.yaml"
RENDER_INSTALL = REPO / "tests" / "cluster" / "render_install.sh"
RELEASE, NAMESPACE = "darwin-operator", "darwin-system"


def helm_binary() -> Path:
    binary = CACHE / "bin" / f"helm-{versions()['HELM_VERSION']}" / "helm"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no helm at {binary}: build it with `bash tests/cluster/build.sh helm`")
    return binary


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(helm_binary()), *args], text=True, capture_output=True)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def values_file(values: dict, directory: Path) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(values: dict | None = None, *extra: str, check: bool = True):
    """`helm template` of the chart with `values`; (documents, result) with documents parsed."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        args += ["--kube-version", versions()["K8S_VERSION"], *extra]
        if values:
            args += ["--values", str(values_file(values, Path(tmp)))]
        result = helm(*args, check=check)
    documents = (
        [d for d in yaml.safe_load_all(result.stdout) if d] if result.returncode == 0 else []
    )
    return documents, result


def render(values: dict | None = None, *extra: str) -> list[dict]:
    return template(values, *extra)[0]


def lint(values: dict | None = None) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["lint", "--strict", str(CHART), "--kube-version", versions()["K8S_VERSION"]]
        if values:
            args += ["--values", str(values_file(values, Path(tmp)))]
        return helm(*args, check=False)


def find(documents: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def only(documents: list[dict], kind: str) -> dict:
    matches = find(documents, kind)
    assert len(matches) == 1, f"expected one {kind}, got {len(matches)}"
    return matches[0]
