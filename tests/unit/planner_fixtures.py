"""Builders for planner and status tests: observed pods made from what render really produces."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from darwin_operator import health, planner, render, vocabulary
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.observed import Observed, ObservedPod, incarnations_from_pods, pod_from_api
from tests import specs

REF = render.EndpointRef(name="darwin-398b", namespace="llm", uid="uid-1")
T0 = 1_750_000_000.0  # a fixed "now"


def make_spec(**overrides: Any) -> DarwinEndpointSpec:
    """The reference endpoint (TP2 x PP3 on B200) with a 30s drain, sections merged in."""
    return specs.spec(**specs.merged({"rollout": {"drainSeconds": 30}}, overrides))


def revision(spec: DarwinEndpointSpec) -> str:
    return render.revision_of(spec, None)


def group_pods(
    spec: DarwinEndpointSpec,
    index: int,
    *,
    state: str = "gated",
    rev: str | None = None,
    ranks: list[int] | None = None,
    incarnation: int = 0,
    **fields: Any,
) -> list[ObservedPod]:
    """Pods of one group in a state: gated | released | bound | ready."""
    objs = render.render_group(
        REF, spec, rev or revision(spec), index, gated=state == "gated", incarnation=incarnation
    )
    pods = []
    for obj in objs:
        obj["metadata"]["creationTimestamp"] = "2025-06-15T00:00:00Z"
        pod = pod_from_api(obj)
        if state in ("bound", "ready"):
            pod = replace(pod, node_name=f"kwok-node-{index % 4}", phase="Running")
        if state == "ready":
            pod = replace(pod, ready=True)
        if state != "gated":
            pod = replace(pod, admitted_at=T0 - 10)
        pods.append(replace(pod, **fields))
    if ranks is not None:
        pods = [p for p in pods if p.rank in ranks]
    return pods


def owned(spec: DarwinEndpointSpec, draining: int = 0) -> tuple[tuple[str, str], ...]:
    """Services and PDB as if already applied at this spec, with `draining` groups counted."""
    return tuple(
        (planner.object_key(o), o["metadata"]["annotations"][vocabulary.ANNOTATION_SPEC_HASH])
        for o in planner.desired_objects(REF, spec, draining)
    )


def observe(
    spec: DarwinEndpointSpec, *pod_lists: list[ObservedPod], applied: bool = True, **kw: Any
) -> Observed:
    pods = [p for ps in pod_lists for p in ps]
    # as a reconcile that saw these pods applied them: draining wanted groups counted
    draining = {
        p.group
        for p in pods
        if p.rank == 0
        and p.serving == "false"
        and not p.marked_deleted
        and (p.group or 0) < spec.replicas
    }
    current, leaving = incarnations_from_pods(pods, REF.uid)
    return Observed(
        groups=current,
        leaving=leaving,
        owned_objects=owned(spec, len(draining)) if applied else (),
        **kw,
    )


def make_plan(
    spec: DarwinEndpointSpec,
    observed: Observed,
    now: float = T0,
    history: health.History | None = None,
    rollout_in_progress: bool = False,
    remembered: dict[int, planner.GroupMemory] | None = None,
    **config: Any,
):
    return planner.plan(
        REF,
        spec,
        revision(spec),
        observed,
        now,
        planner.PlannerConfig(**config),
        history,
        rollout_in_progress=rollout_in_progress,
        remembered=remembered,
    )
