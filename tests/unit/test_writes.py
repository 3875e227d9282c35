"""The one mapping from planned actions to pod writes, and the one place where an answer that
is fine for a request (404 on a delete, 409 on a create) is let through."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from darwin_operator import planner, writes
from darwin_operator.cluster import ApiError, Cluster
from darwin_operator.vocabulary import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_BROKEN,
    ANNOTATION_DELETE_REASON,
    ANNOTATION_DRAIN_STARTED_AT,
    LABEL_SERVING,
    SCHEDULING_GATE,
    DeleteReason,
    format_time,
)
from tests.unit.planner_fixtures import REF, T0, make_spec, revision

SPEC = make_spec(placement={"podsPerGroup": 3})


def of(action):
    return writes.of(action, REF, SPEC, revision(SPEC), T0)


def test_a_group_is_created_pod_by_pod_from_the_rendered_pods():
    created = of(planner.CreateGroup(1, gated=True))
    assert [w.name for w in created.first] == [f"darwin-398b-1-{r}" for r in range(3)]
    assert all(isinstance(w, writes.CreatePod) for w in created.first) and not created.last
    assert created.first[0].body["spec"]["schedulingGates"]


def test_drain_restore_mark_and_ungate_patch_what_the_planner_reads_back():
    (drain,) = of(planner.DrainGroup(0, "darwin-398b-0-0")).first
    assert drain.labels == ((LABEL_SERVING, "false"),)
    assert drain.annotations == ((ANNOTATION_DRAIN_STARTED_AT, format_time(T0)),)
    (restore,) = of(planner.RestoreServing(0, "darwin-398b-0-0")).first
    assert restore.labels == ((LABEL_SERVING, "true"),)
    assert restore.annotations == ((ANNOTATION_DRAIN_STARTED_AT, None),)  # removed
    marks = of(planner.MarkBroken(0, "PodFailed t m", ("a", "b"))).first
    assert [m.annotations for m in marks] == [((ANNOTATION_BROKEN, "PodFailed t m"),)] * 2
    lifted = of(planner.UngateGroup(0, ("a",))).first
    assert lifted == (
        writes.PatchPod("a", annotations=((ANNOTATION_ADMITTED_AT, format_time(T0)),), ungate=True),
    )
    assert of(planner.ApplyObject("Service/x", {})) == writes.Writes()


def test_every_pod_of_a_deleted_group_is_stamped_before_any_is_deleted():
    deleted = of(planner.DeleteGroup(2, DeleteReason.SCALE_DOWN, ("a", "b"), leader="a"))
    # the stamp also takes the leader out of the client Service, in the first write
    stamp = ((ANNOTATION_DELETE_REASON, "ScaleDown"),)
    assert deleted.first == (
        writes.PatchPod("a", labels=((LABEL_SERVING, "false"),), annotations=stamp),
        writes.PatchPod("b", annotations=stamp),
    )
    assert deleted.last == (writes.DeletePod("a"), writes.DeletePod("b"))


class _Response:
    def __init__(self, status: int, body: dict) -> None:
        self.status, self._body = status, json.dumps(body).encode()

    def read(self) -> bytes:
        return self._body


class _Client:
    """Answers each request with the status `answer(method, path)` gives."""

    def __init__(self, answer) -> None:
        self.answer, self.sent = answer, []

    def param_serialize(self, method, resource_path, **kw):
        return method, resource_path, kw["header_params"], kw["body"], None

    def call_api(self, method, url, header_params=None, body=None, _request_timeout=None):
        self.sent.append((method, url, header_params.get("Content-Type"), body))
        status = self.answer(method, url)
        return _Response(status, {} if status < 300 else {"reason": "X", "message": "no"})


def test_fine_answers_come_back_as_none_and_others_raise():
    cluster = Cluster(_Client(lambda m, p: 404), workers=1)
    try:
        assert cluster.request_sync("GET", "/api/v1/nodes/x", fine=[404]) is None
        with pytest.raises(ApiError) as raised:
            cluster.request_sync("GET", "/api/v1/nodes/x", fine=[409])
        assert raised.value.status == 404
    finally:
        cluster.close()


def test_write_pods_counts_the_writes_that_took_effect():
    gone = {"/api/v1/namespaces/llm/pods/b"}
    client = _Client(lambda m, p: 409 if m == "POST" else 404 if p in gone else 200)
    cluster = Cluster(client, workers=2)

    async def scenario():
        deleted = await cluster.write_pods("llm", [writes.DeletePod("a"), writes.DeletePod("b")])
        created = await cluster.write_pods("llm", [writes.CreatePod("c", {"metadata": {}})])
        lifted = await cluster.write_pods("llm", writes.ungate(["a"], T0))
        return deleted, created, lifted

    try:
        assert asyncio.run(scenario()) == (1, 0, 1)
    finally:
        cluster.close()
    method, url, content_type, body = client.sent[-1]
    assert (method, content_type) == ("PATCH", "application/strategic-merge-patch+json")
    assert body["spec"]["schedulingGates"] == [{"$patch": "delete", "name": SCHEDULING_GATE}]
    assert body["metadata"]["annotations"] == {ANNOTATION_ADMITTED_AT: format_time(T0)}


def test_an_admitted_pod_is_held_to_its_node_in_the_write_that_lifts_its_gate():
    held = writes.ungate(["a", "b"], T0, ("node-1", "node-2"))
    assert [(w.name, w.node, w.ungate) for w in held] == [
        ("a", "node-1", True),
        ("b", "node-2", True),
    ]
    client = _Client(lambda m, p: 200)
    cluster = Cluster(client, workers=1)
    try:
        asyncio.run(cluster.write_pods("llm", held[:1]))
    finally:
        cluster.close()
    _, url, content_type, body = client.sent[-1]
    assert content_type == "application/strategic-merge-patch+json"
    assert body["spec"]["schedulingGates"] == [{"$patch": "delete", "name": SCHEDULING_GATE}]
    terms = body["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
        ]
    }
    # an interrupted admission's choice is not known any more: its gates are only lifted
    assert all(w.node == "" for w in writes.ungate(["a"], T0))


def test_a_group_admitted_before_it_exists_is_created_released_and_held_to_its_nodes():
    create = of(planner.CreateGroup(0, gated=True))
    names = [w.name for w in create.first]
    nodes = {name: f"node-{i}" for i, name in enumerate(names)}
    admitted = writes.created_admitted(create, T0, nodes)
    assert [w.name for w in admitted.first] == names
    for gated, released in zip(create.first, admitted.first, strict=True):
        assert gated.body["spec"]["schedulingGates"] == [{"name": SCHEDULING_GATE}]  # untouched
        spec, meta = released.body["spec"], released.body["metadata"]
        assert "schedulingGates" not in spec
        assert meta["annotations"][ANNOTATION_ADMITTED_AT] == format_time(T0)
        assert meta["labels"] == gated.body["metadata"]["labels"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        (term,) = terms["nodeSelectorTerms"]
        assert term["matchFields"][0]["values"] == [nodes[released.name]]
        assert {k: v for k, v in spec.items() if k != "affinity"} == {
            k: v for k, v in gated.body["spec"].items() if k not in ("affinity", "schedulingGates")
        }
    # a pod admission did not place is never let go: nothing of the group is
    with pytest.raises(ValueError):
        writes.created_admitted(create, T0, dict(list(nodes.items())[:2]))


def test_write_pods_answers_every_write_before_raising_the_first_failure():
    refused = "/api/v1/namespaces/llm/pods"

    def answer(method, path):
        if method == "POST":
            return 403  # at once
        time.sleep(0.2)  # the deletions answer later
        return 200

    cluster = Cluster(_Client(answer), workers=3)
    seen: list[str] = []
    cluster.on_written = lambda kind, obj: seen.append(kind)
    body = {"metadata": {"name": "a"}}
    pod_writes = [writes.CreatePod("a", body), writes.DeletePod("b"), writes.DeletePod("c")]
    try:
        with pytest.raises(ApiError) as raised:
            asyncio.run(cluster.write_pods("llm", pod_writes))
    finally:
        cluster.close()
    assert raised.value.status == 403 and refused
    assert seen == ["Pod", "Pod"]  # both deletions answered, and handed on, before the raise
