"""Each revision's pod-building inputs, kept in the cluster (pure).

A group's revision label names the spec (and restartedAt) its pods were built from. That spec
is kept in a ControllerRevision owned by the endpoint, as StatefulSets and LeaderWorkerSets keep
theirs, so that a group below `spec.rollout.partition` that is lost (deleted by hand, recreated
after a failure, lost with its node) comes back on its own revision, not on the update revision
it was meant to be kept from. Revisions no group uses are pruned to a short history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from darwin_operator import render
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.observed import StoredRevision
from darwin_operator.vocabulary import LABEL_ENDPOINT, LABEL_REVISION, revision_object_name

# Revisions kept besides the ones in use: the newest few, for a look at what changed.
HISTORY = 3


def render_revision(
    ref: render.EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    restarted_at: str | None,
    number: int,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_object_name(ref.name, revision),
            "namespace": ref.namespace,
            "labels": {LABEL_ENDPOINT: ref.name, LABEL_REVISION: revision},
            "ownerReferences": [render.owner_reference(ref)],
        },
        "data": {
            "spec": spec.model_dump(by_alias=True, mode="json", exclude_none=True),
            "restartedAt": restarted_at or "",
        },
        "revision": number,
    }


def from_api(
    obj: Mapping[str, Any], owner_uid: str
) -> tuple[StoredRevision, DarwinEndpointSpec] | None:
    """A stored revision of the endpoint with that uid; None for anything else, and for one
    whose spec this operator cannot read (then it is not used)."""
    meta = obj.get("metadata") or {}
    owners = meta.get("ownerReferences") or ()
    revision = (meta.get("labels") or {}).get(LABEL_REVISION, "")
    if not revision or not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
        return None
    data = obj.get("data") or {}
    try:
        spec = DarwinEndpointSpec.model_validate(data.get("spec") or {})
    except ValidationError:
        return None
    stored = StoredRevision(meta.get("name", ""), revision, int(obj.get("revision") or 0))
    return stored, spec


def next_number(stored: Iterable[StoredRevision]) -> int:
    return max((s.number for s in stored), default=0) + 1


def prunable(stored: Iterable[StoredRevision], in_use: set[str]) -> list[StoredRevision]:
    """Revisions neither in use nor among the newest HISTORY."""
    newest = sorted(stored, key=lambda s: -s.number)
    return [s for i, s in enumerate(newest) if i >= HISTORY and s.revision not in in_use]
