"""A keyed copy of one kind of object, fed by a watch and by the operator's own writes (pure).

Two sources write into it, and they may arrive in either order: the watch (which lags) and the
responses to the operator's own writes (which are current). Every entry keeps the
resourceVersion it was seen at, and an older version never replaces a newer one, so a
reconcile right after a write sees what it wrote (no pod created twice, no gate lifted twice),
and a late watch event cannot bring back what the write changed. A deletion leaves a tombstone
for a while, so the response to a DELETE that lands after the watch said the object was gone
does not resurrect it. A relist replaces the whole copy, except what was written after the
list was taken.

resourceVersions are compared as integers (etcd's revisions); one that is not an integer is
taken as newer than anything, which is how a client that cannot compare them behaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects

# How long a deletion is remembered against late responses of writes sent before it.
TOMBSTONE_SECONDS = 120.0


def version(resource_version: str | None) -> int | None:
    try:
        return int(resource_version or "")
    except ValueError:
        return None


def _older(new: int | None, known: int | None) -> bool:
    return new is not None and known is not None and new < known


@dataclass(frozen=True)
class Change(Generic[T]):
    """What one update did to an entry: before and after (None: absent)."""

    key: Key
    before: T | None
    after: T | None


class Store(Generic[T]):
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._items: dict[Key, tuple[int | None, T]] = {}
        self._gone: dict[Key, tuple[int | None, float]] = {}  # tombstones: version, when

    def get(self, key: Key) -> T | None:
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def items(self) -> Iterator[tuple[Key, T]]:
        return ((k, v) for k, (_, v) in self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def holds(self, key: Key, rv: str | None) -> bool:
        """Holds the object at `rv` or a newer version: putting it as of `rv` changes nothing.
        (Only reads: safe from another thread, where a stale answer means a put that finds
        nothing to do.)"""
        at = version(rv)
        held = self._items.get(key)
        return held is not None and at is not None and held[0] is not None and at <= held[0]

    def put(self, key: Key, rv: str | None, value: T) -> Change[T] | None:
        """The object as of `rv` (from a watch event or a write's response); None when what is
        held is newer, or the object was deleted after `rv`."""
        at = version(rv)
        held = self._items.get(key)
        if held is not None and _older(at, held[0]):
            return None
        gone = self._gone.get(key)
        if gone is not None:
            if held is None and gone[0] is not None and at is not None and at <= gone[0]:
                return None  # a response older than the deletion the watch already showed
            del self._gone[key]
        self._items[key] = (at, value)
        before = None if held is None else held[1]
        return None if before == value else Change(key, before, value)

    def remove(self, key: Key, rv: str | None) -> Change[T] | None:
        """Deleted as of `rv` (a DELETED event, or a delete that found nothing)."""
        at = version(rv)
        held = self._items.get(key)
        if held is not None and _older(at, held[0]):
            return None  # an older incarnation of the name went; the new one stays
        self._gone[key] = (at, self._clock())
        self._prune()
        if held is None:
            return None
        del self._items[key]
        return Change(key, held[1], None)

    def replace(
        self,
        listed: Iterable[tuple[Key, str | None, T]],
        rv: str | None,
        within: Callable[[Key], bool] = lambda key: True,
    ) -> list[Change]:
        """A fresh list as of `rv` of the entries `within` (one namespace, one kind). Entries
        written after the list was taken stay, and so do deletions seen after it."""
        at = version(rv)
        outside = {k: e for k, e in self._items.items() if not within(k)}
        inside = {k: e for k, e in self._items.items() if within(k)}
        fresh: dict[Key, tuple[int | None, T]] = {}
        for key, item_rv, value in listed:
            gone = self._gone.get(key)
            if gone is not None and _older(at, gone[0]):
                continue
            fresh[key] = (version(item_rv), value)
        for key, (held_at, value) in inside.items():
            listed_at = at if key not in fresh else fresh[key][0]
            if _older(listed_at, held_at):  # written after the list (or its item) was taken
                fresh[key] = (held_at, value)
        changes: list[Change] = []
        for key in inside.keys() | fresh.keys():
            before = inside.get(key)
            after = fresh.get(key)
            b = None if before is None else before[1]
            a = None if after is None else after[1]
            if b != a:
                changes.append(Change(key, b, a))
        self._items = {**outside, **fresh}
        return changes

    def _prune(self) -> None:
        if len(self._gone) < 256:
            return
        cutoff = self._clock() - TOMBSTONE_SECONDS
        self._gone = {k: g for k, g in self._gone.items() if g[1] >= cutoff}
