"""The watch thread: lists in pages, watches from the list's version, lists again on 410, and
stops at 403. The API is a stand-in that answers as the API server does."""

from __future__ import annotations

import asyncio
import json
import threading

from darwin_operator.cluster import ApiError
from darwin_operator.informer import Informer, Sink, Source, peek


def pod(name: str, rv: str) -> dict:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": rv}
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta}


def line(event: dict) -> bytes:
    """An event as the API server writes it on a watch: compact JSON, one line."""
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def summarize(obj: dict):
    meta = obj["metadata"]
    return (meta["namespace"], meta["name"]), meta["resourceVersion"], meta["name"]


class Api:
    """Pages of a list, then watches: each a list of events, or an ApiError to raise."""

    def __init__(self, lists: list[list[dict]], watches: list) -> None:
        self.lists, self.watches = lists, watches
        self.queries: list[tuple[str, dict]] = []
        self.done = threading.Event()

    def request_sync(self, method, path, query=()):
        query = dict(query)
        self.queries.append(("list", query))
        if self.lists[0] == "forbidden":
            raise ApiError(403, "Forbidden", "no")
        pages = self.lists[0]
        page = int(query.get("continue") or 0)
        more = page + 1 < len(pages)
        if not more:
            self.lists.pop(0)
        return {
            "items": pages[page],
            "metadata": {"resourceVersion": "100", "continue": str(page + 1) if more else ""},
        }

    def watch_sync(self, path, query, timeout):
        self.queries.append(("watch", dict(query)))
        if not self.watches:
            self.done.set()
            threading.Event().wait()  # a watch that stays open
        events = self.watches.pop(0)
        if isinstance(events, Exception):
            raise events
        yield from map(line, events)


class Recorder(Sink):
    def __init__(self, held: tuple = ()) -> None:
        self.calls: list = []
        self.held = held  # (namespace, name, rv) of what it holds already

    def holds(self, source, namespace, name, rv):
        return (namespace, name, rv) in self.held

    def relisted(self, source, summaries, rv):
        self.calls.append(("relisted", [s[2] for s in summaries], rv))

    def changed(self, source, deleted, summary):
        self.calls.append(("deleted" if deleted else "changed", summary[2]))

    def forbidden(self, source):
        self.calls.append(("forbidden",))


def run(api: Api, held: tuple = ()) -> list:
    async def scenario():
        sink = Recorder(held)
        informer = Informer(api, Source("Pod", "/api/v1/pods", summarize), sink, loop)
        informer.start()
        while not api.done.is_set() and ("forbidden",) not in sink.calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        informer.stop()
        return sink.calls

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_lists_in_pages_watches_from_the_list_and_lists_again_when_the_version_is_gone():
    api = Api(
        lists=[[[pod("a", "1")], [pod("b", "2")]], [[pod("b", "2"), pod("c", "120")]]],
        watches=[
            [
                {"type": "ADDED", "object": pod("c", "101")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "110"}}},
                {"type": "DELETED", "object": pod("a", "111")},
            ],
            [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],
        ],
    )
    calls = run(api)
    assert calls == [
        ("relisted", ["a", "b"], "100"),
        ("changed", "c"),
        ("deleted", "a"),
        ("relisted", ["b", "c"], "100"),
    ]
    watches = [q for kind, q in api.queries if kind == "watch"]
    # the first from the list, the next from the bookmark, the one after the relist from it
    assert [w["resourceVersion"] for w in watches] == ["100", "111", "100"]
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)


def test_a_lost_connection_watches_again_from_where_it_was_without_a_list():
    api = Api(
        lists=[[[pod("a", "1")]]],
        watches=[[{"type": "MODIFIED", "object": pod("a", "105")}], ConnectionError("reset")],
    )
    calls = run(api)
    assert calls == [("relisted", ["a"], "100"), ("changed", "a")]
    assert [kind for kind, _ in api.queries] == ["list", "watch", "watch", "watch"]
    assert api.queries[-1][1]["resourceVersion"] == "105"


def test_a_forbidden_list_is_reported_and_the_thread_ends():
    api = Api(lists=["forbidden"], watches=[])
    assert run(api) == [("forbidden",)]


def test_an_echo_of_what_the_sink_holds_is_passed_over_but_its_version_is_kept():
    api = Api(
        lists=[[[pod("a", "1")]]],
        watches=[
            [
                {"type": "ADDED", "object": pod("b", "101")},  # held: the response to our POST
                {"type": "MODIFIED", "object": pod("b", "102")},  # newer than what is held
                {"type": "MODIFIED", "object": pod("a", "103")},  # held
            ],
            ConnectionError("reset"),
        ],
    )
    calls = run(api, held=(("ns", "b", "101"), ("ns", "a", "103")))
    assert calls == [("relisted", ["a"], "100"), ("changed", "b")]
    watches = [q for kind, q in api.queries if kind == "watch"]
    assert [w["resourceVersion"] for w in watches] == ["100", "103", "103"]


def test_peek_reads_the_start_of_an_event_as_kube_apiserver_writes_it():
    # the first bytes of a watch event sent by kube-apiserver v1.34.4
    added = (
        b'{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p",'
        b'"namespace":"cap","uid":"e6c1be87-3d9b-4c8c-b3db-dd31c7bef9c9","resourceVersion":"252",'
        b'"generation":1,"creationTimestamp":"2026-11-30T12:48:57Z","labels":{"a":"b"}}}}'
    )
    assert peek(added) == ("cap", "p", "252")
    assert peek(added.replace(b"ADDED", b"MODIFIED", 1)) == ("cap", "p", "252")
    # a deletion is never an echo; a name from generateName or a node: parsed as any event
    assert peek(added.replace(b"ADDED", b"DELETED", 1)) is None
    assert peek(added.replace(b'"name":"p",', b'"name":"p-x1","generateName":"p-",')) is None
    assert peek(added.replace(b'"namespace":"cap",', b"")) is None
    assert (
        peek(b'{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9"}}}')
        is None
    )
