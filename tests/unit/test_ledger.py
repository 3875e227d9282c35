"""Free capacity kept from changes equals free capacity counted from every node and pod."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from darwin_operator import capacity
from darwin_operator.ledger import Ledger
from darwin_operator.observed import NodeInfo, ObservedPod, Placement

GPU = "nvidia.com/gpu"
NODES = [f"n{i}" for i in range(4)]


def node(name: str, gpus: int, ready: bool = True) -> NodeInfo:
    return NodeInfo(
        name=name,
        ready=ready,
        allocatable=((GPU, gpus), ("cpu", 64000), ("memory", 2**40), ("pods", 110)),
    )


pods = st.builds(
    ObservedPod,
    name=st.sampled_from(["a", "b", "c", "d", "e"]),
    node_name=st.sampled_from(["", *NODES, "unknown-node"]),
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
    gated=st.booleans(),
    deleting=st.booleans(),
    created_at=st.floats(0, 100),
    placement=st.sampled_from(
        [Placement(), Placement(node_names=("n1",)), Placement(node_names=("n2", "n3"))]
    ),
    extended=st.sampled_from([(), ((GPU, 2),), ((GPU, 6),)]),
    room=st.sampled_from([(("pods", 1),), (("cpu", 8000), ("memory", 2**36), ("pods", 1))]),
)
# A step: a pod seen (or changed) under its name, a pod gone, or a node changed.
steps = st.one_of(
    st.tuples(st.just("pod"), pods),
    st.tuples(st.just("gone"), st.sampled_from(["a", "b", "c", "d", "e"])),
    st.tuples(
        st.just("node"),
        st.builds(node, st.sampled_from(NODES), st.sampled_from([0, 4, 8]), st.booleans()),
    ),
    st.tuples(st.just("node-gone"), st.sampled_from(NODES)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=30))
def test_the_ledger_counts_what_a_fresh_count_of_every_node_and_pod_does(history):
    ledger = Ledger()
    nodes: dict[str, NodeInfo] = {}
    seen: dict[str, ObservedPod] = {}
    for name in NODES:
        nodes[name] = node(name, 8)
        ledger.node(name, nodes[name])
    for kind, value in history:
        if kind == "pod":
            ledger.pod(value.name, seen.get(value.name), value)
            seen[value.name] = value
        elif kind == "gone" and value in seen:
            ledger.pod(value, seen.pop(value), None)
        elif kind == "node":
            nodes[value.name] = value
            ledger.node(value.name, value)
        elif kind == "node-gone":
            nodes.pop(value, None)
            ledger.node(value, None)
    listed = list(nodes.values())
    assert ledger.free_gpus(GPU) == capacity.free_gpus(listed, seen.values(), GPU)
    assert ledger.free_room() == capacity.free_room(listed, seen.values())
