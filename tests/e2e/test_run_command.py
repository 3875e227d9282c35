"""`darwin-operator run` takes its credentials the documented ways and no other: in a pod, from
its ServiceAccount (in-cluster), with no kubeconfig anywhere; elsewhere from $KUBECONFIG alone.
(--kubeconfig alone is what every other e2e test runs with: OperatorProcess clears the
environment's credentials.)"""

from __future__ import annotations

import pytest

from tests.e2e.chart_install import extra_namespace, installed
from tests.e2e.checks import apply, endpoint_status
from tests.e2e.in_pod import operator_in_pod
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.test_operator import (
    test_reference_endpoint_is_gated_then_admitted_and_becomes_ready as main_scenario,
)
from tests.e2e.waiting import wait_for
from tests.specs import endpoint_manifest

pytestmark = pytest.mark.e2e


def test_in_cluster_credentials_run_the_main_scenario(cluster, crd_installed, namespace, tmp_path):
    with extra_namespace(cluster, "operator") as home, installed(cluster, home, {}) as release:
        process = operator_in_pod(cluster, home, release.fullname, tmp_path)
        assert "--kubeconfig" not in process.argv()
        process.start()
        try:
            main_scenario(cluster, namespace, process)
        finally:
            code = process.stop()
        log = process.log(tail=100_000)
        assert code == 0, log
        # it acted as the ServiceAccount: RBAC names it when it refuses something
        assert "system:anonymous" not in log and "Unauthorized" not in log, log


def test_kubeconfig_from_the_environment_alone(cluster, crd_installed, namespace, tmp_path):
    process = OperatorProcess(
        None,
        tmp_path / "operator.log",
        namespaces=(namespace,),
        env={"KUBECONFIG": cluster.kubeconfig, "HOME": str(tmp_path)},
    ).start()
    try:
        apply(cluster, namespace, endpoint_manifest("darwin-398b", replicas=1))
        wait_for(
            lambda: endpoint_status(cluster, namespace, "darwin-398b").get("readyReplicas") == 1,
            timeout=90,
            what="1 group Ready",
        )
    finally:
        assert process.stop() == 0, process.log()
