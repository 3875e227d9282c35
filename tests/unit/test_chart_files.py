"""The chart's checked-in pieces: generated files that must not drift, and documented values."""

from __future__ import annotations

import re
import tomllib

import yaml

import darwin_operator
from tests.helm import CHART, INSTALL_MANIFEST, REPO


def test_install_manifest_creates_its_namespace_before_anything_in_it():
    documents = [d for d in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if d]
    assert documents[0]["kind"] == "Namespace"
    kinds = [d["kind"] for d in documents]
    assert kinds.count("CustomResourceDefinition") == 3
    assert "Deployment" in kinds


def test_chart_ships_the_endpoint_crd_and_kopf_peering_crds():
    names = {
        document["metadata"]["name"]
        for path in (CHART / "crds").glob("*.yaml")
        for document in yaml.safe_load_all(path.read_text())
    }
    assert "darwinendpoints.serving.darwin.ai" in names
    peering = [
        d for d in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text())
    ]
    assert {d["spec"]["names"]["kind"] for d in peering} == {"ClusterKopfPeering", "KopfPeering"}
    # The endpoint CRD's content is checked against the models in test_generated.py.


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == darwin_operator.__version__ == project["version"]


def test_every_value_is_documented():
    """Each key has a comment right above it, unless it is a block header or sits inside a
    documented block of plain Kubernetes fields (securityContext, resources...)."""
    undocumented = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_block_indent = None
    for number, line in enumerate(lines):
        key = re.match(r"^( *)([A-Za-z_][\w.-]*):(.*)$", line)
        if not key:
            continue
        indent, name, value = len(key.group(1)), key.group(2), key.group(3).strip()
        if documented_block_indent is not None and indent > documented_block_indent:
            continue
        documented_block_indent = None
        commented = number > 0 and lines[number - 1].strip().startswith("#")
        if commented and not value:
            documented_block_indent = indent
        elif not commented and value:
            undocumented.append(f"values.yaml:{number + 1}: {name}")
    assert not undocumented, "undocumented values:\n" + "\n".join(undocumented)
