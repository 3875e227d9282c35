"""The operator's pods as real processes: the vLLM stand-in on real kubelets.

The reference shapes (3 pods x 2 GPUs, 1 pod x 6 GPUs) go Ready and answer through the client
Service from their leader; kubectl logs and exec work on the pods.
"""

from __future__ import annotations

from tests.e2e.checks import apply
from tests.e2e.waiting import wait_for
from tests.e2e_real import standin_endpoints as se
from tests.e2e_real import standin_fixtures as sf
from tests.e2e_real.standin_fixtures import standin_image, weights, weights_dir

__all__ = ["standin_image", "weights", "weights_dir"]  # fixtures the tests use


def _served(answer: se.Answer) -> se.Answer | None:
    return answer if answer.status == 200 else None


def test_reference_shapes_serve_through_the_client_service(
    cluster, operator, namespace, standin_image, weights
):
    apply(cluster, namespace, se.endpoint("per-stage", weights, pods_per_group=3))
    apply(cluster, namespace, se.endpoint("one-pod", weights, pods_per_group=1))
    for name, pods in (("per-stage", 3), ("one-pod", 1)):
        sf.ready(cluster, namespace, name)
        leader = se.leader(cluster, namespace, name)
        address = se.service_address(cluster, namespace, name)
        # Ready in status comes before the EndpointSlice controller and kube-proxy have put the
        # leader behind the ClusterIP: wait for the route, then check who answered.
        answer = wait_for(
            lambda address=address, name=name: _served(se.complete(address, name, timeout=5)),
            timeout=60,
            what=f"an answer through the {name} client Service",
        )
        assert answer.served_by == se.hostname(leader), answer
        assert answer.body["usage"]["completion_tokens"] == 4
        assert len(sf.pods(cluster, namespace, name)) == pods

    # kubectl logs and exec on a worker of the 3-pod group: it joined its leader and loaded.
    worker = sf.pods(cluster, namespace, "per-stage", rank="1")[0]
    logs = cluster.kubectl("logs", "-n", namespace, worker["metadata"]["name"]).stdout
    assert "all 3 ranks joined" in logs and "Model loading took" in logs, logs
    version = cluster.kubectl(
        "exec", "-n", namespace, worker["metadata"]["name"], "--", "vllm", "--version"
    )
    assert version.stdout.strip() == "0.33.0"
