"""The chart as helm renders it: the checked-in install manifest and the dashboard ConfigMap."""

from __future__ import annotations

import subprocess

from tests import promql
from tests.helm import INSTALL_MANIFEST, RENDER_INSTALL, find, helm_binary, render


def test_install_manifest_is_the_chart_rendered_with_defaults():
    rendered = subprocess.run(
        ["bash", str(RENDER_INSTALL), str(helm_binary())],
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    assert INSTALL_MANIFEST.read_text() == rendered, (
        "manifests/install.yaml differs from the rendered chart: run `make install-manifest`"
    )


def test_the_chart_ships_the_dashboard_as_a_configmap_for_the_grafana_sidecar():
    documents = render({"monitoring": {"dashboard": {"enabled": True}}})
    (configmap,) = find(documents, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["darwin-operator.json"].strip() == promql.DASHBOARD.read_text().strip()
    assert not find(render(), "ConfigMap")
