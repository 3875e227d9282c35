"""The local cluster's certificates (made with openssl) and kubeconfigs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# Components and the subject of their client certificate. Group system:masters is cluster-admin.
CLIENTS = {
    "admin": "/O=system:masters/CN=darwin-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    "kwok": "/O=system:masters/CN=kwok",
    # the apiserver's client certificate towards kubelets (logs, exec, port-forward)
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path, extra_ips: tuple[str, ...] = ()) -> None:
    """A CA, the apiserver's serving cert, client certs per component, service-account keys."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=darwin-test-ca",
        cwd=pki,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    ips = ",".join(f"IP:{ip}" for ip in ("127.0.0.1", "10.96.0.1", *extra_ips))
    sans = (
        f"subjectAltName={ips},DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local"
    )
    issue_cert(pki, "apiserver", "/CN=kube-apiserver", sans)
    for name, subject in CLIENTS.items():
        issue_cert(pki, name, subject)


def issue_cert(pki: Path, name: str, subject: str, ext: str | None = None) -> None:
    """NAME.key and NAME.crt signed by the cluster CA in `pki`."""
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=pki,
    )
    extra = []
    if ext:
        (pki / f"{name}.ext").write_text(ext + "\n")
        extra = ["-extfile", f"{name}.ext"]
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        f"{name}.crt",
        *extra,
        cwd=pki,
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "darwin-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": "darwin-local", "context": {"cluster": "darwin-local", "user": user}}
                ],
                "current-context": "darwin-local",
            },
            indent=2,
        )
    )
