"""The HTTP side: the hub API routes `hf download` and `hf cache verify` call, as the hub answers.

Routes (huggingface_hub 2.4, see README.md):
  GET  /api/models/{repo}[/revision/{rev}]         model info; `sha` is the commit
  GET  /api/models/{repo}/tree/{rev}[/{path}]      file list with sizes, blob ids, LFS sha256
  HEAD /{repo}/resolve/{rev}/{file}                X-Repo-Commit, ETag, X-Linked-Etag/-Size
  GET  /{repo}/resolve/{rev}/{file}                the bytes; Range -> 206 + Content-Range
  GET  /_standin/stats                             what was served (for tests)
Errors carry the hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo)
and X-Error-Message, with its status codes (401 for a private repo without a valid token).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from .repo import Revision

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
CHUNK = 64 * 1024


class Throttle:
    """One link shared by every connection: bytes leave no faster than bytes_per_second."""

    def __init__(self, bytes_per_second: float):
        self.rate = bytes_per_second
        self.lock = threading.Lock()
        self.next_free = time.monotonic()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            start = max(time.monotonic(), self.next_free)
            self.next_free = start + n / self.rate
            until = self.next_free
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class Faults:
    drop_after_bytes: int | None = None  # close the connection serving byte N (once)
    die_after_bytes: int | None = None  # the whole process exits at byte N
    corrupt: str | None = None  # this file is served with its last byte changed
    dropped: bool = False


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_served: int = 0
    active: int = 0  # responses still sending (a killed client's last ones end with an error)
    requests: list[dict] = field(default_factory=list)

    def record(self, **request) -> None:
        with self.lock:
            self.requests.append(request)

    def as_json(self) -> dict:
        with self.lock:
            return {
                "bytes_served": self.bytes_served,
                "active": self.active,
                "requests": list(self.requests),
            }


@dataclass
class Hub:
    model: str
    revisions: dict[str, Revision]  # by name
    token: str | None = None  # set: the repo is private (or gated) and needs this token
    gated: bool = False  # with token: metadata public, files need the token (403 for others)
    throttle: Throttle = field(default_factory=lambda: Throttle(0))
    faults: Faults = field(default_factory=Faults)
    stats: Stats = field(default_factory=Stats)

    def resolve(self, revision: str) -> Revision | None:
        if revision in self.revisions:
            return self.revisions[revision]
        for rev in self.revisions.values():
            if COMMIT_RE.match(revision) and rev.commit == revision:
                return rev
        return None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Dropped(Exception):
    """The connection is closed on purpose (fault)."""


def make_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "hub-standin"

        def log_message(self, format, *args):  # one line per request on stderr
            print(f"{self.address_string()} {format % args}", flush=True)

        def do_GET(self):
            self.dispatch(body=True)

        def do_HEAD(self):
            self.dispatch(body=False)

        # ---- routing ----

        def dispatch(self, body: bool) -> None:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            try:
                if parts[:2] == ["_standin", "stats"]:
                    return self.send_json(200, hub.stats.as_json(), body)
                if parts[:2] == ["api", "models"]:
                    return self.api(parts[2:], body)
                if "resolve" in parts:
                    i = parts.index("resolve")
                    repo, rest = "/".join(parts[:i]), parts[i + 1 :]
                    if len(rest) >= 2:
                        return self.resolve_file(repo, rest[0], "/".join(rest[1:]), body)
                raise HubError(404, None, "Not Found")
            except HubError as e:
                payload = {"error": e.message}
                headers = dict(e.headers)
                if e.code:
                    headers["X-Error-Code"] = e.code
                headers["X-Error-Message"] = e.message
                self.send_json(e.status, payload, body, headers)
            except (Dropped, BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def split_repo(self, parts: list[str]) -> tuple[str, list[str]]:
            repo_parts = hub.model.split("/")
            if parts[: len(repo_parts)] != repo_parts:
                self.check_auth(file_access=False)
                raise HubError(404, "RepoNotFound", "Repository not found")
            return hub.model, parts[len(repo_parts) :]

        def api(self, parts: list[str], body: bool) -> None:
            _, rest = self.split_repo(parts)
            self.check_auth(file_access=False)
            if not rest:
                rest = ["revision", "main"]
            if rest[0] == "revision" and len(rest) == 2:
                rev = self.revision(rest[1])
                return self.send_json(200, self.model_info(rev), body)
            if rest[0] == "tree" and len(rest) >= 2:
                rev = self.revision(rest[1])
                prefix = "/".join(rest[2:])
                entries = [
                    f.tree_entry()
                    for f in rev.files.values()
                    if not prefix or f.path.startswith(prefix + "/")
                ]
                return self.send_json(200, entries, body)
            raise HubError(404, None, "Not Found")

        def model_info(self, rev: Revision) -> dict:
            return {
                "_id": rev.commit[:24],
                "id": hub.model,
                "modelId": hub.model,
                "author": hub.model.split("/")[0],
                "sha": rev.commit,
                "private": hub.token is not None and not hub.gated,
                "gated": "manual" if hub.gated else False,
                "disabled": False,
                "library_name": "transformers",
                "tags": ["safetensors"],
                "siblings": [{"rfilename": path} for path in rev.files],
            }

        # ---- auth, as the hub answers ----

        def check_auth(self, file_access: bool) -> None:
            if hub.token is None:
                return
            header = self.headers.get("Authorization") or ""
            given = header.removeprefix("Bearer ").strip() if header else None
            if given == hub.token:
                return
            if hub.gated:
                if not file_access:
                    return
                if given:
                    raise HubError(
                        403,
                        "GatedRepo",
                        f"Access to model {hub.model} is restricted and you are not in the"
                        " authorized list.",
                    )
                raise HubError(
                    401,
                    "GatedRepo",
                    f"Access to model {hub.model} is restricted. You must have access to it and"
                    " be authenticated to access it. Please log in.",
                )
            if given:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            raise HubError(401, "RepoNotFound", "Invalid username or password.")

        def revision(self, name: str) -> Revision:
            rev = hub.resolve(name)
            if rev is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {name}")
            return rev

        # ---- files ----

        def resolve_file(self, repo: str, rev_name: str, path: str, body: bool) -> None:
            self.split_repo(repo.split("/"))
            self.check_auth(file_access=False)
            rev = self.revision(rev_name)
            self.check_auth(file_access=True)
            entry = rev.files.get(path)
            if entry is None:
                raise HubError(
                    404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": rev.commit}
                )
            start, end, status = 0, entry.size - 1, 200
            requested = self.headers.get("Range")
            if requested:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", requested.strip())
                if not m or int(m.group(1)) >= entry.size:
                    raise HubError(416, None, "Range Not Satisfiable")
                start = int(m.group(1))
                end = min(int(m.group(2)), entry.size - 1) if m.group(2) else entry.size - 1
                status = 206
            headers = {
                "X-Repo-Commit": rev.commit,
                "ETag": f'"{entry.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(end - start + 1),
            }
            if entry.lfs:
                headers["X-Linked-Etag"] = f'"{entry.sha256}"'
                headers["X-Linked-Size"] = str(entry.size)
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            hub.stats.record(method=self.command, path=path, range=requested, status=status)
            self.send_bytes(rev, path, start, end, body)

        def send_bytes(self, rev: Revision, path: str, start: int, end: int, body: bool) -> None:
            if not body:
                return
            last = rev.files[path].size - 1
            with hub.stats.lock:
                hub.stats.active += 1
            try:
                with open(rev.root / path, "rb") as f:
                    f.seek(start)
                    left = end - start + 1
                    while left:
                        chunk = f.read(min(CHUNK, left))
                        if path == hub.faults.corrupt and end == last and left == len(chunk):
                            chunk = chunk[:-1] + bytes([chunk[-1] ^ 0xFF])
                        hub.throttle.take(len(chunk))
                        self.apply_faults(chunk, path, end - left + 1)
                        self.wfile.write(chunk)
                        left -= len(chunk)
            finally:
                with hub.stats.lock:
                    hub.stats.active -= 1

        def apply_faults(self, chunk: bytes, path: str, position: int) -> None:
            """Counts the chunk as served, or ends the process or the connection part way."""
            faults = hub.faults
            with hub.stats.lock:
                before = hub.stats.bytes_served
                after = before + len(chunk)
                die = faults.die_after_bytes is not None and after >= faults.die_after_bytes
                drop = (
                    faults.drop_after_bytes is not None
                    and not faults.dropped
                    and after >= faults.drop_after_bytes
                )
                limit = faults.die_after_bytes if die else faults.drop_after_bytes
                keep = max(0, limit - before) if die or drop else len(chunk)
                hub.stats.bytes_served += keep
                faults.dropped = faults.dropped or drop
            if not (die or drop):
                return
            self.wfile.write(chunk[:keep])
            self.wfile.flush()
            if die:
                print(f"fault: the hub dies after {limit} bytes", flush=True)
                os._exit(3)
            hub.stats.record(dropped=path, at=position + keep)
            print(f"fault: dropped a connection at byte {limit}", flush=True)
            raise Dropped()

        # ---- plumbing ----

        def send_json(self, status: int, payload, body: bool, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def serve(hub: Hub, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(hub))
    server.daemon_threads = True
    return server
