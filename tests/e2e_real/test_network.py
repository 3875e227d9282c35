"""Cluster DNS (CoreDNS) and Services (kube-proxy) for pods on real nodes, and kubectl logs/exec."""

from __future__ import annotations

import urllib.request

from tests.e2e.waiting import wait_for
from tests.e2e_real.pods import apply, exec_in, run_pods, toolbox_pod

SLEEP = "exec sleep 3600"
# An HTTP GET from inside a pod: busybox's nc (the static busybox's wget crashes).
HTTP_GET = 'printf "GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n" | nc -w 3 {host} {port}'

# busybox httpd serving a page that names the pod (the answer tells who answered).
SERVE = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def service(name: str, selector: dict, *, headless: bool = False, port: int = 80) -> dict:
    spec = {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": 8080}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def test_a_pod_resolves_a_headless_service_hostname(cluster, namespace):
    apply(cluster, namespace, service("group", {"app": "leader"}, headless=True))
    leader, _ = run_pods(
        cluster,
        namespace,
        toolbox_pod(
            "leader", SERVE, labels={"app": "leader"}, hostname="rank-0", subdomain="group"
        ),
        toolbox_pod("client", SLEEP),
    )
    fqdn = f"rank-0.group.{namespace}.svc.cluster.local"

    def resolved() -> bool:
        out = exec_in(cluster, namespace, "client", "nslookup", fqdn, check=False).stdout
        return leader["status"]["podIP"] in out

    wait_for(resolved, timeout=60, what=f"{fqdn} resolving to the leader's pod IP")
    missing = exec_in(
        cluster,
        namespace,
        "client",
        "nslookup",
        f"rank-9.group.{namespace}.svc.cluster.local",
        check=False,
    )
    assert leader["status"]["podIP"] not in missing.stdout


def test_a_cluster_ip_service_answers_from_the_host_and_from_a_pod(cluster, namespace):
    backend_node, client_node = cluster.real_node_names[0], cluster.real_node_names[-1]
    apply(cluster, namespace, service("web", {"app": "web"}))
    run_pods(
        cluster,
        namespace,
        toolbox_pod("web-0", SERVE, labels={"app": "web"}, node=backend_node),
        toolbox_pod("client", SLEEP, node=client_node),
    )
    ip = cluster.json("get", "service", "-n", namespace, "web")["spec"]["clusterIP"]

    def from_host() -> str:
        with urllib.request.urlopen(f"http://{ip}/", timeout=3) as answer:
            return answer.read().decode().strip()

    assert wait_for(from_host, timeout=60, what=f"{ip} answering from the host") == "web-0"

    def from_pod() -> str:
        get = HTTP_GET.format(path="/", host=ip, port=80)
        answer = exec_in(cluster, namespace, "client", "sh", "-c", get, check=False).stdout
        return answer.splitlines()[-1].strip() if " 200 " in answer else ""

    assert wait_for(from_pod, timeout=60, what=f"{ip} answering from a pod") == "web-0"


def test_pods_reach_the_apiserver_through_the_kubernetes_service(cluster, namespace):
    run_pods(cluster, namespace, toolbox_pod("client", SLEEP))
    # Plain HTTP to the apiserver's TLS port: its answer proves whom the Service led to.
    get = HTTP_GET.format(path="/livez", host="10.96.0.1", port=443)

    def answer() -> bool:
        out = exec_in(cluster, namespace, "client", "sh", "-c", get, check=False).stdout
        return "Client sent an HTTP request to an HTTPS server" in out

    wait_for(answer, timeout=60, what="the apiserver answering on kubernetes.default:443")


def test_kubectl_logs_and_exec_reach_the_container(cluster, namespace):
    run_pods(
        cluster, namespace, toolbox_pod("talker", 'echo "started as $(hostname)"; exec sleep 3600')
    )
    logs = wait_for(
        lambda: cluster.kubectl("logs", "-n", namespace, "talker").stdout,
        timeout=30,
        what="the container's first line in kubectl logs",
    )
    assert "started as talker" in logs
    out = exec_in(cluster, namespace, "talker", "sh", "-c", "echo $((6 * 7)) > /tmp/x; cat /tmp/x")
    assert out.stdout.strip() == "42"
    failed = exec_in(cluster, namespace, "talker", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
