"""Registration for kopf peering (peering.py): every replica lands strictly below the others,
also when two register at once."""

from __future__ import annotations

import asyncio
import copy
import datetime

from darwin_operator.cluster import ApiError
from darwin_operator.peering import (
    ActivityGuard,
    PeeringObject,
    peering_objects,
    priority_below,
    register,
)


class FakePeeringApi:
    """One peering object with resourceVersion preconditions, like the API server. `interleave`
    runs once right after the first GET: another replica registering in between."""

    def __init__(self, status: dict | None = None, interleave=None) -> None:
        self.obj = (
            None if status is None else {"metadata": {"resourceVersion": "1"}, "status": status}
        )
        self.interleave = interleave

    def request_sync(self, method, path, body=None, fine=(), **_):
        """As Cluster.request_sync: an error answer raises, or is None where it is fine."""
        if method == "GET":
            if self.obj is None:
                return _error(404, "NotFound", fine)
            seen = copy.deepcopy(self.obj)
            if self.interleave:
                interleave, self.interleave = self.interleave, None
                interleave(self)
            return seen
        if method == "POST":
            self.obj = {"metadata": {"resourceVersion": "1"}, "status": {}}
            return self.obj
        precondition = body.get("metadata", {}).get("resourceVersion")
        if precondition and precondition != self.obj["metadata"]["resourceVersion"]:
            return _error(409, "Conflict", fine)
        self.obj["status"].update(body["status"])
        self.obj["metadata"]["resourceVersion"] = str(
            int(self.obj["metadata"]["resourceVersion"]) + 1
        )
        return self.obj


def _error(status: int, reason: str, fine) -> None:
    if status not in fine:
        raise ApiError(status, reason, "")
    return None


CLUSTER_WIDE = [PeeringObject("darwin-operator", None)]


def test_first_replica_gets_zero_and_the_next_ones_go_below():
    api = FakePeeringApi()
    assert register(api, CLUSTER_WIDE, "a", 15) == 0
    assert register(api, CLUSTER_WIDE, "b", 15) == -1
    assert register(api, CLUSTER_WIDE, "c", 15) == -2
    assert api.obj["status"]["b"]["lifetime"] == 15


def test_a_restarted_replica_ignores_its_own_old_entry_and_queues_behind_the_others():
    assert priority_below({"a": {"priority": 0}, "b": {"priority": -1}}, "a") == -2


def test_a_concurrent_registration_forces_a_retry_below_it():
    api = FakePeeringApi(
        {"a": {"priority": 0}}, interleave=lambda api: register(api, CLUSTER_WIDE, "c", 15)
    )
    assert register(api, CLUSTER_WIDE, "b", 15) == -2, "c registered first, at -1"
    assert api.obj["status"]["c"]["priority"] == -1


def test_namespaced_operators_peer_in_each_namespace_with_one_priority():
    objects = peering_objects("darwin-operator", ["team-b", "team-a"])
    assert [o.namespace for o in objects] == ["team-a", "team-b"]
    assert objects[0].path == "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings"
    assert peering_objects("darwin-operator", [])[0].path == "/apis/kopf.dev/v1/clusterkopfpeerings"


def guard_seeing(peers: dict, priority: int) -> ActivityGuard:
    api = FakePeeringApi(peers)
    return ActivityGuard(api, CLUSTER_WIDE[0], "me", priority, poll_seconds=3600).start()


def keepalive(priority: int, seconds_ago: float, lifetime: int = 15, now=None) -> dict:
    lastseen = (now or NOW) - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_guard_stands_by_while_a_peer_of_higher_or_equal_priority_is_alive():
    assert not guard_seeing({"old": keepalive(0, 5)}, -1).active(NOW)
    assert not guard_seeing({"twin": keepalive(-1, 5)}, -1).active(NOW)
    assert guard_seeing({"young": keepalive(-2, 5), "me": keepalive(-1, 0)}, -1).active(NOW)


def test_guard_takes_over_once_the_active_peer_s_keepalive_expires():
    guard = guard_seeing({"old": keepalive(0, 5, lifetime=15)}, -1)
    assert not guard.active(NOW)
    assert guard.active(NOW + datetime.timedelta(seconds=10.001)), "judged at call time"


def test_a_guarded_reconcile_does_nothing_while_outranked():
    calls = []

    async def reconcile(namespace, name):
        calls.append((namespace, name))
        return "reconciled"

    alive = keepalive(0, 0, lifetime=3600, now=datetime.datetime.now(datetime.UTC))
    standby = guard_seeing({"old": alive}, -1)
    assert asyncio.run(standby.wrap(reconcile, "idle")("ns", "e")) == "idle"
    assert asyncio.run(guard_seeing({}, 0).wrap(reconcile, "idle")("ns", "e")) == "reconciled"
    assert calls == [("ns", "e")]


def test_a_refused_reconcile_rereads_the_peering_first():
    """The active replica's graceful exit withdraws its keep-alive: no waiting for a poll."""

    async def reconcile(namespace, name):
        return "reconciled"

    alive = keepalive(0, 0, lifetime=3600, now=datetime.datetime.now(datetime.UTC))
    standby = guard_seeing({"old": alive}, -1)
    standby.cluster.obj["status"]["old"] = None  # withdrawn after the guard's last read
    assert asyncio.run(standby.wrap(reconcile, "idle")("ns", "e")) == "reconciled"
