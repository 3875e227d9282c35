"""`darwin-operator restart NAME`: ask for a rolling restart of every group of an endpoint.

It stamps the endpoint's restartedAt annotation; the new revision makes the operator replace
the groups one by one, like `kubectl rollout restart` does for a Deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from darwin_operator.cluster import ApiError, Cluster, load_api_client
from darwin_operator.credentials import CredentialsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the DarwinEndpoint")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig file; default: $KUBECONFIG, else in-cluster, else ~/.kube/config",
    )


def run(args: argparse.Namespace) -> int:
    try:
        client = load_api_client(args.kubeconfig)
    except CredentialsError as error:
        print(f"darwin-operator restart: {error}", file=sys.stderr)
        return 2
    cluster = Cluster(client, workers=1)
    try:
        asyncio.run(cluster.request_restart(args.namespace, args.name, time.time()))
    except ApiError as error:
        print(f"cannot restart {args.namespace}/{args.name}: {error.message}", file=sys.stderr)
        return 1
    finally:
        cluster.close()
    print(f"darwinendpoint {args.namespace}/{args.name} restart requested")
    return 0
