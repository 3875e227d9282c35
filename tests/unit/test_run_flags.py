"""`darwin-operator run`: a flag value that cannot work, or a configuration that cannot start,
is one line on stderr and exit code 2, before anything touches a cluster."""

from __future__ import annotations

import pytest

from darwin_operator import cli


def run(capsys, monkeypatch, tmp_path, *argv):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    try:
        code = cli.main(["run", *argv])
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--resync-seconds", "0"], "--resync-seconds: '0': must be more than 0 seconds"),
        (["--scheduling-timeout", "-1"], "--scheduling-timeout: '-1': must be more than 0"),
        (["--recreate-backoff-base", "x"], "--recreate-backoff-base: 'x' is not a number"),
        (["--recreate-backoff-cap", "-5"], "--recreate-backoff-cap: '-5': must be 0 seconds"),
        (["--node-lost-grace", "-1"], "--node-lost-grace: '-1': must be 0 seconds or more"),
        (["--metrics-port", "70000"], "--metrics-port: '70000': must be a port number"),
        (["--health-port", "-1"], "--health-port: '-1': must be a port number"),
        (["--api-workers", "0"], "--api-workers: '0': must be 1 or more"),
        (["--shutdown-seconds", "0"], "--shutdown-seconds: '0': must be more than 0 seconds"),
        (["--peering-lifetime", "0"], "--peering-lifetime: '0': must be 1 or more"),
        (["--namespace", "Team_A"], "--namespace/-n: 'Team_A' is not a namespace name"),
        (["--peering", "Bad Name"], "--peering: 'Bad Name' is not an object name"),
        (["--peering", "p", "--standalone"], "--standalone: not allowed with argument --peering"),
        (["--log-format", "xml"], "--log-format: invalid choice: 'xml'"),
    ],
)
def test_a_flag_value_that_cannot_work_is_refused(capsys, monkeypatch, tmp_path, argv, expected):
    code, out, err = run(capsys, monkeypatch, tmp_path, *argv)
    assert code == 2
    assert expected in err.splitlines()[-1]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "no Kubernetes configuration: pass --kubeconfig FILE, set KUBECONFIG"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "kubeconfig /nonexistent/kubeconfig"),
    ],
)
def test_no_usable_kubeconfig_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path, argv, expected):
    code, out, err = run(capsys, monkeypatch, tmp_path, *argv)
    assert (code, out) == (2, "")
    assert err.startswith(f"darwin-operator run: {expected}")
    assert len(err.splitlines()) == 1


def test_priority_without_peering_is_refused(capsys, monkeypatch, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    code, _, err = run(
        capsys, monkeypatch, tmp_path, "--kubeconfig", str(kubeconfig), "--priority", "5"
    )
    assert code == 2
    assert err == "darwin-operator run: --priority needs --peering\n"


def test_an_unreachable_api_server_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    code, _, err = run(capsys, monkeypatch, tmp_path, "--kubeconfig", str(kubeconfig))
    assert code == 2
    assert err.startswith("darwin-operator run: cannot reach the API server at https://127.0.0.1:1")
    assert len(err.splitlines()) == 1
