"""Where endpoints stopped on their way to Ready, from the objects a benchmark lists when it
runs out of time (pure): endpoints by phase, pods by phase and binding, why unbound pods wait
(the scheduler's message, the node their affinity holds them to) and which nodes are not Ready
or are tainted. A few lines, so that the tail of a failed run's output is enough to tell a
loaded machine from a bug."""

from __future__ import annotations

from collections import Counter

EXAMPLES = 5  # at most this many endpoints and pods are named


def _condition(obj: dict, kind: str) -> dict:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def _held_to(pod: dict) -> str:
    """The node the operator's admission held the pod to (a required node affinity on
    metadata.name), if any."""
    terms = (
        ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    for term in terms:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                return ",".join(field.get("values") or [])
    return ""


def _pod_state(pod: dict) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "deleting"
    if pod["spec"].get("schedulingGates"):
        return "gated"
    if not pod["spec"].get("nodeName"):
        return "unbound"
    phase = (pod.get("status") or {}).get("phase", "Pending")
    ready = _condition(pod, "Ready").get("status") == "True"
    return f"bound {phase}{' Ready' if ready else ''}"


def stuck_report(endpoints: list[dict], pods: list[dict], nodes: list[dict]) -> list[str]:
    lines = []
    phases = Counter((e.get("status") or {}).get("phase", "none") for e in endpoints)
    lines.append(f"endpoints by phase: {dict(sorted(phases.items()))}")
    for e in [e for e in endpoints if (e.get("status") or {}).get("phase") != "Ready"][:EXAMPLES]:
        groups = (e.get("status") or {}).get("groups") or []
        detail = "; ".join(
            f"group {g.get('index')} {g.get('phase')}: {g.get('message')}" for g in groups
        )
        lines.append(f"  {e['metadata']['name']}: {detail or 'no status'}")
    states = Counter(_pod_state(p) for p in pods)
    lines.append(f"pods: {dict(sorted(states.items()))}")
    for pod in [p for p in pods if _pod_state(p) == "unbound"][:EXAMPLES]:
        scheduled = _condition(pod, "PodScheduled")
        why = scheduled.get("message") or scheduled.get("reason") or "no PodScheduled condition"
        held = _held_to(pod)
        lines.append(f"  {pod['metadata']['name']}{f' (held to {held})' if held else ''}: {why}")
    not_ready = [
        n["metadata"]["name"] for n in nodes if _condition(n, "Ready").get("status") != "True"
    ]
    tainted = [n["metadata"]["name"] for n in nodes if n["spec"].get("taints")]
    lines.append(
        f"nodes: {len(nodes)}, not Ready {len(not_ready)} {not_ready[:EXAMPLES]}, "
        f"tainted {len(tainted)} {tainted[:EXAMPLES]}"
    )
    return lines
