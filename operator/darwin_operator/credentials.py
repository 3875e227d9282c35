"""Where the operator's credentials come from: one place, for its own client and for kopf's.

The source is chosen as most Kubernetes controllers choose it: the --kubeconfig file, else
$KUBECONFIG, else the pod's service account (in-cluster), else ~/.kube/config. kopf is handed
the same credentials through a login handler (handlers.py) instead of its own discovery, which
reads only the environment and would ignore --kubeconfig.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import kubernetes.client
import kubernetes.config
from kubernetes.config.incluster_config import (
    SERVICE_HOST_ENV_NAME,
    SERVICE_PORT_ENV_NAME,
    InClusterConfigLoader,
)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


class CredentialsError(Exception):
    """No usable configuration: the message is one line for the person who started us."""


def load_configuration(
    kubeconfig: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> kubernetes.client.Configuration:
    environ = os.environ if environ is None else environ
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        _load_kubeconfig(kubeconfig, "--kubeconfig", configuration)
    elif environ.get("KUBECONFIG"):
        _load_kubeconfig(environ["KUBECONFIG"], "$KUBECONFIG", configuration)
    elif environ.get(SERVICE_HOST_ENV_NAME):
        _load_in_cluster(environ, service_account_dir, configuration)
    elif DEFAULT_KUBECONFIG.expanduser().exists():
        _load_kubeconfig(str(DEFAULT_KUBECONFIG.expanduser()), "default", configuration)
    else:
        raise CredentialsError(
            "no Kubernetes configuration: pass --kubeconfig FILE, set KUBECONFIG, or run in a "
            f"pod with a service account (not in a pod: {SERVICE_HOST_ENV_NAME} is not set)"
        )
    return configuration


def _load_kubeconfig(
    paths: str, source: str, configuration: kubernetes.client.Configuration
) -> None:
    # $KUBECONFIG may list several files, as for kubectl, which skips those that do not exist.
    listed = paths.split(os.pathsep) if source == "$KUBECONFIG" else [paths]
    existing = [p for p in listed if p and Path(p).expanduser().exists()]
    if not existing:
        raise CredentialsError(f"kubeconfig {paths} ({source}): no such file")
    for path in existing:
        problem = _unreadable(Path(path).expanduser())
        if problem:
            raise CredentialsError(f"kubeconfig {path} ({source}): cannot read it: {problem}")
    try:
        kubernetes.config.load_kube_config(
            config_file=os.pathsep.join(existing),
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as e:  # whatever the file holds, it is the user's to fix
        detail = " ".join(str(e).split()) or type(e).__name__
        raise CredentialsError(f"kubeconfig {paths} ({source}) is not usable: {detail}") from None


def _unreadable(path: Path) -> str | None:
    try:
        with path.open("rb"):
            return None
    except IsADirectoryError:
        return "it is a directory"
    except OSError as e:
        return e.strerror or type(e).__name__


def _load_in_cluster(
    environ: Mapping[str, str],
    directory: Path,
    configuration: kubernetes.client.Configuration,
) -> None:
    loader = InClusterConfigLoader(
        token_filename=str(directory / "token"),
        cert_filename=str(directory / "ca.crt"),
        environ=environ,
    )
    try:
        loader.load_and_set(configuration)
    except (kubernetes.config.ConfigException, OSError) as e:
        where = f"{environ.get(SERVICE_HOST_ENV_NAME)}:{environ.get(SERVICE_PORT_ENV_NAME)}"
        raise CredentialsError(
            f"in-cluster configuration ({SERVICE_HOST_ENV_NAME} is set, API server {where}) "
            f"failed: {e} (service account files in {directory})"
        ) from None


def bearer_token(configuration: kubernetes.client.Configuration) -> tuple[str | None, str | None]:
    """(scheme, token) of the configuration's Authorization header, read afresh: an in-cluster
    token file is re-read when the client's refresh period has passed."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    if not header:
        return None, None
    scheme, _, token = header.strip().partition(" ")
    return (scheme, token.strip()) if token else (None, scheme)
