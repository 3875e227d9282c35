"""`darwin-operator run`: start the operator (kopf) with its flags, metrics and liveness."""

from __future__ import annotations

import argparse
import logging
import os

import kopf
import prometheus_client

from darwin_operator import logs, peering
from darwin_operator.cluster import Cluster, load_api_client
from darwin_operator.health import HealthConfig
from darwin_operator.planner import PlannerConfig
from darwin_operator.reconciler import Controller, Reconciler, Result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file; default: $KUBECONFIG or in-cluster")
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="reconcile every endpoint at least this often, events or not (default 30)",
    )
    parser.add_argument(
        "--scheduling-timeout",
        type=float,
        default=120.0,
        help="seconds an admitted group may stay unschedulable before it is gated again",
    )
    # Group health (health.py): a broken group is recreated whole, with a backoff per group.
    parser.add_argument(
        "--recreate-backoff-base",
        type=float,
        default=5.0,
        help="seconds before a group's 2nd recreation within its restart window, doubled for "
        "each further one (default 5); the first is immediate",
    )
    parser.add_argument(
        "--recreate-backoff-cap",
        type=float,
        default=300.0,
        help="longest backoff before a broken group is created again (default 300)",
    )
    parser.add_argument(
        "--node-lost-grace",
        type=float,
        default=60.0,
        help="seconds a node may be NotReady or unreachable before the groups on it are "
        "recreated (default 60)",
    )
    parser.add_argument(
        "--leader-unready-grace",
        type=float,
        default=60.0,
        help="seconds a Running leader that was Ready may stay unready (vLLM's engine died) "
        "before its group is recreated (default 60)",
    )
    parser.add_argument("--metrics-port", type=int, default=8080, help="/metrics; 0 disables")
    parser.add_argument(
        "--health-port", type=int, default=8081, help="liveness on /healthz; 0 disables"
    )
    parser.add_argument(
        "--api-workers", type=int, default=16, help="concurrent API requests (default 16)"
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="skip kopf peering; by default peering is used when its CRD is installed, so "
        "only one of several operator replicas acts at a time",
    )
    parser.add_argument("--peering", default=None, help="kopf peering object name")
    # High availability (peering.py): with --peering, a replica registers below those already
    # running, so the oldest one acts and the others stand by.
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="kopf peering priority; default with --peering: below every registered replica",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds a replica's keep-alive is valid: a standby takes over at most this long "
        "after the active replica stops (default 60)",
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
    if args.kubeconfig:  # kopf's own login reads the environment
        os.environ["KUBECONFIG"] = args.kubeconfig
    logs.configure(args.log_format, verbose=args.verbose)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # per-event handler chatter
    from darwin_operator import handlers  # noqa: F401  (registers the kopf handlers)

    namespaces = list(args.namespace)
    cluster = Cluster(
        load_api_client(args.kubeconfig), workers=args.api_workers, namespaces=namespaces
    )
    settings = kopf.OperatorSettings()
    # The watched kinds are known and installed first: no CRD or namespace scanning, which
    # needs cluster-wide reads the chart's RBAC does not grant.
    settings.scanning.disabled = True
    identity, priority, guard = _peering(args, cluster, namespaces, settings)
    config = PlannerConfig(
        scheduling_timeout=args.scheduling_timeout,
        health=HealthConfig(
            backoff_base=args.recreate_backoff_base,
            backoff_cap=args.recreate_backoff_cap,
            node_lost_grace=args.node_lost_grace,
            leader_unready_grace=args.leader_unready_grace,
        ),
    )
    reconciler = Reconciler(cluster, config)
    reconcile = (
        reconciler.reconcile if guard is None else guard.wrap(reconciler.reconcile, Result())
    )
    controller = Controller(reconcile, resync_seconds=args.resync_seconds)
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port)
    kopf.run(
        settings=settings,
        identity=identity,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=True if args.standalone else None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz"
        if args.health_port
        else None,
        memo=kopf.Memo(controller=controller, cluster=cluster),
    )
    return 0


def _peering(
    args: argparse.Namespace,
    cluster: Cluster,
    namespaces: list[str],
    settings: kopf.OperatorSettings,
) -> tuple[str, int | None, peering.ActivityGuard | None]:
    settings.peering.lifetime = args.peering_lifetime
    identity = peering.own_identity()
    if not args.peering or args.standalone:
        return identity, args.priority, None
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
