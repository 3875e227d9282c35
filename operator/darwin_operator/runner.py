"""`darwin-operator run`: start the operator (kopf) with its flags, metrics and liveness."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

import kopf
import prometheus_client
import urllib3

from darwin_operator import logs, peering, shutdown
from darwin_operator.cluster import ApiError, Cluster, load_api_client
from darwin_operator.credentials import CredentialsError
from darwin_operator.health import HealthConfig
from darwin_operator.planner import PlannerConfig
from darwin_operator.reconciler import Controller, Reconciler, Result
from darwin_operator.view import WatchedView

log = logging.getLogger(__name__)

EXIT_CANNOT_START = 2  # as for a usage error: the invocation or its environment needs a fix
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _checked(convert: Callable[[str], float], ok: Callable[[float], bool], what: str):
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value

    return parse


positive_seconds = _checked(float, lambda v: v > 0, "more than 0 seconds")
seconds = _checked(float, lambda v: v >= 0, "0 seconds or more")
port = _checked(int, lambda v: 0 <= v <= 65535, "a port number, or 0 to disable")
positive_int = _checked(int, lambda v: v >= 1, "1 or more")


def _matching(pattern: re.Pattern[str], what: str):
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return text

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        type=_matching(_DNS_LABEL, "a namespace name"),
        metavar="NAMESPACE",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig file; default: $KUBECONFIG, else the pod's service account "
        "(in-cluster), else ~/.kube/config",
    )
    parser.add_argument(
        "--resync-seconds",
        type=positive_seconds,
        metavar="SECONDS",
        default=30.0,
        help="reconcile every endpoint at least this often, events or not (default 30)",
    )
    parser.add_argument(
        "--scheduling-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        default=120.0,
        help="seconds an admitted group may stay unschedulable before it is gated again "
        "(default 120)",
    )
    # Group health (health.py): a broken group is recreated whole, with a backoff per group.
    parser.add_argument(
        "--recreate-backoff-base",
        type=seconds,
        metavar="SECONDS",
        default=5.0,
        help="seconds before a group's 2nd recreation within its restart window, doubled for "
        "each further one (default 5); the first is immediate",
    )
    parser.add_argument(
        "--recreate-backoff-cap",
        type=seconds,
        metavar="SECONDS",
        default=300.0,
        help="longest backoff before a broken group is created again (default 300)",
    )
    parser.add_argument(
        "--node-lost-grace",
        type=seconds,
        metavar="SECONDS",
        default=60.0,
        help="seconds a node may be NotReady or unreachable before the groups on it are "
        "recreated (default 60)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        default=8080,
        help="/metrics (default 8080); 0 disables",
    )
    parser.add_argument(
        "--health-port",
        type=port,
        metavar="PORT",
        default=8081,
        help="liveness on /healthz (default 8081); 0 disables",
    )
    parser.add_argument(
        "--api-workers",
        type=positive_int,
        metavar="N",
        default=16,
        help="concurrent API requests (default 16)",
    )
    parser.add_argument(
        "--shutdown-seconds",
        type=positive_seconds,
        metavar="SECONDS",
        default=shutdown.DEFAULT_BUDGET,
        help="on SIGTERM or SIGINT, exit within this many seconds however busy (default "
        f"{shutdown.DEFAULT_BUDGET:g}); work in flight is abandoned and picked up from the "
        "cluster's state by the next replica or start",
    )
    # High availability (peering.py): with --peering, a replica registers below those already
    # running, so the oldest one acts and the others stand by.
    alone = parser.add_mutually_exclusive_group()
    alone.add_argument(
        "--peering",
        metavar="NAME",
        type=_matching(_DNS_SUBDOMAIN, "an object name"),
        help="run as one of several replicas, one acting at a time, peering through the kopf "
        "peering object NAME (created if missing); without it the operator acts alone",
    )
    alone.add_argument(
        "--standalone",
        action="store_true",
        help="act alone, without peering (the default when --peering is not given)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        metavar="N",
        default=None,
        help="peering priority (with --peering); default: below every registered replica",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=positive_int,
        metavar="SECONDS",
        default=60,
        help="seconds a replica's keep-alive is valid: a standby takes over at most this long "
        "after the active replica dies; a replica that is stopped hands over at once "
        "(default 60)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default="text",
        help="text (default): lines for people; json: one JSON object per line. Lines about an "
        "endpoint carry its namespace and name either way",
    )


def run(args: argparse.Namespace) -> int:
    """Start the operator; returns only when it cannot start (exit 2 for what the user can fix,
    with one line on stderr). Once started, it stops by a signal and exits (shutdown.py)."""
    logs.configure(args.log_format, verbose=args.verbose)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # per-event handler chatter
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # a line per liveness probe
    try:
        return _run(args)
    except StartupError as e:
        print(f"darwin-operator run: {e}", file=sys.stderr)
        return EXIT_CANNOT_START


class StartupError(Exception):
    """What keeps the operator from starting, as one line for the person who started it."""


def _run(args: argparse.Namespace) -> NoReturn:
    from darwin_operator import handlers  # noqa: F401  (registers the kopf handlers)

    namespaces = list(args.namespace)
    try:
        # a connection per worker, a few for the peering guard's reads from its thread, and
        # one per watch (view.py)
        client = load_api_client(args.kubeconfig, pool_size=args.api_workers + 16)
    except CredentialsError as e:
        raise StartupError(str(e)) from None
    cluster = Cluster(client, workers=args.api_workers, namespaces=namespaces)
    if args.priority is not None and not args.peering:
        raise StartupError("--priority needs --peering")
    settings = kopf.OperatorSettings()
    # The watched kinds are known and installed first: no CRD or namespace scanning, which
    # needs cluster-wide reads the chart's RBAC does not grant.
    settings.scanning.disabled = True
    _serve_http(args)  # before peering registers this replica: a port in use stops us here
    try:
        with _quiet("urllib3.connectionpool"):  # its retries: the error below says it all
            cluster.check_api()
        identity, priority, guard = _peering(args, cluster, namespaces, settings)
    except ApiError as e:
        raise StartupError(f"the API server at {client.configuration.host} said: {e}") from None
    except (OSError, urllib3.exceptions.HTTPError) as e:  # no route, refused, TLS
        raise StartupError(
            f"cannot reach the API server at {client.configuration.host}: {_reason(e)}"
        ) from None
    config = PlannerConfig(
        scheduling_timeout=args.scheduling_timeout,
        health=HealthConfig(
            backoff_base=args.recreate_backoff_base,
            backoff_cap=args.recreate_backoff_cap,
            node_lost_grace=args.node_lost_grace,
        ),
    )
    view = WatchedView(cluster, tuple(namespaces))
    reconciler = Reconciler(cluster, config, view=view, trail_status=True)
    reconcile = (
        reconciler.reconcile if guard is None else guard.wrap(reconciler.reconcile, Result())
    )
    controller = Controller(reconcile, resync_seconds=args.resync_seconds)
    view.on_endpoint_changed = controller.trigger
    view.on_capacity_freed = controller.trigger_waiting
    reconciler.status_writer.on_failure = controller.trigger
    stopping = shutdown.Shutdown(args.shutdown_seconds, on_begin=controller.halt)
    kopf_options = dict(
        settings=settings,
        identity=identity,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not args.peering,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz"
        if args.health_port
        else None,
        memo=kopf.Memo(controller=controller, cluster=cluster, view=view),
    )
    # Not asyncio.run(): closing the loop would wait for its executor's threads, which may be
    # blocked in requests; shutdown.exit_now() leaves them behind.
    # What start-up allocated (kopf, pydantic, the API client: most of the heap) lives as long as
    # the process: out of the collector's sight. Parsed watch events and rendered pods are
    # garbage by the thousand; at the default threshold (700) collections ran over a hundred
    # times in a start of 50 endpoints and one full one stopped every thread for about 100 ms.
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(_operate(kopf_options, stopping))
    log.info("stopped")
    shutdown.exit_now(0)


async def _operate(kopf_options: dict, stopping: shutdown.Shutdown) -> None:
    """kopf.operator(), with our own signal handling (shutdown.py) in place of kopf's."""
    existing = asyncio.all_tasks()
    kopf_options["memo"].view.start(asyncio.get_running_loop())
    tasks = await kopf.spawn_tasks(stop_flag=stopping.requested, **kopf_options)
    stopping.install(asyncio.get_running_loop())  # after kopf's, which it replaces
    await kopf.run_tasks(tasks, ignored=existing)


def _serve_http(args: argparse.Namespace) -> None:
    """/metrics now, and a check that kopf can bind the liveness port later: a port in use is
    one clear line at start, not a failure deep inside kopf."""
    if args.metrics_port:
        try:
            prometheus_client.start_http_server(args.metrics_port)
        except OSError as e:
            raise StartupError(f"--metrics-port {args.metrics_port}: {e.strerror}") from None
    if args.health_port:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", args.health_port))
            except OSError as e:
                raise StartupError(f"--health-port {args.health_port}: {e.strerror}") from None


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or error  # MaxRetryError: the last attempt's error
    return " ".join(str(reason).split())


def _peering(
    args: argparse.Namespace,
    cluster: Cluster,
    namespaces: list[str],
    settings: kopf.OperatorSettings,
) -> tuple[str, int | None, peering.ActivityGuard | None]:
    settings.peering.lifetime = args.peering_lifetime
    identity = peering.own_identity()
    if not args.peering:
        return identity, None, None
    objects = peering.peering_objects(args.peering, namespaces)
    priority = args.priority
    if priority is None:
        priority = peering.register(cluster, objects, identity, args.peering_lifetime)
    guard = peering.ActivityGuard(cluster, objects[0], identity, priority).start()
    return identity, priority, guard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="darwin-operator run")
    add_arguments(parser)
    return run(parser.parse_args(argv))
