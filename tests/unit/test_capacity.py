"""Gang fit: a whole group on free GPUs of eligible nodes, or not at all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import capacity
from darwin_operator.capacity import GroupDemand, admit_in_order, fit, free_gpus
from darwin_operator.observed import (
    NodeInfo,
    ObservedPod,
    Placement,
    Taint,
    Toleration,
    node_from_api,
    pod_from_api,
)

GPU = "nvidia.com/gpu"
B200 = Placement(node_selector=(("nvidia.com/gpu.product", "NVIDIA-B200"),))


def node(name: str, gpus: int = 8, **kw) -> NodeInfo:
    labels = {"nvidia.com/gpu.product": "NVIDIA-B200", **kw.pop("labels", {})}
    return NodeInfo(
        name=name,
        labels=tuple(sorted(labels.items())),
        allocatable=((GPU, gpus),),
        **kw,
    )


def pod(name: str, gpus: int, node_name: str = "", **kw) -> ObservedPod:
    return ObservedPod(name=name, node_name=node_name, extended=((GPU, gpus),), **kw)


def demand(pods: int, gpus: int, **kw) -> GroupDemand:
    return GroupDemand(pods=pods, gpus_per_pod=gpus, placement=B200, product="NVIDIA-B200", **kw)


NODES = [node(f"kwok-node-{i}") for i in range(4)]


def test_free_gpus_subtract_bound_pods_of_any_workload_but_not_terminal_ones():
    pods = [
        pod("a", 6, "kwok-node-0"),
        pod("b", 2, "kwok-node-0"),
        pod("done", 8, "kwok-node-1", phase="Succeeded"),
        pod("failed", 8, "kwok-node-2", phase="Failed"),
        pod("leaving", 3, "kwok-node-3", deleting=True),  # still holds its GPUs until gone
    ]
    assert free_gpus(NODES, pods, GPU) == {
        "kwok-node-0": 0,
        "kwok-node-1": 8,
        "kwok-node-2": 8,
        "kwok-node-3": 5,
    }


def test_released_unbound_pods_count_as_taken_but_gated_ones_do_not():
    pods = [
        pod("released", 6, placement=B200),
        pod("gated", 8, gated=True, placement=B200),
        pod("other-gate", 8, foreign_gates=True, placement=B200),
    ]
    free = free_gpus(NODES, pods, GPU)
    assert sum(free.values()) == 32 - 6
    assert sorted(free.values()) == [2, 8, 8, 8]


def test_a_released_pod_held_to_a_node_counts_there_and_the_hold_is_read_from_the_pod():
    held = pod_from_api(
        {
            "metadata": {"name": "held"},
            "spec": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {
                                            "key": "metadata.name",
                                            "operator": "In",
                                            "values": [NODES[3].name],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
                "containers": [{"name": "c", "resources": {"limits": {GPU: "2"}}}],
            },
        }
    )
    assert held.placement.node_names == (NODES[3].name,)
    # best fit alone would have put it on the fullest node (the first); it is held to the last
    free = free_gpus(NODES, [pod("bound", 6, NODES[0].name), held], GPU)
    assert free == {NODES[0].name: 2, NODES[1].name: 8, NODES[2].name: 8, NODES[3].name: 6}


def test_released_pod_that_fits_nowhere_takes_nothing():
    pods = [pod("huge", 9, placement=B200)]
    assert free_gpus(NODES, pods, GPU) == {n.name: 8 for n in NODES}


def test_one_pod_of_six_gpus_does_not_fit_on_nodes_with_two_free():
    free = {n.name: 2 for n in NODES}
    result = fit(demand(1, 6), NODES, free)
    assert not result.fits
    assert result.reason == capacity.INSUFFICIENT_CAPACITY
    assert result.message == (
        "needs 1 pod x 6 nvidia.com/gpu on NVIDIA-B200 nodes; "
        "free: 8 GPUs on 4 eligible nodes (largest 2)"
    )


def test_four_groups_of_one_six_gpu_pod_fit_and_the_fifth_waits():
    results = admit_in_order([demand(1, 6)] * 5, NODES, {n.name: 8 for n in NODES})
    assert [r.fits for r in results] == [True, True, True, True, False]
    assert len({r.nodes[0] for r in results[:4]}) == 4
    assert "free: 8 GPUs on 4 eligible nodes (largest 2)" in results[4].message


def test_five_groups_of_three_two_gpu_pods_fit_in_thirty_two_gpus():
    results = admit_in_order([demand(3, 2)] * 6, NODES, {n.name: 8 for n in NODES})
    assert [r.fits for r in results] == [True] * 5 + [False]
    assert "free: 2 GPUs" in results[5].message


def test_first_group_that_does_not_fit_stops_the_later_ones():
    free = {"kwok-node-0": 2, "kwok-node-1": 0, "kwok-node-2": 0, "kwok-node-3": 0}
    results = admit_in_order([demand(1, 6), demand(1, 2)], NODES, free)
    assert [r.fits for r in results] == [False, False]  # index order: group 1 waits behind 0
    assert results[1].message == results[0].message


def test_a_group_is_placed_whole_across_nodes():
    free = {"kwok-node-0": 2, "kwok-node-1": 2, "kwok-node-2": 2, "kwok-node-3": 0}
    result = fit(demand(3, 2), NODES, free)
    assert result.fits
    assert sorted(result.nodes) == ["kwok-node-0", "kwok-node-1", "kwok-node-2"]
    assert not fit(demand(4, 2), NODES, free).fits


def test_best_fit_keeps_large_holes_for_later_groups():
    free = {"kwok-node-0": 8, "kwok-node-1": 2, "kwok-node-2": 0, "kwok-node-3": 0}
    results = admit_in_order([demand(1, 2), demand(1, 8)], NODES, free)
    assert results[0].nodes == ("kwok-node-1",)
    assert results[1].fits


def test_ineligible_nodes_are_excluded_with_a_reason():
    nodes = [
        node("a", ready=False),
        node("b", unschedulable=True),
        node("c", labels={"nvidia.com/gpu.product": "NVIDIA-H100"}),
        node("d", taints=(Taint("dedicated", "infer", "NoSchedule"),)),
        node("e", gpus=0),
    ]
    result = fit(demand(1, 1), nodes, {n.name: 8 for n in nodes})
    assert not result.fits
    assert result.reason == capacity.NO_ELIGIBLE_NODES
    assert result.message == (
        "needs 1 pod x 1 nvidia.com/gpu on NVIDIA-B200 nodes; no eligible nodes (5 nodes: "
        "1 cordoned, 1 labels do not match, 1 no nvidia.com/gpu, 1 not ready, "
        "1 taint not tolerated)"
    )


def test_tolerated_taints_and_soft_taints_do_not_exclude_a_node():
    nodes = [
        node("a", taints=(Taint("dedicated", "infer", "NoSchedule"),)),
        node("b", taints=(Taint("whatever", "", "PreferNoSchedule"),)),
    ]
    tolerant = Placement(
        node_selector=B200.node_selector,
        tolerations=(Toleration(key="dedicated", operator="Equal", value="infer"),),
    )
    d = GroupDemand(pods=2, gpus_per_pod=8, placement=tolerant)
    assert fit(d, nodes, {"a": 8, "b": 8}).fits
    assert not fit(
        GroupDemand(pods=2, gpus_per_pod=8, placement=B200), nodes, {"a": 8, "b": 8}
    ).fits


def test_node_selector_that_matches_nothing_says_so():
    picky = Placement(node_selector=(*B200.node_selector, ("darwin.test/rack", "nowhere")))
    d = GroupDemand(pods=1, gpus_per_pod=6, placement=picky, product="NVIDIA-B200")
    result = fit(d, NODES, {n.name: 8 for n in NODES})
    assert not result.fits
    assert "on NVIDIA-B200 nodes matching darwin.test/rack=nowhere" in result.message
    assert "no eligible nodes (4 nodes: 4 labels do not match)" in result.message


def test_topology_key_keeps_a_group_inside_one_domain():
    nodes = [
        node("a", labels={"zone": "z1"}),
        node("b", labels={"zone": "z1"}),
        node("c", labels={"zone": "z2"}),
        node("d"),  # no zone label: not eligible
    ]
    free = {"a": 4, "b": 0, "c": 6, "d": 8}
    d = GroupDemand(pods=2, gpus_per_pod=4, placement=B200, topology_key="zone")
    assert not fit(d, nodes, free).fits  # 4 in z1 + 6 in z2 is 10 free, but no zone holds 2x4
    free["b"] = 4
    result = fit(d, nodes, free)
    assert result.fits and sorted(result.nodes) == ["a", "b"]


def test_node_affinity_terms_are_honoured():
    placement = pod_from_api(
        {
            "metadata": {"name": "p"},
            "spec": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "rack", "operator": "In", "values": ["r2"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
                "containers": [{"name": "c", "resources": {"limits": {GPU: "2"}}}],
            },
        }
    ).placement
    nodes = [node("a", labels={"rack": "r1"}), node("b", labels={"rack": "r2"})]
    result = fit(GroupDemand(pods=1, gpus_per_pod=2, placement=placement), nodes, {"a": 8, "b": 8})
    assert result.nodes == ("b",)


def test_api_objects_convert_to_the_facts_capacity_uses():
    n = node_from_api(
        {
            "metadata": {
                "name": "kwok-node-0",
                "labels": {"nvidia.com/gpu.product": "NVIDIA-B200"},
            },
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {GPU: "8", "cpu": "224", "memory": "2Ti"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    )
    assert n.ready and not n.unschedulable
    assert n.allocatable_of(GPU) == 8
    assert n.allocatable_of("cpu") == 224_000 and n.allocatable_of("memory") == 2 * 2**40
    assert n.taints == (Taint("k", "", "NoSchedule"),)
    p = pod_from_api(
        {
            "metadata": {"name": "x", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {
                "nodeName": "kwok-node-0",
                "schedulingGates": [{"name": "serving.darwin.ai/gang"}, {"name": "other"}],
                "containers": [
                    {"name": "a", "resources": {"limits": {GPU: "2", "cpu": "4"}}},
                    {"name": "b", "resources": {"requests": {GPU: 1}, "limits": {GPU: 1}}},
                ],
            },
            "status": {"phase": "Running"},
        }
    )
    assert p.requests(GPU) == 3 and p.bound and p.gated and p.foreign_gates
    assert dict(p.room) == {"cpu": 4000, "pods": 1}  # a limit alone is the request
    assert p.created_at == 1735689600.0


sizes = st.sampled_from([1, 2, 4, 6, 8])


@given(
    free=st.lists(st.integers(0, 8), min_size=1, max_size=8),
    groups=st.lists(st.tuples(st.integers(1, 4), sizes), min_size=1, max_size=10),
)
def test_admission_never_hands_out_more_gpus_than_are_free(free, groups):
    nodes = [node(f"n{i}") for i in range(len(free))]
    free_map = {n.name: f for n, f in zip(nodes, free, strict=True)}
    demands = [demand(count, size) for count, size in groups]
    results = admit_in_order(demands, nodes, free_map)
    used = dict.fromkeys(free_map, 0)
    seen_no = False
    for d, r in zip(demands, results, strict=True):
        if r.fits:
            assert not seen_no  # index order: nothing is admitted after a group that waits
            assert len(r.nodes) == d.pods  # all or nothing
            for name in r.nodes:
                used[name] += d.gpus_per_pod
        else:
            seen_no = True
            assert r.nodes == ()
    assert all(used[n] <= free_map[n] for n in free_map)


@given(
    free=st.lists(st.integers(0, 8), min_size=1, max_size=8),
    count=st.integers(1, 8),
    size=sizes,
)
def test_fit_is_exact_for_groups_of_equal_pods(free, count, size):
    nodes = [node(f"n{i}") for i in range(len(free))]
    free_map = {n.name: f for n, f in zip(nodes, free, strict=True)}
    slots = sum(f // size for f in free)
    assert fit(demand(count, size), nodes, free_map).fits == (slots >= count)


def best_fit_pod_by_pod(count, size, free, room, need, prefer):
    """The placement written plainly: each pod on the node that takes it with the least to spare
    (preferred nodes first, then by name), everything looked at again for every pod."""
    free, room, chosen = dict(free), {n: dict(r) for n, r in room.items()}, []
    for _ in range(count):
        takers = [n for n in free if free[n] >= size and all(room[n][r] >= k for r, k in need)]
        if not takers:
            return None
        best = min(takers, key=lambda n: (n not in prefer, free[n], n))
        free[best] -= size
        room[best] = {r: v - dict(need).get(r, 0) for r, v in room[best].items()}
        chosen.append(best)
    return tuple(chosen)


@given(
    nodes=st.lists(
        st.tuples(st.integers(-2, 8), st.integers(0, 6)), min_size=1, max_size=8
    ),  # per node: free GPUs (below zero: overbooked), free CPUs
    count=st.integers(1, 6),
    size=sizes,
    cpus=st.integers(0, 3),
    prefer=st.sets(st.integers(0, 7), max_size=3),
)
def test_placement_is_a_best_fit_pod_by_pod(nodes, count, size, cpus, prefer):
    names = [f"n{i}" for i in range(len(nodes))]
    free = {n: gpus for n, (gpus, _) in zip(names, nodes, strict=True)}
    room = {n: {"cpu": c} for n, (_, c) in zip(names, nodes, strict=True)}
    need, preferred = (("cpu", cpus),), tuple(f"n{i}" for i in sorted(prefer))
    expected = best_fit_pod_by_pod(count, size, free, room, need, preferred)
    assert capacity._place(count, size, names, free, room, need, preferred) == expected


def test_a_group_short_of_memory_is_held_with_a_message_though_its_gpus_are_free():
    roomy = NodeInfo(
        name="n0",
        labels=(("nvidia.com/gpu.product", "NVIDIA-B200"),),
        allocatable=((GPU, 8), ("cpu", 224_000), ("memory", 2 * 2**40), ("pods", 110)),
    )
    busy = ObservedPod(
        name="other", node_name="n0", room=(("cpu", 1000), ("memory", 2**40 + 2**39), ("pods", 1))
    )
    room = capacity.free_room([roomy], [busy])
    assert room == {"n0": {"cpu": 223_000, "memory": 2**39, "pods": 109}}
    needs = (("cpu", 48_000), ("memory", 384 * 2**30), ("pods", 1))
    small = GroupDemand(pods=1, gpus_per_pod=6, placement=B200, room=needs)
    assert fit(small, [roomy], {"n0": 8}, room).fits  # 384Gi of 512Gi left
    large = GroupDemand(
        pods=1, gpus_per_pod=6, placement=B200, room=(("memory", 600 * 2**30), ("pods", 1))
    )
    held = fit(large, [roomy], {"n0": 8}, room)
    assert not held.fits and held.reason == capacity.INSUFFICIENT_CAPACITY
    assert "short of memory (each pod requests 600Gi, at most 512Gi free)" in held.message
    # admitted groups take their room: a second small group no longer fits on the same node
    results = admit_in_order([small, small], [roomy], {"n0": 16}, room)
    assert [r.fits for r in results] == [True, False]
    assert "short of memory" in results[1].message
