"""The configuration real nodes are started with: nodes on one host must not share anything."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import real_nodes
from kwok_nodes import NodeShape, gpu_node_labels, node_manifest

GOMOD = Path(__file__).resolve().parents[1] / "cluster" / "build" / "kubernetes" / "go.mod"


def test_each_node_has_its_own_cgroup_root_ports_bridge_and_subnet():
    pki = Path("/c/pki")
    configs = [real_nodes.kubelet_config(pki, i, 20000 + i, 21000 + i) for i in range(3)]
    assert len({c["cgroupRoot"] for c in configs}) == 3
    assert len({(c["port"], c["healthzPort"]) for c in configs}) == 3
    cni = [real_nodes.cni_config(i)["plugins"][0] for i in range(3)]
    assert len({c["bridge"] for c in cni}) == 3
    subnets = [c["ipam"]["ranges"][0][0]["subnet"] for c in cni]
    assert len(set(subnets)) == 3
    assert all(s.startswith("10.245.") for s in subnets)  # inside kube-proxy's cluster CIDR


def test_kubelets_use_cgroupfs_and_the_cluster_dns_on_the_host_address():
    config = real_nodes.kubelet_config(Path("/c/pki"), 0, 1, 2)
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == [real_nodes.HOST_IP]
    assert config["address"] == real_nodes.HOST_IP
    assert config["readOnlyPort"] == 0
    # the imported images cannot be pulled again: never garbage-collect them
    assert config["imageGCHighThresholdPercent"] == 100


def test_containerd_runs_without_cap_sys_resource_and_with_the_nodes_own_cni_dir():
    config = tomllib.loads(real_nodes.containerd_config(Path("/c/nodes/real-node-1")))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == "/c/nodes/real-node-1/cni"
    assert config["root"] == "/c/nodes/real-node-1/containerd"


def test_real_nodes_carry_the_gpu_labels_of_the_kwok_nodes():
    kwok_labels = node_manifest(1, NodeShape())["metadata"]["labels"]
    assert gpu_node_labels(1, NodeShape()).items() <= kwok_labels.items()


def test_coredns_serves_the_cluster_domain_on_the_host_address():
    corefile = real_nodes.corefile(Path("/c/kubeconfig"), 1, 2)
    assert f"bind {real_nodes.HOST_IP}" in corefile
    assert re.search(r"kubernetes cluster\.local .*\{", corefile)
    assert "forward" not in corefile  # no traffic leaves the machine


def test_the_wrapper_module_builds_kubelet_and_kube_proxy():
    tools = re.search(r"^tool \((.*?)^\)", GOMOD.read_text(), re.M | re.S).group(1).split()
    assert {"k8s.io/kubernetes/cmd/kubelet", "k8s.io/kubernetes/cmd/kube-proxy"} <= set(tools)
