"""The operator's own pod deletions use a short grace period, not the eviction one."""

from __future__ import annotations

import asyncio

from darwin_operator import engine, writes
from darwin_operator.cluster import OPERATOR_DELETE_GRACE_SECONDS, Cluster


class RecordingCluster(Cluster):
    """Cluster with its transport replaced by a list of the requests it would send."""

    def __init__(self) -> None:
        super().__init__(client=None, workers=1)
        self.sent: list[tuple[str, str, dict]] = []

    async def request(self, method: str, path: str, **kwargs) -> dict:
        self.sent.append((method, path, kwargs))
        return {}


def test_drained_or_broken_groups_are_deleted_without_the_eviction_grace_period():
    cluster = RecordingCluster()
    try:
        asyncio.run(
            cluster.write_pods("llm", [writes.DeletePod("e-0-0"), writes.DeletePod("e-0-1")])
        )
    finally:
        cluster.close()
    assert [(method, path) for method, path, _ in cluster.sent] == [
        ("DELETE", "/api/v1/namespaces/llm/pods/e-0-0"),
        ("DELETE", "/api/v1/namespaces/llm/pods/e-0-1"),
    ]
    for _, _, kwargs in cluster.sent:
        assert kwargs["query"] == [("gracePeriodSeconds", str(OPERATOR_DELETE_GRACE_SECONDS))]
    # the preStop sleep still runs, and the rest is far below what an eviction is granted
    assert (
        engine.PRE_STOP_SECONDS < OPERATOR_DELETE_GRACE_SECONDS < engine.TERMINATION_GRACE_SECONDS
    )
