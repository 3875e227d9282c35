"""The rollout benchmark's account of what a controller did, from a sequence of pod states."""

from bench.rollout_record import PodView, RolloutRecord, darwin_view, lws_view


def pod(uid, group, rank, revision="old", *, ready=True, terminating=False, node="n0", gpus=2):
    return PodView(uid, group, rank, revision, ready, terminating, node, gpus)


def record(groups=2, size=2, max_unavailable=1, node_gpus=8) -> RolloutRecord:
    return RolloutRecord(groups, size, max_unavailable, node_gpus)


def ready_workload(r: RolloutRecord, at: float = 1.0) -> None:
    for g in range(r.groups):
        for rank in range(r.group_size):
            r.seen(at, pod(f"old-{g}-{rank}", g, rank, node=f"n{g}"))


def replace_group(r: RolloutRecord, g: int, at: float, uid: str = "new") -> None:
    """The well-behaved step: the old pods go, the new ones come and turn Ready."""
    for rank in range(r.group_size):
        r.gone(at, f"old-{g}-{rank}")
    for rank in range(r.group_size):
        r.seen(at + 0.1, pod(f"{uid}-{g}-{rank}", g, rank, "new", ready=False, node=f"n{g}"))
    for rank in range(r.group_size):
        r.seen(at + 0.5, pod(f"{uid}-{g}-{rank}", g, rank, "new", node=f"n{g}"))


def test_all_available_only_once_every_group_has_a_full_ready_set():
    r = record()
    r.seen(1.0, pod("a", 0, 0))
    r.seen(1.1, pod("b", 0, 1))
    r.seen(1.2, pod("c", 1, 0))
    r.seen(1.3, pod("d", 1, 1, ready=False))
    assert r.all_available_at is None and r.available() == {0: "old"}
    r.seen(2.0, pod("d", 1, 1))
    assert r.all_available_at == 2.0


def test_a_clean_rollout_has_its_steps_and_no_violations():
    r = record()
    ready_workload(r)
    r.start_rollout(10.0)
    replace_group(r, 1, 11.0)
    assert r.rolled_out_at is None
    replace_group(r, 0, 12.0)
    assert r.rolled_out_at == 12.5
    assert r.step_seconds() == [1.5, 1.0]
    assert r.violations.count() == 0 and r.violations.most_down == 1


def test_two_groups_down_at_once_is_one_episode_over_max_unavailable():
    r = record(groups=3)
    ready_workload(r)
    r.start_rollout(10.0)
    r.gone(11.0, "old-2-0")
    r.gone(11.1, "old-1-0")  # second group down: over the limit
    r.gone(11.2, "old-0-0")  # still over: the same episode
    assert r.violations.too_many_down == 1 and r.violations.most_down == 3


def test_limits_are_not_counted_before_the_rollout():
    r = record()
    r.seen(1.0, pod("a", 0, 0, ready=False))  # nothing available yet: not a rollout's doing
    assert r.violations.too_many_down == 0 and r.violations.most_down == 0


def test_a_group_rebuilt_twice_in_the_rollout():
    r = record()
    ready_workload(r)
    r.start_rollout(10.0)
    replace_group(r, 1, 11.0, uid="first")
    r.gone(12.0, "first-1-0")  # the new group torn down and built again
    r.seen(12.1, pod("second-1-0", 1, 0, "new"))
    assert r.violations.rebuilt_twice == {1}


def test_a_terminating_pod_does_not_count_as_available_but_holds_its_gpus():
    r = record(groups=1, node_gpus=4)
    r.seen(1.0, pod("a", 0, 0, gpus=2))
    r.seen(1.0, pod("b", 0, 1, gpus=2))
    r.start_rollout(2.0)
    r.seen(3.0, pod("a", 0, 0, gpus=2, terminating=True))
    assert r.available() == {}
    r.seen(3.1, pod("c", 0, 0, "new", ready=False, gpus=2))  # a third pod on a 4-GPU node
    assert r.violations.nodes_over_gpus == 1
    r.seen(3.2, pod("c", 0, 0, "new", ready=False, gpus=2))  # still over: same episode
    assert r.violations.nodes_over_gpus == 1


def pod_object(labels, *, ready=True, deleting=False, node="kwok-node-1", gpus="2"):
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    meta = {"uid": "u1", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    containers = [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": containers},
        "status": status,
    }


def test_views_read_each_controllers_labels():
    lws = "leaderworkerset.sigs.k8s.io/"
    labels = {
        lws + "group-index": "3",
        lws + "worker-index": "2",
        lws + "template-revision-hash": "h",
    }
    assert lws_view(pod_object(labels)) == PodView("u1", 3, 2, "h", True, False, "kwok-node-1", 2)
    darwin = "serving.darwin.ai/"
    labels = {darwin + "group": "1", darwin + "rank": "0", darwin + "revision": "r"}
    view = darwin_view(pod_object(labels, ready=False, deleting=True, node=""))
    assert view == PodView("u1", 1, 0, "r", False, True, "", 2)
    assert darwin_view(pod_object({})) is None
