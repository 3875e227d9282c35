"""Multi-node rendezvous of one vLLM instance: rank 0 waits on --master-port for every rank.

Like torch.distributed's TCPStore: the leader serves the store on --master-port and waits up to
the timeout for --nnodes - 1 ranks (torch: "Timed out after N seconds waiting for clients. k/n
clients joined."); a rank keeps trying to connect until its own timeout. After the start every
rank keeps its connection: a rank whose process dies closes it, and the leader's engine dies
with it, as a dead NCCL peer kills a vLLM engine. Messages are JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

from vllm_standin import log


class RendezvousError(Exception):
    pass


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def _lines(sock: socket.socket):
    """The messages read from `sock` until it closes."""
    buffer = b""
    while True:
        try:
            data = sock.recv(4096)
        except OSError:
            return
        if not data:
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield json.loads(line)


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class Leader:
    """Rank 0. on_event(kind, rank) is called with "lost" (its connection closed) or "hung"."""

    def __init__(self, master_addr: str, port: int, nnodes: int, timeout: float, on_event):
        # torch resolves --master-addr on every rank, the leader included.
        try:
            socket.getaddrinfo(master_addr, port)
        except OSError as e:
            raise RendezvousError(f"cannot resolve --master-addr {master_addr}: {e}") from e
        self.nnodes, self.timeout, self.on_event = nnodes, timeout, on_event
        self.server = socket.create_server(("", port), reuse_port=False)
        self.ranks: dict[int, socket.socket] = {}
        self.loaded: set[int] = set()
        self.changed = threading.Condition()

    def gather(self) -> None:
        """Wait until every rank has joined, then tell them all to start."""
        deadline = time.monotonic() + self.timeout
        while len(self.ranks) < self.nnodes - 1:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RendezvousError(
                    f"Timed out after {self.timeout:g} seconds waiting for clients. "
                    f"{len(self.ranks) + 1}/{self.nnodes} clients joined."
                )
            self.server.settimeout(min(left, 1.0))
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self._admit(conn)
        for rank, conn in self.ranks.items():
            _send(conn, {"start": True})
            threading.Thread(target=self._follow, args=(rank, conn), daemon=True).start()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            hello = next(_lines(conn), None)
        except (OSError, ValueError):
            hello = None
        rank = hello.get("rank") if isinstance(hello, dict) else None
        problem = None
        if hello is None or not isinstance(rank, int):
            problem = "no hello"
        elif hello.get("nnodes") != self.nnodes:
            problem = f"rank {rank} says --nnodes {hello.get('nnodes')}, the leader {self.nnodes}"
        elif not 0 < rank < self.nnodes or rank in self.ranks:
            problem = f"rank {rank} is not a free rank of 1..{self.nnodes - 1}"
        if problem:
            log.warning(f"rendezvous: refused a client: {problem}")
            with contextlib.suppress(OSError):
                _send(conn, {"error": problem})
            conn.close()
            return
        conn.settimeout(None)
        _keepalive(conn)
        self.ranks[rank] = conn
        log.info(f"rendezvous: rank {rank} joined ({len(self.ranks) + 1}/{self.nnodes})")

    def _follow(self, rank: int, conn: socket.socket) -> None:
        for message in _lines(conn):
            if message.get("loaded"):
                with self.changed:
                    self.loaded.add(rank)
                    self.changed.notify_all()
            elif message.get("hung"):
                self.on_event("hung", rank)
        self.on_event("lost", rank)

    def wait_loaded(self, timeout: float) -> None:
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.loaded) == self.nnodes - 1, timeout)
        if not ok:
            missing = sorted(set(range(1, self.nnodes)) - self.loaded)
            raise RendezvousError(
                f"Timed out after {timeout:g} s waiting for ranks {missing} to load "
                "(VLLM_ENGINE_READY_TIMEOUT_S)"
            )


class Worker:
    """A rank > 0: joins the leader, then holds the connection until one side ends."""

    def __init__(self, master_addr: str, port: int, rank: int, nnodes: int, timeout: float):
        self.address, self.rank, self.nnodes, self.timeout = (
            (master_addr, port),
            rank,
            nnodes,
            timeout,
        )
        self.conn: socket.socket | None = None

    def join(self) -> None:
        deadline = time.monotonic() + self.timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                conn = socket.create_connection(self.address, timeout=2)
            except OSError as e:  # not listening yet, or its name not yet in DNS
                last_error = e
                time.sleep(0.5)
                continue
            _send(conn, {"rank": self.rank, "nnodes": self.nnodes})
            conn.settimeout(max(deadline - time.monotonic(), 0.1))
            try:
                reply = next(_lines(conn), None)
            except (OSError, ValueError) as e:
                reply, last_error = None, e
            if isinstance(reply, dict) and reply.get("start"):
                conn.settimeout(None)
                _keepalive(conn)
                self.conn = conn
                return
            conn.close()
            if isinstance(reply, dict) and "error" in reply:
                raise RendezvousError(f"the leader refused rank {self.rank}: {reply['error']}")
            time.sleep(0.5)
        raise RendezvousError(
            f"The client socket has timed out after {self.timeout:g}s while trying to connect "
            f"to {self.address}: {last_error}"
        )

    def send(self, message: dict) -> None:
        assert self.conn is not None
        _send(self.conn, message)

    def wait_until_leader_gone(self) -> None:
        assert self.conn is not None
        for _ in _lines(self.conn):
            pass
