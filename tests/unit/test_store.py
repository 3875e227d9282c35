"""The watched copy of one kind: the watch and our own writes' responses, in either order."""

from __future__ import annotations

from darwin_operator.store import Store

KEY = ("ns", "pod-0")


def store() -> Store[str]:
    return Store(clock=lambda: 0.0)


def test_a_late_watch_event_never_replaces_what_a_write_returned():
    s = store()
    s.put(KEY, "10", "gated")
    s.put(KEY, "12", "ungated")  # the response to our patch
    assert s.put(KEY, "11", "gated, as the watch saw it before the patch") is None
    assert s.get(KEY) == "ungated"
    change = s.put(KEY, "13", "bound")
    assert change is not None and (change.before, change.after) == ("ungated", "bound")


def test_an_unchanged_summary_is_no_change():
    s = store()
    s.put(KEY, "10", "a")
    assert s.put(KEY, "11", "a") is None


def test_a_response_older_than_the_deletion_the_watch_showed_does_not_bring_the_pod_back():
    s = store()
    s.put(KEY, "10", "running")
    removed = s.remove(KEY, "14")  # DELETED, before the response to our DELETE arrives
    assert removed is not None and removed.after is None
    assert s.put(KEY, "12", "terminating (the DELETE's response)") is None
    assert s.get(KEY) is None
    assert s.put(KEY, "20", "created again under the same name") is not None


def test_the_deletion_of_an_older_incarnation_leaves_the_new_one():
    s = store()
    s.put(KEY, "30", "new incarnation (our create)")
    assert s.remove(KEY, "25") is None
    assert s.get(KEY) == "new incarnation (our create)"


def test_a_relist_drops_what_is_gone_and_keeps_what_was_written_after_it():
    s = store()
    s.put(("ns", "gone"), "5", "deleted while the watch was down")
    s.put(("ns", "kept"), "6", "old")
    s.put(("ns", "written"), "40", "created after the list was taken")
    s.put(("other", "x"), "7", "another namespace's")
    changes = s.replace(
        [(("ns", "kept"), "8", "new"), (("ns", "listed"), "9", "new one")],
        "30",
        within=lambda key: key[0] == "ns",
    )
    assert dict(s.items()) == {
        ("ns", "kept"): "new",
        ("ns", "listed"): "new one",
        ("ns", "written"): "created after the list was taken",
        ("other", "x"): "another namespace's",
    }
    assert {(c.key[1], c.before, c.after) for c in changes} == {
        ("gone", "deleted while the watch was down", None),
        ("kept", "old", "new"),
        ("listed", None, "new one"),
    }


def test_a_relist_does_not_bring_back_what_was_deleted_after_it():
    s = store()
    s.remove(KEY, "50")
    s.replace([(KEY, "20", "listed before the deletion")], "45")
    assert s.get(KEY) is None


def test_versions_that_are_not_numbers_count_as_newest():
    s = store()
    s.put(KEY, "10", "a")
    assert s.put(KEY, "not-a-number", "b") is not None
    assert s.get(KEY) == "b"


def test_holds_says_whether_a_put_at_that_version_would_change_nothing():
    store = Store(lambda: 0.0)
    assert not store.holds(("ns", "a"), "5")
    store.put(("ns", "a"), "5", "x")
    assert store.holds(("ns", "a"), "5") and store.holds(("ns", "a"), "4")
    assert not store.holds(("ns", "a"), "6")
    assert not store.holds(("ns", "a"), "not-a-number")  # cannot tell: taken as newer
    store.remove(("ns", "a"), "7")
    assert not store.holds(("ns", "a"), "5")
