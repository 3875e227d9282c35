"""What each planned action writes to the API, pod by pod (pure).

The one mapping from the planner's actions to requests: cluster.py sends these writes, and the
tests' simulated clusters apply the same ones, so what an action does to the cluster is written
down once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from darwin_operator import planner, render
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.vocabulary import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_BROKEN,
    ANNOTATION_DELETE_REASON,
    ANNOTATION_DRAIN_STARTED_AT,
    LABEL_SERVING,
    DeleteReason,
    format_time,
)


@dataclass(frozen=True)
class CreatePod:
    """Create the pod unless it exists (a repeated create is harmless)."""

    name: str
    body: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class PatchPod:
    """Merge labels and annotations into a pod (None removes one); optionally lift our
    scheduling gate. A pod that is gone is left alone."""

    name: str
    labels: tuple[tuple[str, str | None], ...] = ()
    annotations: tuple[tuple[str, str | None], ...] = ()
    ungate: bool = False
    node: str = ""  # with ungate: hold the pod to this node (admission's choice)


@dataclass(frozen=True)
class DeletePod:
    name: str


PodWrite = CreatePod | PatchPod | DeletePod


@dataclass(frozen=True)
class Writes:
    """An action's pod writes: `first` in any order, then `last` (deletions: every pod of a
    group is stamped with the reason before any is deleted, so a deletion the operator was
    killed in the middle of shows on the pods it did not reach, see health.py)."""

    first: tuple[PodWrite, ...] = ()
    last: tuple[PodWrite, ...] = ()


def ungate(pods: Iterable[str], now: float, nodes: Sequence[str] = ()) -> tuple[PatchPod, ...]:
    """Lift our gate, stamping when: the scheduling timeout counts from it, across restarts.

    `nodes`, one per pod, are where admission counted each pod: in the same write the pod is
    held to its node (a gated pod's node affinity may still be set), or the scheduler could
    spread the group elsewhere and leave it half placed. Without them (an admission
    interrupted part way, whose choice is not known any more) the gates are only lifted."""
    stamp = ((ANNOTATION_ADMITTED_AT, format_time(now)),)
    pods = list(pods)
    held = list(nodes) or [""] * len(pods)
    return tuple(
        PatchPod(name, annotations=stamp, ungate=True, node=node)
        for name, node in zip(pods, held, strict=True)
    )


def created_admitted(create: Writes, now: float, nodes: Mapping[str, str]) -> Writes:
    """A group's creation once admission has placed it (`nodes`: pod name -> node): each pod
    is created with our gate already lifted, held to its node and stamped as `ungate` does, so
    the scheduler sees the group at once and no second write is needed. A pod admission did
    not place is a caller's mistake: nothing of the group may be let go half placed."""
    stamp = format_time(now)
    out = []
    for write in create.first:
        if not isinstance(write, CreatePod) or write.name not in nodes:
            raise ValueError(f"{write} is not one of the admitted pods {sorted(nodes)}")
        meta, spec = write.body["metadata"], write.body["spec"]
        affinity = {**spec.get("affinity", {}), **render.held_to(nodes[write.name])}
        released = {k: v for k, v in spec.items() if k != "schedulingGates"}  # only ours
        annotations = {**meta.get("annotations", {}), ANNOTATION_ADMITTED_AT: stamp}
        body = {
            **write.body,
            "metadata": {**meta, "annotations": annotations},
            "spec": {**released, "affinity": affinity},
        }
        out.append(CreatePod(write.name, body))
    return Writes(tuple(out), create.last)


def serving(pod: str, value: bool, now: float) -> PatchPod:
    """Move a leader in or out of the client Service. The drain start is kept on the pod to the
    millisecond (drainSeconds is a guarantee: no second may be lost to rounding)."""
    started = None if value else format_time(now)
    return PatchPod(
        pod,
        labels=((LABEL_SERVING, "true" if value else "false"),),
        annotations=((ANNOTATION_DRAIN_STARTED_AT, started),),
    )


def of(
    action: planner.Action,
    ref: render.EndpointRef,
    spec: DarwinEndpointSpec,
    revision: str,
    now: float,
    stored: Mapping[str, DarwinEndpointSpec] | None = None,
) -> Writes:
    """The pod writes of one action (none for the actions that are not about pods).
    `stored`: the specs of stored revisions, for a group created on an older one."""
    match action:
        case planner.CreateGroup(index=index, gated=gated, revision=older, incarnation=n):
            if older:
                spec, revision = (stored or {})[older], older
            pods = render.render_group(ref, spec, revision, index, gated=gated, incarnation=n)
            return Writes(tuple(CreatePod(p["metadata"]["name"], p) for p in pods))
        case planner.UngateGroup(pods=pods):
            return Writes(ungate(pods, now))
        case planner.DrainGroup(leader=leader):
            return Writes((serving(leader, False, now),))
        case planner.RestoreServing(leader=leader):
            return Writes((serving(leader, True, now),))
        case planner.MarkBroken(mark=mark, pods=pods):
            return Writes(
                tuple(PatchPod(p, annotations=((ANNOTATION_BROKEN, mark),)) for p in pods)
            )
        case planner.DeleteGroup(reason=reason, pods=pods, leader=leader):
            return deletion(pods, leader, reason)
    return Writes()


def deletion(pods: Sequence[str], leader: str, reason: DeleteReason) -> Writes:
    """Every pod stamped with the reason, then deleted. The stamp also takes the leader out of
    the client Service: from the first write on, the group is leaving
    (observed.incarnations_from_pods) and serves no more."""
    stamp = ((ANNOTATION_DELETE_REASON, reason.value),)
    out = ((LABEL_SERVING, "false"),)
    return Writes(
        tuple(PatchPod(p, labels=out if p == leader else (), annotations=stamp) for p in pods),
        tuple(DeletePod(p) for p in pods),
    )
