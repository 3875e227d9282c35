"""vLLM's OpenAI-compatible HTTP surface, as far as the operator and its tests use it.

GET /health (200 alive, draining included; 503 once the engine died), /v1/models, /metrics,
/version; POST /v1/completions and /v1/chat/completions (non-streaming, canned text). Every
answer to a completion names the pod that served it in the `x-standin-hostname` header and in
`system_fingerprint`. The header `x-standin-delay-seconds` sets one request's generation time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from vllm_standin import VERSION, log
from vllm_standin.engine import Draining, Engine, EngineDead


@dataclass
class Api:
    engine: Engine
    model: str
    served_names: list[str]
    max_model_len: int | None
    request_seconds: float
    hostname: str
    created: int = 0


def _error(code: int, kind: str, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _words(value) -> int:
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content", ""))
    return len(str(value).split())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: Api  # set on the subclass made per server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's names)
        log.info(f"{self.client_address[0]}:{self.client_address[1]} - {format % args}")

    def _freeze_if_frozen(self) -> None:
        while self.api.engine.frozen:  # a frozen process answers nothing, ever
            time.sleep(3600)

    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, document: dict, headers: dict | None = None) -> None:
        self._send(code, json.dumps(document).encode(), "application/json", headers)

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's name)
        self._freeze_if_frozen()
        api, path = self.api, self.path.split("?")[0]
        if path == "/health":
            self._send(200 if api.engine.healthy else 503, b"", "application/json")
        elif path == "/v1/models":
            self._json(
                200, {"object": "list", "data": [self._model_card(n) for n in api.served_names]}
            )
        elif path == "/metrics":
            self._send(200, api.engine.metrics.exposition().encode(), "text/plain; version=0.0.4")
        elif path == "/version":
            self._json(200, {"version": VERSION})
        else:
            self._json(404, {"detail": "Not Found"})

    def _model_card(self, name: str) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": self.api.created,
            "owned_by": "vllm",
            "root": self.api.model,
            "parent": None,
            "max_model_len": self.api.max_model_len,
        }

    def do_POST(self) -> None:  # noqa: N802
        self._freeze_if_frozen()
        path = self.path.split("?")[0]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"detail": "Not Found"})
            return
        try:
            body = json.loads(raw or b"{}")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            self._json(400, _error(400, "BadRequestError", "the body is not a JSON object"))
            return
        self._complete(body, chat=path.endswith("chat/completions"))

    def _complete(self, body: dict, *, chat: bool) -> None:
        api = self.api
        model = body.get("model")
        if model not in api.served_names:
            message = f"The model `{model}` does not exist."
            self._json(404, _error(404, "NotFoundError", message, "model"))
            return
        if body.get("stream"):
            self._json(400, _error(400, "BadRequestError", "the vLLM stand-in does not stream"))
            return
        try:
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
            delay = float(self.headers.get("x-standin-delay-seconds") or api.request_seconds)
        except ValueError as e:
            self._json(400, _error(400, "BadRequestError", str(e)))
            return
        prompt_tokens = _words(body.get("messages") if chat else body.get("prompt", ""))
        try:
            with api.engine.request():
                text, reason = api.engine.generate(prompt_tokens, max_tokens, delay)
                self._json(
                    200,
                    self._answer(model, text, reason, prompt_tokens, max_tokens, chat),
                    {"x-standin-hostname": api.hostname},
                )
        except Draining:
            self._json(503, _error(503, "ServiceUnavailableError", "the server is shutting down"))
        except EngineDead as e:
            self._json(500, _error(500, "EngineDeadError", f"EngineCore died: {e}"))

    def _answer(self, model, text, reason, prompt_tokens, tokens, chat) -> dict:
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": self.api.hostname,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens,
            },
        }


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def start(host: str, port: int, api: Api) -> Server:
    """Bind and serve from a daemon thread."""
    api.created = int(time.time())
    handler = type("Handler", (_Handler,), {"api": api})
    server = Server((host, port), handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
