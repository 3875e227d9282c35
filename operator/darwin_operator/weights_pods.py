"""The staging and prune pods around wstaging's containers (staging.py) (pure).

A staging pod borrows from a rendered group pod what the namespace's policies judge a pod by
(security contexts, pull secrets, tolerations, the weights volume) so that it is admitted where
the group is, and is held to its node by a required node affinity on the node's name. Its
restartPolicy is Never: a failure is read back by the operator and retried with backoff, never
in the kubelet's tight loop. It is owned by the endpoints that use the copy (none controls it).
"""

from __future__ import annotations

from typing import Any

from darwin_operator import render, staging, weights
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.vocabulary import LABEL_ROLE, LABEL_WEIGHTS

# Enough for hf and the checksum pass; no GPU.
STAGING_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}}


def owner(ref: render.EndpointRef) -> dict[str, Any]:
    return {**render.owner_reference(ref), "controller": False, "blockOwnerDeletion": False}


def _base(
    ref: render.EndpointRef,
    spec: DarwinEndpointSpec,
    name: str,
    role: str,
    copy: weights.Copy,
    node: str,
    attempt: int,
    container: dict,
) -> dict[str, Any]:
    group_pod = render.render_group(ref, spec, "staging", 0, gated=False)[0]
    borrowed = group_pod["spec"]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                **container,
                "securityContext": borrowed["containers"][0].get("securityContext", {}),
                "resources": STAGING_RESOURCES,
            }
        ],
        "volumes": [v for v in borrowed["volumes"] if v["name"] == staging.WEIGHTS_VOLUME],
    }
    for key in ("securityContext", "imagePullSecrets", "tolerations", "nodeSelector"):
        if key in borrowed:
            pod_spec[key] = borrowed[key]
    for volume in pod_spec["volumes"]:  # the staging pod writes
        volume.get("persistentVolumeClaim", {}).pop("readOnly", None)
    if node:
        pod_spec["affinity"] = render.held_to(node)
    labels = {
        **spec.pod_metadata.labels,
        LABEL_ROLE: role,
        LABEL_WEIGHTS: copy.key,
    }
    annotations = {
        **spec.pod_metadata.annotations,
        weights.ANNOTATION_MODEL: copy.model,
        weights.ANNOTATION_MODEL_REVISION: copy.revision,
        weights.ANNOTATION_VOLUME: copy.volume,
        weights.ANNOTATION_NODE: node,
        weights.ANNOTATION_ATTEMPT: str(attempt),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ref.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner(ref)],
        },
        "spec": pod_spec,
    }


def pod(
    ref: render.EndpointRef, spec: DarwinEndpointSpec, action: weights.Stage | weights.Prune
) -> dict[str, Any]:
    """The pod that carries out a Stage or a Prune of `action.copy` on `action.node`."""
    cache = spec.model.cache
    assert cache is not None  # only an endpoint with model.cache stages or prunes
    model, revision = action.copy.model, action.copy.revision
    if isinstance(action, weights.Stage):
        container = staging.staging_container(
            model,
            revision,
            cache.mount_path,
            spec.model.token_secret_ref,
            spec.engine.image,
            extra_env=[e.model_dump(by_alias=True, exclude_none=True) for e in spec.engine.env],
        )
        name = weights.staging_pod_name(action.copy, action.node, action.attempt)
        role, attempt = weights.ROLE_STAGING, action.attempt
    else:
        container = staging.prune_container(model, revision, cache.mount_path, spec.engine.image)
        name = weights.prune_pod_name(action.copy, action.node)
        role, attempt = weights.ROLE_PRUNE, 0
    return _base(ref, spec, name, role, action.copy, action.node, attempt, container)
