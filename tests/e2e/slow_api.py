"""An API server slowed down, as a client sees one that is overloaded: a TCP proxy in front of
the real one that holds everything the server sends for a fixed latency (requests, watches and
TLS pass through untouched; the server's certificate names 127.0.0.1, so only the port differs).
For tests and benchmarks of what the operator does while its requests hang."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from pathlib import Path

import yaml


class SlowApi:
    def __init__(self, kubeconfig: str, latency: float) -> None:
        config = yaml.safe_load(Path(kubeconfig).read_text())
        self._config = config
        server = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
        self.upstream = (server.hostname or "127.0.0.1", server.port or 443)
        self.latency = latency
        self.port = 0
        self.held = 0  # responses (chunks of) held back right now: requests hanging
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    def start(self) -> SlowApi:
        threading.Thread(target=self._run, name="slow-api", daemon=True).start()
        assert self._ready.wait(10), "the slow API proxy did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    async def _close(self) -> None:
        self._server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def kubeconfig(self, path: Path) -> str:
        """The same kubeconfig, through the proxy."""
        config = yaml.safe_load(yaml.safe_dump(self._config))
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _connection(self, client_in, client_out) -> None:
        try:
            server_in, server_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_out.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # stop(): the connection just ends
            await asyncio.gather(
                self._pipe(client_in, server_out, 0.0),
                self._pipe(server_in, client_out, self.latency),
                return_exceptions=True,
            )

    async def _pipe(self, reader, writer, latency: float) -> None:
        """Copy reader to writer, each chunk `latency` seconds after it arrived, in order."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        delayed = 1 if latency else 0

        async def forward() -> None:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                self.held -= delayed
                writer.write(data)
                await writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            while data := await reader.read(65536):
                self.held += delayed
                chunks.put_nowait((loop.time() + latency, data))
        except OSError:
            pass
        finally:
            chunks.put_nowait((0.0, b""))
            try:
                await forwarding
            finally:
                writer.close()
