"""The stand-in's engine: alive, hung, dead or draining, and the requests in flight.

A "generation" is a wait of the request's delay that ends early when the engine dies and never
ends while it is hung; its text is canned. Requests are counted in flight from the moment they
are taken until their response has been written, which is what a drain waits for.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from vllm_standin import log
from vllm_standin.metrics import Metrics

WORDS = ("stand-in", "tokens", "from", "a", "replica", "group", "of", "darwin")


class EngineDead(Exception):
    pass


class Draining(Exception):
    pass


class Engine:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.changed = threading.Condition()
        self.dead_reason: str | None = None
        self.hung = False
        self.frozen = False
        self.draining = False
        self.in_flight = 0

    @property
    def healthy(self) -> bool:
        # vLLM's /health only asks whether the engine died: a draining engine is healthy.
        return self.dead_reason is None

    def die(self, reason: str) -> bool:
        """Mark the engine dead; False if it already was."""
        with self.changed:
            if self.dead_reason is not None:
                return False
            self.dead_reason = reason
            self.changed.notify_all()
        log.error(f"Engine core died: {reason}")
        return True

    def hang(self, why: str) -> None:
        with self.changed:
            self.hung = True
        log.warning(f"engine hung: {why}")

    def freeze(self) -> None:
        with self.changed:
            self.frozen = True
        log.warning("process frozen: nothing answers from now on")

    def drain(self) -> None:
        with self.changed:
            self.draining = True
            self.changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.in_flight == 0, timeout)

    @contextmanager
    def request(self):
        """Hold one request in flight (raises EngineDead or Draining when none is taken)."""
        with self.changed:
            if self.dead_reason is not None:
                raise EngineDead(self.dead_reason)
            if self.draining:
                raise Draining()
            self.in_flight += 1
        try:
            yield
        finally:
            with self.changed:
                self.in_flight -= 1
                self.changed.notify_all()

    def generate(self, prompt_tokens: int, max_tokens: int, delay: float) -> tuple[str, str]:
        """(text, finish_reason) after `delay` seconds, unless the engine dies or hangs first."""
        start = time.monotonic()
        self.metrics.started()
        try:
            with self.changed:
                while True:
                    if self.dead_reason is not None:
                        raise EngineDead(self.dead_reason)
                    left = start + delay - time.monotonic()
                    if not self.hung and left <= 0:
                        break
                    self.changed.wait(min(left, 0.5) if left > 0 else 0.5)
        except BaseException:
            self.metrics.aborted()
            raise
        text = " ".join(WORDS[i % len(WORDS)] for i in range(max_tokens))
        self.metrics.finished(prompt_tokens, max_tokens, "length", time.monotonic() - start)
        return text, "length"
