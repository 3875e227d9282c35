"""LeaderWorkerSet's objects for a manager running as a host process (pure): its configuration,
its webhook configurations pointed at 127.0.0.1 instead of an in-cluster Service, and a
LeaderWorkerSet shaped like a DarwinEndpoint (bench/bench_vs_lws.py)."""

from __future__ import annotations

import copy
import re

import yaml


def manager_configuration(webhook_port: int, health_port: int, cert_dir: str) -> dict:
    """No leader election (one manager), no in-cluster certificate management (the benchmark
    issues the webhook's serving certificate), webhooks and probes on 127.0.0.1, no metrics."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"port": webhook_port, "host": "127.0.0.1", "certDir": cert_dir},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
    }


def _apply_patch(doc: dict, operations: list[dict]) -> None:
    """The upstream kustomization's patches: `replace` of one webhook by index."""
    for op in operations:
        match = re.fullmatch(r"/webhooks/(\d+)", op["path"])
        assert op["op"] == "replace" and match, f"unexpected patch {op}"
        doc["webhooks"][int(match.group(1))] = copy.deepcopy(op["value"])


def local_webhook_configurations(
    manifests: str, mutating_patch: str, validating_patch: str, url: str, ca_bundle: str
) -> list[dict]:
    """The upstream webhook configurations (config/webhook: manifests.yaml with the patches its
    kustomization applies, e.g. the pod webhooks' objectSelector), named as its install names
    them, each webhook calling `url` + its path with `ca_bundle` (base64 PEM)."""
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    patches = {
        "MutatingWebhookConfiguration": yaml.safe_load(mutating_patch),
        "ValidatingWebhookConfiguration": yaml.safe_load(validating_patch),
    }
    for doc in docs:
        _apply_patch(doc, patches[doc["kind"]])
        doc["metadata"]["name"] = "lws-" + doc["metadata"]["name"]
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": url.rstrip("/") + path, "caBundle": ca_bundle}
    return docs


def leader_worker_set(
    name: str,
    *,
    groups: int,
    size: int,
    pod_template: dict,
    max_unavailable: int,
    max_surge: int,
) -> dict:
    """`groups` groups of `size` pods, all from one pod template (leader and workers alike),
    rolled one group at a time within the given limits."""
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": groups,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "workerTemplate": pod_template,
            },
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {
                    "maxUnavailable": max_unavailable,
                    "maxSurge": max_surge,
                },
            },
        },
    }


def pod_template_like(pod: dict) -> dict:
    """A pod template with what placement and readiness depend on taken from a rendered darwin
    pod (resources, node selector, tolerations, grace period, the kwok ready-after
    annotation): the two controllers' pods cost the scheduler and the nodes the same."""
    container = pod["spec"]["containers"][0]
    spec = {
        "containers": [
            {
                "name": container["name"],
                "image": container["image"],
                "resources": container["resources"],
            }
        ],
        "terminationGracePeriodSeconds": pod["spec"].get("terminationGracePeriodSeconds", 30),
    }
    for key in ("nodeSelector", "tolerations"):
        if pod["spec"].get(key):
            spec[key] = pod["spec"][key]
    annotations = {
        k: v
        for k, v in (pod["metadata"].get("annotations") or {}).items()
        if k.startswith("darwin.test/")
    }
    return {"metadata": {"annotations": annotations}, "spec": spec}
