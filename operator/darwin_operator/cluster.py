"""Every read and write of the Kubernetes API, in one place.

Requests go through the official client's connection handling (auth, TLS, kubeconfig) but send
and receive plain JSON dicts: the operator reads a lot of pods, and skipping the client's model
classes keeps that cheap. Blocking calls run in a thread pool of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes.client
import kubernetes.config

from darwin_operator import api, metrics, vocabulary
from darwin_operator.events import EventNote
from darwin_operator.logs import endpoint_log
from darwin_operator.vocabulary import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_DELETE_REASON,
    ANNOTATION_DRAIN_STARTED_AT,
    format_time,
)

log = logging.getLogger(__name__)

FIELD_MANAGER = "darwin-operator"
_ENDPOINTS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{ns}}/{api.PLURAL}"
_PATHS = {  # kind -> collection path of the objects the operator applies
    "Service": "/api/v1/namespaces/{ns}/services",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
}
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


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
    """An ApiClient from a kubeconfig (argument, $KUBECONFIG, ~/.kube/config) or in-cluster."""
    configuration = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path or os.path.exists(os.path.expanduser("~/.kube/config")):
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return kubernetes.client.ApiClient(configuration)


class Cluster:
    def __init__(
        self, client: kubernetes.client.ApiClient, workers: int = 16, namespaces: Sequence[str] = ()
    ) -> None:
        self.client = client
        self.namespaces = tuple(namespaces)  # empty: the operator serves the whole cluster
        self._cluster_pods_readable = True
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="k8s-api")
        self._instance = socket.gethostname()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

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
    ) -> dict[str, Any]:
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
            raise ApiError(
                response.status,
                payload.get("reason", "") if isinstance(payload, dict) else "",
                payload.get("message", str(data[:200])) if isinstance(payload, dict) else "",
            )
        return payload

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: self.request_sync(method, path, **kwargs)
        )

    # ---- reads ----

    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", f"{_ENDPOINTS.format(ns=namespace)}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

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

    async def secret_exists(self, namespace: str, name: str) -> bool | None:
        """Whether the Secret exists, asking for its metadata only (never its data).
        None when the operator may not look (then pods report the problem themselves)."""
        try:
            await self.request(
                "GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", accept=_METADATA_ONLY
            )
            return True
        except ApiError as e:
            if e.status == 404:
                return False
            if e.status == 403:
                return None
            raise

    async def list_nodes(self) -> list[dict[str, Any]] | None:
        """Every node (for the health of the nodes holding group members); None when the
        operator may not list nodes."""
        try:
            return (await self.request("GET", "/api/v1/nodes")).get("items") or []
        except ApiError as e:
            if e.status == 403:
                return None
            raise

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

    async def create_pods(self, namespace: str, pods: Iterable[Mapping[str, Any]]) -> int:
        """Create the pods that do not exist yet; returns how many were created."""

        async def create(pod: Mapping[str, Any]) -> int:
            try:
                await self.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)
                return 1
            except ApiError as e:
                if e.status == 409:  # AlreadyExists: a repeated create is harmless
                    return 0
                raise

        return sum(await asyncio.gather(*(create(p) for p in pods)))

    async def ungate_pods(self, namespace: str, names: Iterable[str], now: float) -> int:
        """Lift our scheduling gate, stamping when, so a scheduling timeout survives restarts."""
        patch = {
            "metadata": {"annotations": {ANNOTATION_ADMITTED_AT: format_time(now)}},
            "spec": {"schedulingGates": [{"$patch": "delete", "name": vocabulary.SCHEDULING_GATE}]},
        }

        async def ungate(name: str) -> int:
            try:
                await self.request(
                    "PATCH",
                    f"/api/v1/namespaces/{namespace}/pods/{name}",
                    body=patch,
                    content_type="application/strategic-merge-patch+json",
                )
                return 1
            except ApiError as e:
                if e.status == 404:
                    return 0
                raise

        return sum(await asyncio.gather(*(ungate(n) for n in names)))

    async def set_serving(self, namespace: str, pod: str, serving: bool, now: float) -> None:
        """Move a leader in or out of the client Service; the drain start is kept on the pod,
        to the millisecond (drainSeconds is a guarantee: no second may be lost to rounding)."""
        started = None if serving else format_time(now)
        patch = {
            "metadata": {
                "labels": {vocabulary.LABEL_SERVING: "true" if serving else "false"},
                "annotations": {ANNOTATION_DRAIN_STARTED_AT: started},
            }
        }
        try:
            await self.request(
                "PATCH",
                f"/api/v1/namespaces/{namespace}/pods/{pod}",
                body=patch,
                content_type="application/merge-patch+json",
            )
        except ApiError as e:
            if e.status != 404:
                raise

    async def annotate_pods(
        self, namespace: str, names: Iterable[str], annotations: Mapping[str, str]
    ) -> int:
        patch = {"metadata": {"annotations": dict(annotations)}}

        async def annotate(name: str) -> int:
            try:
                await self.request(
                    "PATCH",
                    f"/api/v1/namespaces/{namespace}/pods/{name}",
                    body=patch,
                    content_type="application/merge-patch+json",
                )
                return 1
            except ApiError as e:
                if e.status == 404:
                    return 0
                raise

        return sum(await asyncio.gather(*(annotate(n) for n in names)))

    async def delete_pods(self, namespace: str, names: Iterable[str], reason: str = "") -> int:
        """Delete pods of one group. With a reason, every pod is stamped with it first, before
        any is deleted: pods that lose a member without the stamp were deleted by someone else
        (health.py), also when the operator is killed part way through its deletion."""
        names = list(names)
        if reason:
            await self.annotate_pods(namespace, names, {ANNOTATION_DELETE_REASON: reason})

        async def delete(name: str) -> int:
            try:
                await self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
                return 1
            except ApiError as e:
                if e.status == 404:
                    return 0
                raise

        return sum(await asyncio.gather(*(delete(n) for n in names)))

    async def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply: creates the object or brings the fields we own to `obj`."""
        meta = obj["metadata"]
        path = f"{_PATHS[obj['kind']].format(ns=meta['namespace'])}/{meta['name']}"
        await self.request(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self.request(
            "PATCH",
            f"{_ENDPOINTS.format(ns=namespace)}/{name}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

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
        try:
            await self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=event)
        except ApiError as e:  # an event is best effort; never fail a reconcile over it
            endpoint_log(log, meta["namespace"], meta["name"]).warning(
                "could not post event %s: %s", note.reason.value, e
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
