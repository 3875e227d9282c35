"""LeaderWorkerSet's objects as the comparison benchmark installs them for a host process."""

from bench.lws_manifests import (
    leader_worker_set,
    local_webhook_configurations,
    manager_configuration,
    pod_template_like,
)

MANIFESTS = """
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: mutating-webhook-configuration
webhooks:
- name: mlws.kb.io
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate-lws}
- name: mpod.kb.io
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: validating-webhook-configuration
webhooks:
- name: vlws.kb.io
  clientConfig:
    service: {name: webhook-service, namespace: system, path: /validate-lws}
"""
MUTATING_PATCH = """
- op: replace
  path: /webhooks/1
  value:
    name: mpod.kb.io
    clientConfig:
      service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}
    objectSelector:
      matchExpressions: [{key: leaderworkerset.sigs.k8s.io/name, operator: Exists}]
"""
VALIDATING_PATCH = """
- op: replace
  path: /webhooks/0
  value:
    name: vlws.kb.io
    clientConfig:
      service: {name: webhook-service, namespace: system, path: /validate-lws}
    failurePolicy: Fail
"""


def test_webhooks_call_the_local_server_with_the_ca_and_keep_upstream_patches():
    mutating, validating = local_webhook_configurations(
        MANIFESTS, MUTATING_PATCH, VALIDATING_PATCH, "https://127.0.0.1:9443/", "Q0E="
    )
    assert mutating["metadata"]["name"] == "lws-mutating-webhook-configuration"
    assert [h["clientConfig"] for h in mutating["webhooks"]] == [
        {"url": "https://127.0.0.1:9443/mutate-lws", "caBundle": "Q0E="},
        {"url": "https://127.0.0.1:9443/mutate--v1-pod", "caBundle": "Q0E="},
    ]
    # only pods of a LeaderWorkerSet go through its pod webhook, as upstream installs it
    assert mutating["webhooks"][1]["objectSelector"]["matchExpressions"][0]["operator"] == "Exists"
    assert validating["webhooks"][0]["failurePolicy"] == "Fail"
    assert validating["webhooks"][0]["clientConfig"]["url"].endswith(":9443/validate-lws")


def test_manager_configuration_serves_on_loopback_without_leader_election():
    config = manager_configuration(9443, 8081, "/tmp/certs")
    assert config["leaderElection"] == {"leaderElect": False}
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"] == {"port": 9443, "host": "127.0.0.1", "certDir": "/tmp/certs"}
    assert config["health"]["healthProbeBindAddress"] == "127.0.0.1:8081"


def test_leader_worker_set_takes_shape_and_limits_from_the_darwin_pod():
    darwin_pod = {
        "metadata": {
            "name": "x-0-0",
            "labels": {"serving.darwin.ai/group": "0"},
            "annotations": {"darwin.test/ready-after": "0s", "serving.darwin.ai/other": "1"},
        },
        "spec": {
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.33.0",
                    "command": ["vllm", "serve"],
                    "resources": {"limits": {"nvidia.com/gpu": "2"}},
                }
            ],
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
            "terminationGracePeriodSeconds": 45,
        },
    }
    template = pod_template_like(darwin_pod)
    assert template["metadata"] == {"annotations": {"darwin.test/ready-after": "0s"}}
    assert template["spec"]["containers"] == [
        {
            "name": "vllm",
            "image": "vllm/vllm-openai:v0.33.0",
            "resources": {"limits": {"nvidia.com/gpu": "2"}},
        }
    ]
    assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-B200"}
    assert template["spec"]["terminationGracePeriodSeconds"] == 45
    lws = leader_worker_set(
        "roll", groups=16, size=3, pod_template=template, max_unavailable=1, max_surge=0
    )
    assert lws["spec"]["replicas"] == 16
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 3
    assert lws["spec"]["leaderWorkerTemplate"]["workerTemplate"] is template
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == {
        "maxUnavailable": 1,
        "maxSurge": 0,
    }
