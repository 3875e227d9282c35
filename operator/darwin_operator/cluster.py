"""Every read and write of the Kubernetes API, in one place.

Requests go through the official client's connection handling (auth, TLS, kubeconfig) but send
and receive plain JSON dicts: the operator reads a lot of pods, and skipping the client's model
classes keeps that cheap. Blocking calls run in a thread pool of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import kubernetes.client

from darwin_operator import api, metrics, vocabulary, writes
from darwin_operator.credentials import load_configuration
from darwin_operator.events import EventNote
from darwin_operator.priority_pool import LATER, NORMAL, SOON, URGENT, PriorityPool
from darwin_operator.render import held_to
from darwin_operator.vocabulary import SCHEDULING_GATE, format_time

log = logging.getLogger(__name__)

FIELD_MANAGER = "darwin-operator"
_ENDPOINTS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{ns}}/{api.PLURAL}"
_PATHS = {  # kind -> collection path of the objects the operator applies
    "Service": "/api/v1/namespaces/{ns}/services",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
}
_REVISIONS = "/apis/apps/v1/namespaces/{ns}/controllerrevisions"
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


# Grace period of the operator's own deletions: the preStop sleep and a clean exit of vLLM.
OPERATOR_DELETE_GRACE_SECONDS = 30


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def refused(self) -> bool:
        """The API server refused the request for a reason a person must fix (Pod Security, a
        quota, a webhook, an invalid object), not one that passes by itself: gone (404), a
        conflict (409) or throttling (429)."""
        return 400 <= self.status < 500 and self.status not in (404, 409, 429)


def api_verb(method: str, path: str) -> str:
    """The Kubernetes verb of a request (get or list for a GET, by whether the path names one
    object or a collection), for the bounded `verb` label of API error counts."""
    method = method.upper()
    if method != "GET":
        return {"POST": "create", "PUT": "update"}.get(method, method.lower())
    parts = [p for p in path.split("?")[0].split("/") if p]
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # /api/v1 or /apis/GROUP/VERSION
    if len(parts) > 2 and parts[0] == "namespaces":
        parts = parts[2:]
    return "list" if len(parts) == 1 else "get"


def load_api_client(
    kubeconfig: str | None = None, pool_size: int = 32
) -> kubernetes.client.ApiClient:
    """An ApiClient with the credentials credentials.py finds (raises CredentialsError)."""
    configuration = load_configuration(kubeconfig)
    configuration.connection_pool_maxsize = pool_size
    return kubernetes.client.ApiClient(configuration)


class Cluster:
    def __init__(
        self, client: kubernetes.client.ApiClient, workers: int = 16, namespaces: Sequence[str] = ()
    ) -> None:
        self.client = client
        self.namespaces = tuple(namespaces)  # empty: the operator serves the whole cluster
        self._cluster_pods_readable = True
        self._pool = PriorityPool(workers, "k8s-api")
        self._instance = socket.gethostname()
        # Told of every object a write returns (view.py keeps its copy current with it).
        self.on_written: Callable[[str, Mapping[str, Any]], None] = lambda kind, obj: None

    def close(self) -> None:
        self._pool.shutdown()

    # ---- transport ----

    def request_sync(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        fine: Collection[int] = (),
    ) -> dict[str, Any] | None:
        """The response body; an error status raises ApiError, unless it is one of `fine`, the
        answers that are fine where the request is made (404 when deleting a pod that is gone,
        409 when creating one that exists): then None."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=60
            )
        except Exception:
            metrics.API_ERRORS.labels(api_verb(method, path), "0").inc()
            raise
        data = response.read()
        payload = json.loads(data) if data else {}
        if not 200 <= response.status < 300:
            metrics.API_ERRORS.labels(api_verb(method, path), str(response.status)).inc()
            if response.status in fine:
                return None
            raise ApiError(
                response.status,
                payload.get("reason", "") if isinstance(payload, dict) else "",
                payload.get("message", str(data[:200])) if isinstance(payload, dict) else "",
            )
        return payload

    def watch_sync(
        self, path: str, query: Iterable[tuple[str, str]], timeout: float
    ) -> Iterator[bytes]:
        """The events of a watch, one JSON line each, until the server ends it (a blocking
        generator, for informer.py's watch threads, which parse only what they need)."""
        method, url, headers, _, _ = self.client.param_serialize(
            method="GET",
            resource_path=path,
            query_params=[*query, ("watch", "true")],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method, url, header_params=headers, _request_timeout=(10, timeout)
        )
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                data = raw.read()
                metrics.API_ERRORS.labels("watch", str(response.status)).inc()
                payload = json.loads(data) if data else {}
                raise ApiError(
                    response.status, payload.get("reason", ""), payload.get("message", "")
                )
            for line in raw:
                if line.strip():
                    yield line
        finally:
            raw.release_conn()

    async def request(
        self, method: str, path: str, *, priority: int = NORMAL, **kwargs: Any
    ) -> dict[str, Any] | None:
        """request_sync in the pool's threads; pod writes go first (priority_pool.py)."""
        call = self._pool.submit(priority, lambda: self.request_sync(method, path, **kwargs))
        return await asyncio.wrap_future(call)

    # ---- reads ----

    def check_api(self) -> None:
        """At start: the API server accepts our credentials and serves DarwinEndpoints."""
        served = self.request_sync("GET", f"/apis/{api.GROUP}/{api.VERSION}", fine=[404]) or {}
        if not any(r.get("name") == api.PLURAL for r in served.get("resources") or ()):
            raise ApiError(
                404,
                "NotFound",
                f"{api.PLURAL}.{api.GROUP}/{api.VERSION} is not served: install the CRD first "
                "(crds/, or the Helm chart)",
            )

    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.request("GET", f"{_ENDPOINTS.format(ns=namespace)}/{name}", fine=[404])

    async def endpoint_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"{vocabulary.LABEL_ENDPOINT}={name}"
        result = await self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        )
        return result.get("items") or []

    async def owned_objects(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The endpoint's Services and PDB (labelled with the endpoint), with their kind set."""
        selector = [("labelSelector", f"{vocabulary.LABEL_ENDPOINT}={name}")]
        lists = await asyncio.gather(
            *(
                self.request("GET", path.format(ns=namespace), query=selector)
                for path in _PATHS.values()
            )
        )
        objects = []
        for kind, listing in zip(_PATHS, lists, strict=True):
            for item in listing.get("items") or []:
                item["kind"] = kind
                objects.append(item)
        return objects

    async def stored_revisions(self, namespace: str, name: str) -> list[dict[str, Any]] | None:
        """The endpoint's ControllerRevisions (revisions.py); None when the operator may not
        list them."""
        selector = [("labelSelector", f"{vocabulary.LABEL_ENDPOINT}={name}")]
        listed = await self.request(
            "GET", _REVISIONS.format(ns=namespace), query=selector, fine=[403]
        )
        return None if listed is None else listed.get("items") or []

    async def secret_exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists, asking for its metadata only (never its data).
        None when the operator may not look (then pods report the problem themselves)."""
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        try:
            return await self.request("GET", path, accept=_METADATA_ONLY, fine=[404]) is not None
        except ApiError as e:
            if e.status == 403:
                return None
            raise

    async def staging_pods(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's staging and prune pods (weights.py): the record of staged weights."""
        selector = f"{vocabulary.LABEL_ROLE} in (staging,prune)"
        result = await self.request(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        )
        return result.get("items") or []

    async def claim_exists(self, namespace: str, name: str) -> bool | None:
        """Whether the PersistentVolumeClaim exists; None when the operator may not look."""
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        try:
            return await self.request("GET", path, fine=[404]) is not None
        except ApiError as e:
            if e.status == 403:
                return None
            raise

    async def add_pod_owner(self, namespace: str, name: str, owner: Mapping[str, Any]) -> None:
        """Add an owner to a pod (an endpoint sharing a staged copy); one that is gone is fine."""
        patch = [{"op": "add", "path": "/metadata/ownerReferences/-", "value": dict(owner)}]
        await self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}",
            body=patch,
            content_type="application/json-patch+json",
            fine=[404, 422],
        )

    async def list_nodes(self) -> list[dict[str, Any]] | None:
        """Every node (for the health of the nodes holding group members); None when the
        operator may not list nodes."""
        listed = await self.request("GET", "/api/v1/nodes", fine=[403])
        return None if listed is None else listed.get("items") or []

    async def get_node(self, name: str) -> dict[str, Any] | None:
        return await self.request("GET", f"/api/v1/nodes/{name}", fine=[404])

    async def capacity_inputs(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All nodes and all non-terminal pods, read fresh (no cache) for gang admission."""
        nodes, pods = await asyncio.gather(
            self.request("GET", "/api/v1/nodes"), self._non_terminal_pods()
        )
        return nodes.get("items") or [], pods

    async def _non_terminal_pods(self) -> list[dict[str, Any]]:
        """Pods of every namespace when allowed. A namespaced operator may be allowed its own
        namespaces only (the chart's namespaced RBAC): then GPUs held by pods elsewhere look
        free, and a group admitted onto them stays unschedulable until the scheduling timeout
        gates it again."""
        query = [("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed")]
        if self._cluster_pods_readable:
            try:
                return (await self.request("GET", "/api/v1/pods", query=query)).get("items") or []
            except ApiError as e:
                if e.status != 403 or not self.namespaces:
                    raise
                self._cluster_pods_readable = False
                log.info("no cluster-wide pod reads: GPUs are counted in %s only", self.namespaces)
        listings = await asyncio.gather(
            *(
                self.request("GET", f"/api/v1/namespaces/{ns}/pods", query=query)
                for ns in self.namespaces
            )
        )
        return [pod for listing in listings for pod in listing.get("items") or []]

    # ---- writes ----

    async def write_pods(self, namespace: str, pod_writes: Iterable[writes.PodWrite]) -> int:
        """Send pod writes (writes.py) concurrently; returns how many took effect (a create of a
        pod that exists, or a patch or delete of one that is gone, does not)."""
        pods = f"/api/v1/namespaces/{namespace}/pods"

        async def send(write: writes.PodWrite) -> dict[str, Any] | None:
            answer = await ask(write)
            if answer is not None:  # the view learns of it at once, before the watch's echo
                self.on_written("Pod", answer)
            return answer

        async def ask(write: writes.PodWrite) -> dict[str, Any] | None:
            match write:
                case writes.CreatePod(body=body):
                    return await self.request("POST", pods, body=body, fine=[409], priority=URGENT)
                case writes.DeletePod(name=name):
                    # Only groups it drained or found broken: not the pods' long grace period,
                    # which is for evictions (engine.TERMINATION_GRACE_SECONDS).
                    grace = [("gracePeriodSeconds", str(OPERATOR_DELETE_GRACE_SECONDS))]
                    return await self.request(
                        "DELETE", f"{pods}/{name}", query=grace, fine=[404], priority=URGENT
                    )
                case writes.PatchPod(name=name, ungate=True):
                    # a strategic merge patch: the one way to remove one scheduling gate
                    patch = {
                        "metadata": _meta_patch(write),
                        "spec": {
                            "schedulingGates": [{"$patch": "delete", "name": SCHEDULING_GATE}]
                        },
                    }
                    if write.node:
                        patch["spec"]["affinity"] = held_to(write.node)
                    return await self.request(
                        "PATCH",
                        f"{pods}/{name}",
                        body=patch,
                        content_type="application/strategic-merge-patch+json",
                        fine=[404],
                        priority=SOON,
                    )
                case writes.PatchPod(name=name):
                    return await self.request(
                        "PATCH",
                        f"{pods}/{name}",
                        body={"metadata": _meta_patch(write)},
                        content_type="application/merge-patch+json",
                        fine=[404],
                        priority=URGENT,
                    )
            raise TypeError(write)

        # Every write is answered before the first failure is raised: a caller undoing a
        # write that failed part way (reconciler._undo_creation) must not race the rest.
        answers = await asyncio.gather(*(send(w) for w in pod_writes), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return sum(answer is not None for answer in answers)

    async def store_revision(self, obj: Mapping[str, Any]) -> None:
        """Create a ControllerRevision; one that exists already is left as it is (immutable)."""
        path = _REVISIONS.format(ns=obj["metadata"]["namespace"])
        stored = await self.request("POST", path, body=obj, fine=[409])
        if stored is not None:
            self.on_written("ControllerRevision", stored)

    async def prune_revision(self, namespace: str, name: str) -> None:
        await self.request("DELETE", f"{_REVISIONS.format(ns=namespace)}/{name}", fine=[404])

    async def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply: creates the object or brings the fields we own to `obj`."""
        meta = obj["metadata"]
        path = f"{_PATHS[obj['kind']].format(ns=meta['namespace'])}/{meta['name']}"
        applied = await self.request(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        if applied is not None:
            self.on_written(obj["kind"], applied)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patched = await self.request(
            "PATCH",
            f"{_ENDPOINTS.format(ns=namespace)}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )
        if patched is not None:
            self.on_written(api.KIND, patched)

    async def post_event(self, endpoint: Mapping[str, Any], note: EventNote, now: float) -> None:
        meta = endpoint["metadata"]
        stamp = format_time(now)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "reason": note.reason.value,
            "message": note.message[:1024],
            "type": note.type,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self.request(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event, priority=LATER
        )

    async def request_restart(self, namespace: str, name: str, now: float) -> None:
        """Ask for a rolling restart: a new restartedAt annotation changes the revision."""
        patch = {
            "metadata": {"annotations": {vocabulary.ANNOTATION_RESTARTED_AT: format_time(now)}}
        }
        await self.request(
            "PATCH",
            f"{_ENDPOINTS.format(ns=namespace)}/{name}",
            body=patch,
            content_type="application/merge-patch+json",
        )


def _meta_patch(write: writes.PatchPod) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if write.labels:
        meta["labels"] = dict(write.labels)
    if write.annotations:
        meta["annotations"] = dict(write.annotations)
    return meta
