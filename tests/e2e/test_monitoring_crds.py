"""The chart's monitoring objects on a real API server with the prometheus-operator CRDs (from
their official Go module, tests/cluster/build.sh prometheus-crds): the PodMonitor, the
ServiceMonitor and the PrometheusRule are accepted as the chart renders them."""

from __future__ import annotations

import copy
import json

import pytest
from localcluster import CACHE, versions

from tests.helm import find, render

pytestmark = pytest.mark.e2e

KINDS = {"PodMonitor": "podmonitors", "ServiceMonitor": "servicemonitors"}
KINDS["PrometheusRule"] = "prometheusrules"
MONITORING = {
    "monitoring": {
        name: {"enabled": True, "labels": {"release": "prometheus"}}
        for name in ("serviceMonitor", "podMonitor", "prometheusRule", "dashboard")
    }
}


@pytest.fixture(scope="module")
def monitoring_crds(cluster) -> None:
    directory = CACHE / f"prometheus-operator-crds-{versions()['PROMETHEUS_OPERATOR_VERSION']}"
    files = [directory / f"monitoring.coreos.com_{plural}.yaml" for plural in KINDS.values()]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        pytest.fail(f"no {missing}: run `bash tests/cluster/build.sh prometheus-crds`")
    for path in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for plural in KINDS.values():
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{plural}.monitoring.coreos.com",
        )


def monitoring_objects(namespace: str, values: dict) -> list[dict]:
    objects = [d for kind in KINDS for d in find(render(values), kind)]
    assert len(objects) == 3
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def kept(sent, stored) -> bool:
    """Whether everything sent is in what the API server stored."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            k in stored and kept(v, stored[k]) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(sent) == len(stored)
            and all(kept(a, b) for a, b in zip(sent, stored, strict=True))
        )
    return sent == stored


def create(cluster, obj: dict, *flags: str):
    return cluster.kubectl("create", *flags, "-f", "-", input=json.dumps(obj), check=False)


@pytest.mark.parametrize(
    "values",
    [MONITORING, {**MONITORING, "watch": {"scope": "namespaces", "namespaces": ["team-a"]}}],
    ids=["cluster", "namespaces"],
)
def test_the_api_server_accepts_the_charts_monitoring_objects(
    cluster, monitoring_crds, namespace, values
):
    for obj in monitoring_objects(namespace, values):
        dry = create(cluster, obj, "--dry-run=server")
        assert dry.returncode == 0, f"{obj['kind']}: {dry.stderr}"
        created = create(cluster, obj)
        assert created.returncode == 0, f"{obj['kind']}: {created.stderr}"
        stored = cluster.json(
            "get",
            KINDS[obj["kind"]] + ".monitoring.coreos.com",
            obj["metadata"]["name"],
            "-n",
            namespace,
        )
        # nothing pruned (the API server adds defaults, such as relabelings' action: replace)
        assert kept(obj["spec"], stored["spec"]), f"{obj['kind']}: fields pruned: {stored}"
        cluster.kubectl("delete", "-n", namespace, obj["kind"], obj["metadata"]["name"])


def test_the_crds_do_check_what_they_are_given(cluster, monitoring_crds, namespace):
    """The acceptance above means something: a wrongly typed field is refused."""
    rule = next(
        o for o in monitoring_objects(namespace, MONITORING) if o["kind"] == "PrometheusRule"
    )
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"] = "not a list"
    result = create(cluster, broken, "--dry-run=server")
    assert result.returncode != 0 and "rules" in result.stderr, result.stderr
