"""charts/darwin-operator rendered by the pinned helm: each documented combination lints and
renders, and the rendered objects hold what the operator and its users rely on."""

from __future__ import annotations

import pytest

from darwin_operator import engine, vocabulary
from tests.helm import NAMESPACE, find, lint, only, render

NAMESPACED = {"watch": {"scope": "namespaces", "namespaces": ["team-a", "team-b"]}}
HA = {"replicaCount": 2}
MONITORING = {
    "monitoring": {
        name: {"enabled": True}
        for name in ("serviceMonitor", "podMonitor", "prometheusRule", "dashboard")
    }
}
NETWORK_POLICY = {"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]}}
COMBINATIONS = {
    "defaults": {},
    "namespaced": NAMESPACED,
    "ha": HA,
    "monitoring": MONITORING,
    "network-policy": NETWORK_POLICY,
    "everything": {**NAMESPACED, **HA, **MONITORING, **NETWORK_POLICY},
}


def container(documents: list[dict]) -> dict:
    (operator,) = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def flags(documents: list[dict]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for arg in container(documents)["args"][1:]:
        name, _, value = arg.partition("=")
        parsed.setdefault(name, []).append(value)
    return parsed


def rules(documents: list[dict], kind: str) -> list[dict]:
    return [rule for role in find(documents, kind) for rule in role["rules"]]


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_every_documented_combination_lints_and_renders(values):
    result = lint(values)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for d in render(values)}
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= kinds


def test_operator_runs_locked_down():
    documents = render()
    pod = only(documents, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(documents)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container(documents)["resources"]
    assert resources["requests"]["cpu"] and resources["limits"]["memory"]


def test_probe_and_service_use_the_ports_the_operator_is_told():
    documents = render()
    operator = container(documents)
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert flags(documents)["--health-port"] == [str(ports["health"])]
    assert flags(documents)["--metrics-port"] == [str(ports["metrics"])]
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    service = only(documents, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_image_defaults_to_the_app_version_and_takes_a_digest():
    assert container(render())["image"] == "ghcr.io/darwin-operator/darwin-operator:0.1.0"
    digest = "sha256:" + "a" * 64
    image = container(render({"image": {"digest": digest}}))["image"]
    assert image == f"ghcr.io/darwin-operator/darwin-operator@{digest}"


def test_priority_class_is_an_option():
    spec = lambda values: only(render(values), "Deployment")["spec"]["template"]["spec"]  # noqa: E731
    assert "priorityClassName" not in spec({})
    chosen = spec({"priorityClassName": "system-cluster-critical"})
    assert chosen["priorityClassName"] == "system-cluster-critical"


@pytest.mark.parametrize("values", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_rbac_has_no_wildcard_and_no_secrets(values):
    documents = render(values)
    for rule in rules(documents, "ClusterRole") + rules(documents, "Role"):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"secrets", "secrets/status"} & set(rule["resources"]), rule
        if "nodes" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_cluster_scope_grants_the_operator_through_one_cluster_role():
    documents = render()
    assert not find(documents, "Role")
    granted = {
        r: set(rule["verbs"]) for rule in rules(documents, "ClusterRole") for r in rule["resources"]
    }
    assert granted["darwinendpoints/status"] == {"patch"}
    assert {"create", "delete", "patch", "watch"} <= granted["pods"]
    assert granted["controllerrevisions"] == {"list", "watch", "create", "delete"}
    assert "clusterkopfpeerings" in granted
    binding = only(documents, "ClusterRoleBinding")
    account = only(documents, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert "--namespace" not in flags(documents)


def test_namespaced_scope_grants_namespaced_resources_only_in_those_namespaces():
    documents = render(NAMESPACED)
    roles = find(documents, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_resources = {r for rule in rules(documents, "ClusterRole") for r in rule["resources"]}
    assert cluster_resources == {"nodes"}, "a ClusterRole may only grant cluster-scoped reads"
    for role in roles:
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        assert {"darwinendpoints", "pods", "events", "kopfpeerings"} <= resources
        assert "controllerrevisions" in resources
        assert "clusterkopfpeerings" not in resources
    bindings = find(documents, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert flags(documents)["--namespace"] == ["team-a", "team-b"]


def test_high_availability_runs_two_peered_replicas():
    documents = render(HA)
    deployment = only(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    peering = flags(documents)["--peering"]
    assert peering == [deployment["metadata"]["name"]]
    env = {e["name"]: e for e in container(documents)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert only(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert not find(render(), "PodDisruptionBudget"), "one replica: a PDB would block drains"


def test_peering_is_always_on_so_a_rolling_update_never_runs_two_active_operators():
    assert "--peering" in flags(render())
    assert "--standalone" not in flags(render())


def test_monitoring_objects_are_off_by_default_and_select_the_right_targets():
    monitoring_kinds = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not monitoring_kinds & {d["kind"] for d in render()}
    documents = render(MONITORING)
    service = only(documents, "Service")
    monitor = only(documents, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pods = only(documents, "PodMonitor")["spec"]
    assert pods["selector"]["matchLabels"] == {vocabulary.LABEL_ROLE: vocabulary.ROLE_LEADER}
    assert pods["podMetricsEndpoints"][0]["port"] == engine.HTTP_PORT_NAME
    assert pods["namespaceSelector"] == {"any": True}
    namespaced = only(render({**MONITORING, **NAMESPACED}), "PodMonitor")["spec"]
    assert namespaced["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert only(documents, "PrometheusRule")["spec"]["groups"][0]["rules"]
    dashboards = [
        c for c in find(documents, "ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
    assert len(dashboards) == 1 and dashboards[0]["data"]["darwin-operator.json"].startswith("{")


def test_network_policy_admits_scrapes_and_probes_and_lets_out_dns_and_the_api_server():
    policy = only(render(NETWORK_POLICY), "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"metrics", "health"}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert {53, 443, 6443} <= egress_ports
    assert policy["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert not find(render(), "NetworkPolicy")
