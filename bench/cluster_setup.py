"""What the benchmarks share: the repo's test tooling on the import path, a local cluster (started
here and stopped at the end, or one that is already up), kubectl, CRDs and namespaces, a pod
watch and a process's CPU time.

A benchmark imports this module first: running `python bench/X.py` puts bench/ on the path,
and this module adds two of the roots pytest's `pythonpath` names (the repo, for `tests.*`, and
tests/cluster, whose tools import each other by bare name) so no script edits sys.path itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _root in (REPO / "tests" / "cluster", REPO):
    if str(_root) not in sys.path:
        sys.path.insert(0, str(_root))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from localcluster import Binaries, NodeShape, apply_in_parallel  # noqa: E402
from localcluster import Cluster as LocalCluster  # noqa: E402

from darwin_operator.cluster import Cluster, load_api_client  # noqa: E402

DARWIN_CRDS = REPO / "charts" / "darwin-operator" / "crds"


def add_cluster_arguments(parser: argparse.ArgumentParser, nodes: int) -> None:
    parser.add_argument("--kubeconfig", help="use this cluster instead of starting one")
    parser.add_argument("--nodes", type=int, default=nodes, help="kwok nodes of a started cluster")


@dataclass
class BenchCluster:
    kubeconfig: str
    workdir: Path  # logs of what the benchmark starts
    local: LocalCluster | None  # None: a cluster that was already up

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [str(Binaries.from_cache().kubectl), "--kubeconfig", self.kubeconfig, *args],
            input=input,
            text=True,
            capture_output=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
        return done.stdout

    def apply_items(self, namespace: str, items: list[dict], per_list: int = 25) -> None:
        """Server-side apply of the objects in Lists of `per_list`, several kubectl at once, so
        the benchmark times the operator rather than kubectl handing endpoints over."""
        lists = [
            json.dumps({"apiVersion": "v1", "kind": "List", "items": items[i : i + per_list]})
            for i in range(0, len(items), per_list)
        ]
        kubectl = str(Binaries.from_cache().kubectl)
        apply_in_parallel(kubectl, self.kubeconfig, lists, "-n", namespace)

    def apply_crds(self, path: Path, *names: str, timeout: float = 120) -> None:
        """Server-side apply of a CRD file or directory, then wait until each is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        raw = self.raw(workers=1)
        deadline = time.monotonic() + timeout
        for name in names:
            # polled here: `kubectl wait` fails outright while a large CRD has no conditions yet
            crd = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            while not any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (raw.request_sync("GET", crd).get("status") or {}).get("conditions") or []
            ):
                assert time.monotonic() < deadline, f"CRD {name} not Established"
                time.sleep(0.2)

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(k8s_config.new_client_from_config(self.kubeconfig))

    def raw(self, workers: int = 2) -> Cluster:
        return Cluster(load_api_client(self.kubeconfig), workers=workers)

    def create_namespace(self, name: str) -> str:
        """A namespace, once its default ServiceAccount exists (pods need it)."""
        core = self.core()
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
        deadline = time.monotonic() + 30
        while not any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ):
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.1)
        return name

    def delete_namespace(self, name: str, timeout: float = 300) -> None:
        core = self.core()
        core.delete_namespace(name)
        deadline = time.monotonic() + timeout
        while any(ns.metadata.name == name for ns in core.list_namespace().items):
            assert time.monotonic() < deadline, f"namespace {name} not deleted"
            time.sleep(0.5)

    def component_pid(self, name: str) -> int | None:
        """The pid of a control-plane process of a cluster started here (e.g.
        kube-controller-manager), None for a cluster that was already up."""
        return self.local.state().get("pids", {}).get(name) if self.local else None


@contextmanager
def bench_cluster(
    args: argparse.Namespace, prefix: str, up_timeout: float = 300
) -> Iterator[BenchCluster]:
    """The cluster a benchmark runs on: `--kubeconfig`'s, or one of `--nodes` kwok nodes started
    here and stopped when the block ends, also when the benchmark is stopped with SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    local = None
    kubeconfig = args.kubeconfig
    if not kubeconfig:
        local = LocalCluster(workdir / "cluster")
        # No benchmark loses a node on purpose: Kubernetes' default grace (control_plane.py)
        local.up(args.nodes, NodeShape(), timeout=up_timeout, node_monitor_grace_seconds=50)
        kubeconfig = str(local.kubeconfig)
    try:
        yield BenchCluster(kubeconfig, workdir, local)
    finally:
        if local is not None:
            local.down()


class PodStream:
    """Calls `on_event(type, pod, monotonic time)` for every pod event of a namespace, from a
    thread: polling full pod lists instead would load the API server and this machine's CPUs,
    and skew what is measured. A watch the server cuts short is opened again from the last
    resourceVersion seen, so no event is lost (a benchmark waiting on a dead watch would wait
    for its timeout and fail)."""

    def __init__(
        self, kubeconfig: str, namespace: str, on_event: Callable[[str, dict, float], None]
    ) -> None:
        self._raw = Cluster(load_api_client(kubeconfig), workers=1)  # a connection of its own
        self._path = f"/api/v1/namespaces/{namespace}/pods"
        self._on_event = on_event
        self._stopped = threading.Event()
        self._rv = ""  # of the last event seen: a watch opened again resumes there
        self._response = self._open("")  # open before returning: no event is missed
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, rv: str):
        query = [("watch", "true"), ("allowWatchBookmarks", "true")]
        method, url, headers, _, _ = self._raw.client.param_serialize(
            method="GET",
            resource_path=self._path,
            query_params=query + ([("resourceVersion", rv)] if rv else []),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        return self._raw.client.rest_client.pool_manager.request(
            method, url, headers=headers, preload_content=False, timeout=None
        )

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._read(self._response)
            except Exception as e:  # cut short, or closed by stop()
                if not self._stopped.is_set():
                    print(f"pod watch cut short ({e!r}); resuming", file=sys.stderr)
            if self._stopped.is_set():
                return
            time.sleep(0.1)
            with contextlib.suppress(Exception):
                self._response = self._open(self._rv)

    def _read(self, response) -> None:
        buffer = b""
        for chunk in response.stream(65536):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":  # 410: the events since _rv are gone; start over
                    print(f"pod watch: {obj.get('message')}; watching afresh", file=sys.stderr)
                    self._rv = ""
                    return
                self._rv = obj["metadata"].get("resourceVersion") or self._rv
                if event["type"] != "BOOKMARK":
                    self._on_event(event["type"], obj, time.monotonic())

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(RuntimeError, OSError):  # a stream that had ended already
            self._response.shutdown()  # ends the stream; the connection is not reused


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_REQUESTS = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def apiserver_requests(raw: Cluster) -> Counter:
    """The API server's apiserver_request_total (every client's requests so far), summed by
    (verb, resource, subresource); diff two readings for what happened in between."""
    method, url, headers, _, _ = raw.client.param_serialize(
        method="GET",
        resource_path="/metrics",
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
    )
    text = raw.client.call_api(method, url, header_params=headers, _request_timeout=60)
    counts: Counter = Counter()
    for match in _REQUESTS.finditer(text.read().decode()):
        labels = dict(_LABEL.findall(match["labels"]))
        key = tuple(labels.get(k, "") for k in ("verb", "resource", "subresource"))
        counts[key] += float(match["value"])
    return counts
