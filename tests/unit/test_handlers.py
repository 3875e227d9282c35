"""kopf's settings as handlers.py configures them."""

from __future__ import annotations

import asyncio

import kopf

from darwin_operator import handlers


class Uncopyable:
    def __deepcopy__(self, memo: dict) -> Uncopyable:
        raise AssertionError("kopf deep-copied an endpoint")


def test_kopf_builds_no_essence_of_an_endpoint():
    # kopf compares essences only for change handlers; building one deep-copies the object
    settings = kopf.OperatorSettings()
    asyncio.run(handlers.configure(settings=settings))
    storage = settings.persistence.diffbase_storage
    body = kopf.Body({"metadata": {"name": "ep"}, "spec": {"x": Uncopyable()}, "status": {}})
    assert storage.build(body=body) is None
    assert storage.fetch(body=body) is None
