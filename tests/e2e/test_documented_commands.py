"""Every command that the install and use sections of README.md and the chart's README show a
user runs here exactly as written (bash, from the repository root, KUBECONFIG exported), against
a local cluster of its own (the commands use fixed names: darwin-system, the default namespace),
and does what the docs say. The commands are read from the markdown, so a doc change is picked
up; a command no rule below knows fails the test until one is written, and a command that cannot
run here is listed with its reason.

The operator's Deployment lands on kwok nodes, which run no containers: once installed, the pod's
process runs here instead, as the pod would run it (tests/e2e/in_pod.py)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import config as k8s_config

from tests.doc_commands import REPO, DocCommand, documented_commands
from tests.e2e.conftest import ClusterHandle, crd_established
from tests.e2e.in_pod import operator_in_pod
from tests.e2e.operator_process import operator_binary
from tests.e2e.waiting import wait_for

pytestmark = pytest.mark.e2e

DOCUMENTS = {
    REPO / "README.md": ("Install", "Use"),
    REPO / "charts" / "darwin-operator" / "README.md": None,  # all of it is install and use
}
INSTALL_MANIFEST = REPO / "manifests" / "install.yaml"
REFERENCE = REPO / "manifests" / "darwin-endpoint.yaml"
CRDS = (
    "darwinendpoints.serving.darwin.ai",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
)


class Session:
    """A user's shell on the local cluster: the built kubectl and helm and the installed
    darwin-operator on PATH, KUBECONFIG exported, a HOME of its own."""

    def __init__(self, cluster: ClusterHandle, home: Path) -> None:
        self.cluster = cluster
        tools = {Path(cluster.kubectl_binary).parent, Path(_helm_binary()).parent}
        path = [*map(str, tools), str(Path(operator_binary()).parent), os.environ["PATH"]]
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KUBE")},
            "PATH": os.pathsep.join(path),
            "KUBECONFIG": cluster.kubeconfig,
            "HOME": str(home),
        }

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=self.env, text=True, capture_output=True
        )

    def json(self, *args: str) -> dict:
        return self.cluster.json(*args)


def _helm_binary() -> str:
    from tests.helm import helm_binary

    return str(helm_binary())


# ---- what each documented command must do ----


@dataclass
class Step:
    command: DocCommand
    match: re.Match[str]
    stdout: str = ""
    before: object = None  # what the rule's `before` saw, to compare with


def installed(session: Session, namespace: str, deployment: str) -> None:
    crds_established(session)
    wait_for(
        lambda: (
            session.json("get", "deployment", deployment, "-n", namespace).get("status") or {}
        ).get("availableReplicas"),
        timeout=120,
        what=f"Deployment {namespace}/{deployment} available",
    )


def helm_installed(session: Session, step: Step) -> None:
    installed(session, namespace=step.match["namespace"], deployment=step.match["release"])


def manifest_installed(session: Session, step: Step) -> None:
    documents = [d for d in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")["metadata"]
    installed(session, namespace=deployment["namespace"], deployment=deployment["name"])


def crds_established(session: Session, step: Step | None = None) -> None:
    for crd in CRDS:
        wait_for(
            lambda crd=crd: crd_established(session.cluster, crd),
            timeout=60,
            what=f"CRD {crd} Established",
        )


def _status(session: Session, name: str) -> dict:
    return session.json("get", "dwe", name).get("status") or {}


def _ready(session: Session, name: str, replicas: int) -> Callable[[], bool]:
    def check() -> bool:
        status = _status(session, name)
        return (
            status.get("phase") == "Ready"
            and status.get("readyReplicas") == replicas
            and status.get("replicas") == replicas
        )

    return check


def reference_ready(session: Session, step: Step) -> None:
    reference = yaml.safe_load(REFERENCE.read_text())
    name, replicas = reference["metadata"]["name"], reference["spec"]["replicas"]
    wait_for(
        _ready(session, name, replicas), timeout=120, what=f"{name} Ready {replicas}/{replicas}"
    )


def columns_as_documented(session: Session, step: Step) -> None:
    lines = step.stdout.splitlines()
    # the comment beside the command names the columns it prints
    assert lines and lines[0].split() == step.command.comment.split(), step.stdout
    reference = yaml.safe_load(REFERENCE.read_text())["metadata"]["name"]
    assert any(line.split()[0] == reference for line in lines[1:]), step.stdout


def scaled(session: Session, step: Step) -> None:
    name, replicas = step.match["name"], int(step.match["replicas"])
    wait_for(_ready(session, name, replicas), timeout=120, what=f"{name} Ready {replicas} groups")


def _pods(session: Session, name: str) -> list[dict]:
    selector = f"serving.darwin.ai/endpoint={name}"
    return session.json("get", "pods", "-l", selector)["items"]


def pods_and_revision(session: Session, match: re.Match[str]) -> tuple[set[str], str | None]:
    pods = {p["metadata"]["uid"] for p in _pods(session, match["name"])}
    return pods, _status(session, match["name"]).get("updateRevision")


def restarted(session: Session, step: Step) -> None:
    name = step.match["name"]
    old_pods, old_revision = step.before

    def rolled() -> bool:
        status = _status(session, name)
        pods = _pods(session, name)
        return (
            status.get("updateRevision") not in (None, old_revision)
            and status.get("currentRevision") == status.get("updateRevision")
            and _ready(session, name, status.get("replicas") or -1)()
            and not {p["metadata"]["uid"] for p in pods} & old_pods
        )

    wait_for(rolled, timeout=240, what=f"{name}: every group replaced and Ready")


def rendered(session: Session, step: Step) -> None:
    kinds = [d["kind"] for d in yaml.safe_load_all(step.stdout) if d]
    assert "Pod" in kinds and "Service" in kinds, kinds


@dataclass(frozen=True)
class Rule:
    pattern: str  # full match of the command, comment removed
    phase: str  # install | after-install | use | not-here
    check: Callable[[Session, Step], None] | None = None
    reason: str = ""  # why a not-here command cannot run here
    before: Callable[[Session, re.Match[str]], object] | None = None


RULES = (
    Rule(
        r"helm install (?P<release>\S+) charts/darwin-operator (-n|--namespace) "
        r"(?P<namespace>\S+) --create-namespace",
        "install",
        helm_installed,
    ),
    Rule(r"kubectl apply -f manifests/install\.yaml", "install", manifest_installed),
    Rule(
        r"kubectl apply --server-side -f charts/darwin-operator/crds/",
        "after-install",
        crds_established,
    ),
    Rule(r"kubectl apply -f manifests/darwin-endpoint\.yaml", "use", reference_ready),
    Rule(r"kubectl get dwe", "use", columns_as_documented),
    Rule(r"kubectl scale dwe (?P<name>\S+) --replicas=(?P<replicas>\d+)", "use", scaled),
    Rule(
        r'kubectl annotate dwe (?P<name>\S+) serving\.darwin\.ai/restartedAt="\$\(date -Is\)"',
        "use",
        restarted,
        before=pods_and_revision,
    ),
    Rule(r"darwin-operator render -f manifests/darwin-endpoint\.yaml", "use", rendered),
    Rule(
        r"docker build -f operator/Dockerfile -t \S+ \.",
        "not-here",
        reason="no Docker on the test machine; tests/unit/test_dockerfile.py checks what the "
        "Dockerfile promises (stages, user, entrypoint, what it copies)",
    ),
)
PHASES = ("install", "after-install", "use", "not-here")


def rule_of(command: DocCommand) -> tuple[Rule, re.Match[str]]:
    matches = [(r, m) for r in RULES if (m := re.fullmatch(r.pattern, command.command))]
    assert len(matches) == 1, f"{command.where}: `{command.text}` is shown to users but " + (
        "no rule here knows what it must do: add one" if not matches else "matches two rules"
    )
    return matches[0]


# ---- the cluster and the run ----


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[ClusterHandle]:
    from localcluster import Binaries, Cluster, NodeShape

    local = Cluster(Path(tempfile.mkdtemp(prefix="darwin-docs-")) / "cluster")
    local.up(4, NodeShape())
    try:
        kubeconfig = str(local.kubeconfig)
        yield ClusterHandle(
            kubeconfig,
            str(Binaries.from_cache().kubectl),
            k8s_config.new_client_from_config(kubeconfig),
        )
    finally:
        local.down()


def uninstall_everything(session: Session) -> None:
    """A clean slate before each install alternative: no release, none of install.yaml."""
    releases = session.run("helm list --all-namespaces --output json")
    assert releases.returncode == 0, releases.stderr
    for release in yaml.safe_load(releases.stdout) or []:
        session.run(f"helm uninstall {release['name']} -n {release['namespace']} --wait")
    gone = session.run("kubectl delete --ignore-not-found --wait -f manifests/install.yaml")
    assert gone.returncode == 0, gone.stderr


def test_every_documented_command_works_as_written(own_cluster, tmp_path):
    commands = documented_commands(DOCUMENTS)
    planned: dict[str, list[tuple[DocCommand, Rule, re.Match[str]]]] = {p: [] for p in PHASES}
    seen: set[str] = set()
    for command in commands:
        rule, match = rule_of(command)
        if command.command not in seen:  # both READMEs show the install.yaml line
            seen.add(command.command)
            planned[rule.phase].append((command, rule, match))
    assert planned["install"] and planned["use"], commands
    unused = [r.pattern for r in RULES if not any(r is x for _, x, _ in sum(planned.values(), []))]
    assert not unused, f"rules for commands the docs no longer show: {unused}"

    session = Session(own_cluster, tmp_path / "home")
    (tmp_path / "home").mkdir()

    def run(command: DocCommand, rule: Rule, match: re.Match[str]) -> None:
        step = Step(command, match, before=rule.before(session, match) if rule.before else None)
        result = session.run(command.text)
        assert result.returncode == 0, (
            f"{command.where}: `{command.text}` exited {result.returncode}:\n{result.stderr}"
        )
        step.stdout = result.stdout
        assert rule.check is not None
        rule.check(session, step)

    for install in planned["install"]:
        uninstall_everything(session)
        run(*install)
    for step in planned["after-install"]:
        run(*step)

    operators = session.json(
        "get", "deployments", "-A", "-l", "app.kubernetes.io/component=operator"
    )["items"]
    (deployment,) = operators
    meta = deployment["metadata"]
    process = operator_in_pod(own_cluster, meta["namespace"], meta["name"], tmp_path)
    process.start()
    try:
        for step in planned["use"]:
            run(*step)
    finally:
        code = process.stop()
    assert code == 0, process.log()

    for command, rule, _ in planned["not-here"]:
        assert rule.reason, f"`{command.text}` is not run: the rule must say why"
        print(f"not run here: `{command.text}` ({command.where}): {rule.reason}")
