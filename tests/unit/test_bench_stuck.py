"""The benchmark's account of endpoints that did not get Ready in time."""

from bench.stuck import stuck_report


def pod(name, *, gated=False, node="", held_to="", phase="Pending", ready=False, message=""):
    spec = {"containers": [{"name": "vllm"}]}
    if gated:
        spec["schedulingGates"] = [{"name": "serving.darwin.ai/admission"}]
    if node:
        spec["nodeName"] = node
    if held_to:
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [held_to]}]}
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if message:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        )
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {"phase": phase, "conditions": conditions},
    }


def endpoint(name, phase, group_message=""):
    groups = (
        [{"index": 0, "phase": "Scheduling", "message": group_message}] if group_message else []
    )
    return {"metadata": {"name": name}, "status": {"phase": phase, "groups": groups}}


def node(name, *, ready=True, taints=()):
    return {
        "metadata": {"name": name},
        "spec": {"taints": list(taints)} if taints else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_names_where_endpoints_stopped():
    refused = "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    lines = stuck_report(
        endpoints=[
            endpoint("ep-0", "Ready"),
            endpoint("ep-1", "Progressing", "1 of 2 pods bound; ep-1-0-1: " + refused),
        ],
        pods=[
            pod("ep-0-0-0", node="n-0", phase="Running", ready=True),
            pod("ep-1-0-0", node="n-1", phase="Running"),
            pod("ep-1-0-1", held_to="n-1", message=refused),
            pod("ep-1-1-0", gated=True),
        ],
        nodes=[
            node("n-0"),
            node("n-1", ready=False, taints=[{"key": "node.kubernetes.io/not-ready"}]),
        ],
    )
    assert lines[0] == "endpoints by phase: {'Progressing': 1, 'Ready': 1}"
    assert lines[1] == f"  ep-1: group 0 Scheduling: 1 of 2 pods bound; ep-1-0-1: {refused}"
    assert lines[2] == (
        "pods: {'bound Running': 1, 'bound Running Ready': 1, 'gated': 1, 'unbound': 1}"
    )
    assert lines[3] == f"  ep-1-0-1 (held to n-1): {refused}"
    assert lines[4] == "nodes: 2, not Ready 1 ['n-1'], tainted 1 ['n-1']"


def test_an_unbound_pod_the_scheduler_has_not_looked_at_says_so():
    lines = stuck_report([], [pod("p", held_to="n-0")], [node("n-0")])
    assert "  p (held to n-0): no PodScheduled condition" in lines
