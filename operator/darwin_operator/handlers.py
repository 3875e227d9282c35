"""kopf wiring only: endpoint events end in a trigger of the one reconcile of an endpoint.

Only event handlers are used: they keep no progress and add no finalizer, so kopf writes nothing
to the endpoints (its status stays the operator's own) and deleting a namespace never waits for
the operator. The Controller and Cluster come in through kopf's memo (see runner.py).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from darwin_operator import api, credentials

PROGRESS_PREFIX = "operator.serving.darwin.ai"


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence: kopf compares essences only for change handlers, and there are none. kopf
    would otherwise deep-copy every endpoint it is shown, status included, on the event loop."""

    def fetch(self, *, body: kopf.Body) -> None:  # type: ignore[override]
        return None

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> None:  # type: ignore[override]
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass  # kopf stores one only after a change handler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler logs must not become Kubernetes Events on every pod; warnings and errors still do.
    settings.posting.level = logging.WARNING
    # Event handlers store no progress; should any handler ever need some, keep it in
    # annotations and out of the endpoint's status, which belongs to the operator.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 600


@kopf.on.login()
def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    # kopf's own discovery reads only the environment: give it the operator's credentials
    # (credentials.py), so that --kubeconfig counts for both. Called again after a 401, which
    # re-reads a rotated service-account token.
    configuration = memo.cluster.client.configuration
    scheme, token = credentials.bearer_token(configuration)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def endpoint_event(
    event: dict[str, Any], namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    deleted = event.get("type") == "DELETED"
    memo.view.endpoint_seen(event["object"], deleted=deleted)
    if deleted:
        memo.controller.forget(namespace, name)  # the garbage collector removes what it owned
    else:
        memo.controller.trigger(namespace, name)


# Pods (group members, staging pods), nodes, Services, PDBs and revisions are watched by
# view.py, which triggers the endpoints a change concerns (and the ones waiting for GPUs when
# some are freed). kopf watches no pods: its pipeline costs the event loop about 2 ms per pod
# event (a deep copy of the pod among it), and the view's watch shows them all already.


@kopf.on.probe(id="endpoints")
def endpoints_probe(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.controller.endpoints)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.controller.stop()
    memo.view.stop()
    memo.cluster.close()
