"""The chart's RBAC is what the operator needs and no more: the operator process, holding only a
token of the chart's ServiceAccount, passes the main end-to-end scenario, and that account is
denied what the operator must never do."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.chart_install import STANDBY_LIFETIME, extra_namespace, installed
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.test_operator import (
    test_reference_endpoint_is_gated_then_admitted_and_becomes_ready as main_scenario,
)

pytestmark = pytest.mark.e2e


def can_i(cluster, kubeconfig: str, verb: str, resource: str, *where: str) -> bool:
    result = subprocess.run(
        [
            cluster.kubectl_binary,
            "--kubeconfig",
            kubeconfig,
            "auth",
            "can-i",
            verb,
            resource,
            *where,
        ],
        text=True,
        capture_output=True,
    )
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def run_main_scenario_as(cluster, release, namespace, tmp_path, namespaces=()):
    kubeconfig = release.account_kubeconfig(tmp_path / "account.kubeconfig")
    peering = ("--peering", release.fullname, "--peering-lifetime", str(STANDBY_LIFETIME))
    process = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", namespaces=namespaces, extra_args=peering
    ).start()
    try:
        main_scenario(cluster, namespace, process)
    finally:
        code = process.stop()
    log = process.log(tail=100_000)
    denials = [line for line in log.splitlines() if "system:serviceaccount" in line]
    assert not denials, "the operator was denied:\n" + "\n".join(denials[:10])
    assert code == 0, log


def test_cluster_wide_rbac_suffices_for_the_main_scenario(
    cluster, crd_installed, namespace, tmp_path
):
    with (
        extra_namespace(cluster, "operator") as home,
        installed(cluster, home, {}) as release,
    ):
        run_main_scenario_as(cluster, release, namespace, tmp_path)


def test_namespaced_rbac_suffices_for_the_main_scenario(
    cluster, crd_installed, namespace, tmp_path
):
    values = {"watch": {"scope": "namespaces", "namespaces": [namespace]}}
    with extra_namespace(cluster, "operator") as home, installed(cluster, home, values) as release:
        run_main_scenario_as(cluster, release, namespace, tmp_path, namespaces=(namespace,))


def test_cluster_wide_account_is_denied_secrets_node_writes_and_other_kinds(
    cluster, crd_installed, namespace, tmp_path
):
    with extra_namespace(cluster, "operator") as home, installed(cluster, home, {}) as release:
        account = release.account_kubeconfig(tmp_path / "account.kubeconfig")
        allowed = lambda *args: can_i(cluster, account, *args)  # noqa: E731
        assert allowed("create", "pods", "-n", namespace)
        assert allowed("list", "pods", "--all-namespaces")
        assert allowed("patch", "darwinendpoints", "--subresource=status", "-n", namespace)
        assert allowed("list", "nodes")
        for verb in ("get", "list", "watch"):
            assert not allowed(verb, "secrets", "-n", namespace)
            assert not allowed(verb, "secrets", "-n", home)
        for verb in ("create", "patch", "update", "delete"):
            assert not allowed(verb, "nodes")
        assert not allowed("patch", "darwinendpoints", "-n", namespace), "spec is the user's"
        assert not allowed("delete", "darwinendpoints", "-n", namespace)
        assert not allowed("create", "deployments", "-n", namespace)
        assert not allowed("create", "clusterroles")
        assert not allowed("*", "*")


def test_namespaced_account_cannot_touch_other_namespaces(
    cluster, crd_installed, namespace, tmp_path
):
    values = {"watch": {"scope": "namespaces", "namespaces": [namespace]}}
    with extra_namespace(cluster, "operator") as home, installed(cluster, home, values) as release:
        account = release.account_kubeconfig(tmp_path / "account.kubeconfig")
        allowed = lambda *args: can_i(cluster, account, *args)  # noqa: E731
        assert allowed("create", "pods", "-n", namespace)
        assert allowed("list", "darwinendpoints", "-n", namespace)
        assert not allowed("get", "secrets", "-n", namespace)
        for other in (home, "default", "kube-system"):
            for verb, resource in (
                ("list", "pods"),
                ("create", "pods"),
                ("delete", "pods"),
                ("list", "darwinendpoints"),
                ("patch", "services"),
                ("create", "events"),
            ):
                assert not allowed(verb, resource, "-n", other), f"{verb} {resource} in {other}"
        assert not allowed("list", "darwinendpoints", "--all-namespaces")
        assert not allowed("delete", "nodes")
