"""Where `darwin-operator run` takes its credentials from, and the one line it says when it
cannot: --kubeconfig, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""

from __future__ import annotations

import pytest
import yaml

from darwin_operator import credentials
from darwin_operator.credentials import CredentialsError, bearer_token, load_configuration

IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def kubeconfig(path, server, token):
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


@pytest.fixture
def service_account(tmp_path):
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("pod-token\n")
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return directory


@pytest.fixture(autouse=True)
def no_home_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setattr(credentials, "DEFAULT_KUBECONFIG", tmp_path / "home" / "config")


def load(kubeconfig=None, environ=None, service_account_dir=None):
    return load_configuration(
        kubeconfig,
        environ=environ or {},
        service_account_dir=service_account_dir or credentials.SERVICE_ACCOUNT_DIR,
    )


def test_the_flag_needs_no_environment_and_wins_over_it(tmp_path, service_account):
    flag = kubeconfig(tmp_path / "flag", "https://127.0.0.1:1111", "from-flag")
    env = kubeconfig(tmp_path / "env", "https://127.0.0.1:2222", "from-env")
    for environ in ({}, {"KUBECONFIG": env, **IN_CLUSTER}):
        configuration = load(flag, environ, service_account)
        assert configuration.host == "https://127.0.0.1:1111"
        assert bearer_token(configuration) == ("Bearer", "from-flag")


def test_kubeconfig_from_the_environment_wins_over_in_cluster(tmp_path, service_account):
    env = kubeconfig(tmp_path / "env", "https://127.0.0.1:2222", "from-env")
    missing = str(tmp_path / "missing")
    # a list, as kubectl reads it: files that do not exist are skipped
    environ = {"KUBECONFIG": f"{missing}:{env}", **IN_CLUSTER}
    configuration = load(None, environ, service_account)
    assert configuration.host == "https://127.0.0.1:2222"


def test_in_cluster_reads_the_service_account_and_the_service_address(tmp_path, service_account):
    credentials.DEFAULT_KUBECONFIG.parent.mkdir()
    kubeconfig(credentials.DEFAULT_KUBECONFIG, "https://127.0.0.1:3333", "from-home")
    configuration = load(None, IN_CLUSTER, service_account)
    assert configuration.host == "https://10.96.0.1:443"
    scheme, token = bearer_token(configuration)
    assert (scheme.lower(), token) == ("bearer", "pod-token")  # not its file's newline
    assert configuration.ssl_ca_cert == str(service_account / "ca.crt")


def test_home_kubeconfig_is_the_last_resort(tmp_path):
    credentials.DEFAULT_KUBECONFIG.parent.mkdir()
    kubeconfig(credentials.DEFAULT_KUBECONFIG, "https://127.0.0.1:3333", "from-home")
    assert load().host == "https://127.0.0.1:3333"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("nothing", "no Kubernetes configuration: pass --kubeconfig FILE, set KUBECONFIG"),
        ("missing flag", "(--kubeconfig): no such file"),
        ("missing env", "($KUBECONFIG): no such file"),
        ("directory", "cannot read it: it is a directory"),
        ("not yaml", "is not usable: while parsing"),
        ("no context", "is not usable: Invalid kube-config file"),
        ("no token file", "in-cluster configuration (KUBERNETES_SERVICE_HOST is set"),
    ],
)
def test_what_cannot_work_is_one_line(tmp_path, case, expected):
    bad = tmp_path / "bad"
    flag, environ, service_account_dir = None, {}, tmp_path / "no-service-account"
    if case == "missing flag":
        flag = str(tmp_path / "missing")
    elif case == "missing env":
        environ = {"KUBECONFIG": str(tmp_path / "missing")}
    elif case == "directory":
        flag = str(tmp_path)
    elif case == "not yaml":
        bad.write_text("clusters: [\n")
        flag = str(bad)
    elif case == "no context":
        bad.write_text("apiVersion: v1\nkind: Config\n")
        flag = str(bad)
    elif case == "no token file":
        environ = IN_CLUSTER
    with pytest.raises(CredentialsError) as raised:
        load(flag, environ, service_account_dir)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
