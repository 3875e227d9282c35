"""List, then watch, one kind of object in a thread of its own, handing small summaries to the
event loop.

The thread lists (in pages), then watches from the list's resourceVersion, picking up where
the last watch ended (bookmarks keep that version fresh); when the server says the version is
too old (410 Gone) it lists again. Each object is turned into its summary here, off the event
loop, and only the summary crosses over: the bodies are dropped at once.

Most events of the operator's own pods are echoes of its writes, whose responses the sink
already holds (view.py): an event whose object the sink holds at that version is passed over
before it is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from darwin_operator.cluster import ApiError, Cluster

log = logging.getLogger(__name__)

WATCH_SECONDS = 290  # server-side timeout of one watch request
PAGE = 500
RETRY_SECONDS = (0.5, 1, 2, 5, 10)

# A summary of one object: (key, resourceVersion, value); value None drops the object.
Summary = tuple[tuple[str, str], str, Any]


@dataclass(frozen=True)
class Source:
    """What to watch, and what to keep of each object."""

    kind: str
    path: str
    summarize: Callable[[dict[str, Any]], Summary]
    selector: str = ""


class Sink:
    """Where the summaries go, called on the event loop (view.py); `holds` is asked from the
    watch thread."""

    def relisted(self, source: Source, summaries: list[Summary], rv: str) -> None: ...
    def changed(self, source: Source, deleted: bool, summary: Summary) -> None: ...
    def forbidden(self, source: Source) -> None: ...

    def holds(self, source: Source, namespace: str, name: str, rv: str) -> bool:
        """Already has the object at version `rv` or a newer one: the event would change
        nothing."""
        return False


# The start of an added or modified object's event as the API server writes it: the object's
# metadata opens with its name, namespace, uid and resourceVersion (a generateName or any other
# field in between: no match, and the event is parsed as any other).
_ECHO = re.compile(
    rb'\{"type":"(?:ADDED|MODIFIED)","object":\{"kind":"[^"]*","apiVersion":"[^"]*",'
    rb'"metadata":\{"name":"([^"\\]+)","namespace":"([^"\\]+)","uid":"[^"\\]*",'
    rb'"resourceVersion":"(\d+)"'
)


def peek(line: bytes) -> tuple[str, str, str] | None:
    """(namespace, name, resourceVersion) of an added or modified object, read off the event's
    first bytes without parsing it; None when they are not laid out as expected."""
    match = _ECHO.match(line)
    if match is None:
        return None
    name, namespace, rv = (part.decode() for part in match.groups())
    return namespace, name, rv


class Gone(Exception):
    """The resourceVersion is too old (410): list again."""


class Informer:
    def __init__(
        self, cluster: Cluster, source: Source, sink: Sink, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.cluster, self.source, self.sink, self.loop = cluster, source, sink, loop
        self.relists = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watch {source.kind} {source.path}", daemon=True
        )

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._stop.is_set() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        failures = 0
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                    self.relists += 1
                rv = self._watch(rv)
                failures = 0
            except Gone:
                rv = ""
            except ApiError as e:
                if e.status == 403:
                    # the sink says what it means (e.g. pods counted per namespace)
                    log.debug("may not watch %s at %s: %s", self.source.kind, self.source.path, e)
                    self._post(self.sink.forbidden, self.source)
                    return
                rv = "" if e.status == 410 else rv
                failures = self._pause(failures, e)
            except Exception as e:  # connection lost, timeouts: watch again from where we were
                failures = self._pause(failures, e)

    def _pause(self, failures: int, error: Exception) -> int:
        delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
        log.debug("watch of %s: %s; again in %ss", self.source.kind, error, delay)
        self._stop.wait(delay)
        return failures + 1

    def _query(self) -> list[tuple[str, str]]:
        return [("labelSelector", self.source.selector)] if self.source.selector else []

    def _list(self) -> str:
        summaries: list[Summary] = []
        token = ""
        while True:
            query = [*self._query(), ("limit", str(PAGE))]
            if token:
                query.append(("continue", token))
            page = self.cluster.request_sync("GET", self.source.path, query=query) or {}
            summaries.extend(self._summaries(page.get("items") or ()))
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                break
        rv = meta.get("resourceVersion") or ""
        self._post(self.sink.relisted, self.source, summaries, rv)
        return rv

    def _summaries(self, items: Iterable[dict[str, Any]]) -> list[Summary]:
        return [self.source.summarize(item) for item in items]

    def _watch(self, rv: str) -> str:
        query = [
            *self._query(),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        started = time.monotonic()
        for line in self.cluster.watch_sync(self.source.path, query, WATCH_SECONDS + 30):
            if self._stop.is_set():
                break
            seen = peek(line)
            if seen is not None and self.sink.holds(self.source, *seen):
                rv = seen[2]
                continue
            event = json.loads(line)
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(obj.get("message", ""))
                raise ApiError(obj.get("code") or 500, obj.get("reason", ""), obj.get("message"))
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if kind == "BOOKMARK":
                continue
            summary = self.source.summarize(obj)
            self._post(self.sink.changed, self.source, kind == "DELETED", summary)
        if time.monotonic() - started < 1 and not self._stop.is_set():
            self._stop.wait(1)  # a watch the server ends at once: do not spin
        return rv
