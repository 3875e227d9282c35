"""Check `vllm serve` argument lists with vLLM's own parser and validation.

Run with the python of the vLLM venv that tests/vllm/setup-venv.sh builds (not the operator's
venv: the operator never imports vllm).

stdin:  a JSON list of argument lists, each what comes after `vllm serve` (model first).
stdout: a JSON list, one object per argument list, in order:
        {"ok": bool, "error": str, "launch": str, "warnings": [str, ...], "parsed": {...}}
        "error" is "" when ok. "launch" names the path `vllm serve` would take next
        ("headless", "api_server", "multi_api_server", "dp_supervisor", "grpc"), or "" when
        the checks failed before that. "parsed" holds the values vLLM's parser read for
        PARSED_FIELDS (empty when parsing failed).
exit:   0 when every list was checked (whatever the verdicts); non-zero only when this harness
        itself is broken (bad input, vLLM not importable, vLLM internals moved).

For each list it does what `vllm serve ARGS...` does (vllm/entrypoints/cli/main.py and
vllm/entrypoints/cli/serve.py of vLLM 0.33.0) up to the point where a server or an engine would
start:
  1. FlexibleArgumentParser("vLLM CLI") with the `serve` subparser that ServeSubcommand builds
     (make_arg_parser), parse ["serve", *args];
  2. configure_logging_from_args(args) and ServeSubcommand.validate(args), which is
     validate_parsed_serve_args(args);
  3. ServeSubcommand.cmd(args) itself (positional model tag, --headless vs --api-server-count,
     data-parallel load-balancing mode), with its launchers replaced by recorders, so nothing is
     started;
  4. for an API-server launch, validate_api_server_args(args) (what setup_server checks before
     binding its socket);
  5. AsyncEngineArgs.from_cli_args(args), the engine-args object every launcher builds first.
It does not call create_engine_config: that needs the model's config from the hub.

Offline: HF_HUB_OFFLINE=1, and any socket connection or name lookup beyond loopback fails.
In offline mode EngineArgs.__post_init__ would rewrite a hub model id to a local snapshot path
(vllm.transformers_utils.repo_utils.get_model_path), which fails here where no model is cached;
that rewrite is replaced by the identity. No GPU: VLLM_TARGET_DEVICE=cpu (default), so vLLM
picks its CPU platform, which the parser needs to fill in device-dependent defaults.
"""

from __future__ import annotations

import os
import sys

# vLLM logs to stdout; keep the real stdout for the JSON answer and send the rest to stderr.
# Done before vllm (or anything that may print) is imported.
_ANSWER = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ[_name] = _value
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

import contextlib  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import types  # noqa: E402
from typing import Any  # noqa: E402

VLLM_VERSION = "0.33.0"
# Parsed values reported back, for the tests that check what vLLM reads, not only that it parses.
PARSED_FIELDS = ("served_model_name", "shutdown_timeout")


class HarnessError(Exception):
    """The harness itself cannot work (exit non-zero)."""


class OfflineError(OSError):
    pass


def _is_local(host: Any) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _block_network() -> None:
    """Refuse connections and name lookups beyond loopback (and Unix sockets)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise OfflineError(f"check_serve_args is offline: connect to {address!r} refused")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            raise OfflineError(f"check_serve_args is offline: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a broken log call must not break the check
            self.messages.append(str(record.msg))


class _Launched(Exception):
    """Raised by the launcher stand-ins: `vllm serve` got as far as starting `launch`."""

    def __init__(self, launch: str) -> None:
        super().__init__(launch)
        self.launch = launch


class Checker:
    def __init__(self) -> None:
        _block_network()
        try:
            import importlib.metadata

            version = importlib.metadata.version("vllm")
            if version != VLLM_VERSION:
                raise HarnessError(f"vllm {version} is installed, not {VLLM_VERSION}")

            import vllm.engine.arg_utils as arg_utils
            import vllm.entrypoints.cli.serve as serve_mod
            import vllm.logger
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.entrypoints.cli.serve import ServeSubcommand
            from vllm.entrypoints.common.cli_args import validate_api_server_args
            from vllm.entrypoints.common.startup import cli_env_setup
            from vllm.logger import configure_logging_from_args
            from vllm.utils.argparse_utils import FlexibleArgumentParser
        except ImportError as e:
            raise HarnessError(f"cannot import vLLM's CLI modules: {e!r}") from e

        self.AsyncEngineArgs = AsyncEngineArgs
        self.validate_api_server_args = validate_api_server_args
        self.configure_logging_from_args = configure_logging_from_args
        self.vllm_logger = vllm.logger

        # The offline model-id -> cached-snapshot rewrite (see the module docstring).
        if not hasattr(arg_utils, "get_model_path"):
            raise HarnessError("vllm.engine.arg_utils.get_model_path moved")
        arg_utils.get_model_path = lambda model, revision=None: model

        # `vllm serve`'s launchers, replaced by recorders (nothing is started).
        for name in ("run_headless", "run_multi_api_server", "run_dp_supervisor", "run_server"):
            if not callable(getattr(serve_mod, name, None)):
                raise HarnessError(f"vllm.entrypoints.cli.serve.{name} moved")
        if not hasattr(serve_mod, "uvloop"):
            raise HarnessError("vllm.entrypoints.cli.serve no longer uses uvloop.run")

        def recorder(launch: str):
            def launcher(*args: Any, **kwargs: Any) -> None:
                raise _Launched(launch)

            return launcher

        def uvloop_run(coro: Any, *args: Any, **kwargs: Any) -> None:
            if inspect.iscoroutine(coro):  # the gRPC server's coroutine, never awaited
                name = coro.__qualname__
                coro.close()
                raise _Launched("grpc" if "grpc" in name else name)
            if isinstance(coro, _Launched):
                raise coro
            raise HarnessError(f"unexpected uvloop.run({coro!r})")

        serve_mod.run_headless = recorder("headless")
        serve_mod.run_multi_api_server = recorder("multi_api_server")
        serve_mod.run_dp_supervisor = recorder("dp_supervisor")
        # run_server(args) is called, then its coroutine handed to uvloop.run().
        serve_mod.run_server = lambda *a, **k: _Launched("api_server")
        serve_mod.uvloop = types.SimpleNamespace(run=uvloop_run)

        # The parser, built as vllm/entrypoints/cli/main.py builds it (serve subcommand only).
        cli_env_setup()
        self.parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
        subparsers = self.parser.add_subparsers(required=False, dest="subparser")
        self.serve = ServeSubcommand()
        self.serve.subparser_init(subparsers).set_defaults(dispatch_function=self.serve.cmd)

        self.warnings = _WarningCollector()

    def _collect_warnings(self) -> None:
        # vLLM's logging setup (configure_logging_from_args) replaces the "vllm" logger's
        # handlers, so the collector is put back before each step that may warn.
        vllm_logger = logging.getLogger("vllm")
        if self.warnings not in vllm_logger.handlers:
            vllm_logger.addHandler(self.warnings)

    def check(self, argv: list[str]) -> dict[str, Any]:
        self.warnings.messages = []
        self._collect_warnings()
        # Each list is checked as its own `vllm serve` process: warnings said "once" per process
        # are said again.
        for once in ("_print_warning_once", "_print_error_once"):
            cache_clear = getattr(getattr(self.vllm_logger, once, None), "cache_clear", None)
            if cache_clear is not None:
                cache_clear()
        launch = ""
        self.parsed: dict[str, Any] = {}
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = self.parser.parse_args(["serve", *argv])
            self.parsed = {name: getattr(args, name, None) for name in PARSED_FIELDS}
            if args.subparser != "serve":
                raise HarnessError(f"parsed as subcommand {args.subparser!r}")
            self.configure_logging_from_args(args)
            self._collect_warnings()
            self.serve.validate(args)
            try:
                args.dispatch_function(args)
            except _Launched as launched:
                launch = launched.launch
            else:
                raise HarnessError("`vllm serve` returned without reaching a launcher")
            if launch in ("api_server", "multi_api_server"):
                self.validate_api_server_args(args)
            self.AsyncEngineArgs.from_cli_args(args)
        except HarnessError:
            raise
        except SystemExit as e:
            return self._result(False, _argparse_message(stderr.getvalue(), e), launch)
        except Exception as e:
            return self._result(False, f"{type(e).__name__}: {e}", launch)
        return self._result(True, "", launch)

    def _result(self, ok: bool, error: str, launch: str) -> dict[str, Any]:
        warnings = list(self.warnings.messages)
        return {
            "ok": ok,
            "error": error,
            "launch": launch,
            "warnings": warnings,
            "parsed": self.parsed,
        }


def _argparse_message(stderr: str, exc: SystemExit) -> str:
    """The `prog: error: message` part of what argparse printed before exiting."""
    marker = ": error: "
    at = stderr.rfind(marker)
    if at >= 0:
        line_start = stderr.rfind("\n", 0, at) + 1
        return stderr[line_start:].strip()
    tail = stderr.strip()[-500:]
    return f"exited ({exc.code}) while parsing (help or version asked for?): {tail}"


def _read_input(text: str) -> list[list[str]]:
    data = json.loads(text)
    if not isinstance(data, list) or not all(
        isinstance(argv, list) and all(isinstance(a, str) for a in argv) for argv in data
    ):
        raise HarnessError("stdin must be a JSON list of lists of strings")
    return data


def main() -> int:
    try:
        argvs = _read_input(sys.stdin.read())
        checker = Checker()
        results = [checker.check(argv) for argv in argvs]
    except (HarnessError, json.JSONDecodeError) as e:
        print(f"check_serve_args: harness error: {e}", file=sys.stderr)
        return 2
    json.dump(results, _ANSWER, indent=1)
    _ANSWER.write("\n")
    _ANSWER.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
