"""The pinned versions of the test control plane agree between versions.env and the go.mod files."""

import json
import re
from pathlib import Path

from kwok_nodes import node_lists
from localcluster import NodeShape, node_manifest, versions

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def required_version(gomod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", gomod.read_text(), re.M)
    assert match, f"{module} not required in {gomod}"
    return match.group(1)


def test_kubernetes_pin_matches_wrapper_module():
    gomod = CLUSTER / "build" / "kubernetes" / "go.mod"
    pinned = versions()["K8S_VERSION"]
    assert required_version(gomod, "k8s.io/kubernetes") == pinned
    staging = pinned.replace("v1.", "v0.", 1)
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => \S+ (v\S+)", gomod.read_text(), re.M)
    assert len(replaces) >= 31
    assert {version for _, version in replaces} == {staging}


def test_etcd_pin_matches_wrapper_module():
    gomod = CLUSTER / "build" / "etcd" / "go.mod"
    assert required_version(gomod, "go.etcd.io/etcd/server/v3") == versions()["ETCD_VERSION"]


def test_fake_node_looks_like_a_b200_box():
    node = node_manifest(5, NodeShape())
    assert node["metadata"]["name"] == "kwok-node-5"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-B200"
    assert (
        labels["darwin.test/rack"] == "rack-2" and labels["topology.kubernetes.io/zone"] == "zone-1"
    )
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"


def test_nodes_applied_in_parallel_lists_are_each_node_once():
    lists = [json.loads(doc)["items"] for doc in node_lists(105, NodeShape(), per_list=50)]
    assert [len(items) for items in lists] == [50, 50, 5]
    names = [n["metadata"]["name"] for items in lists for n in items]
    assert names == [f"kwok-node-{i}" for i in range(105)]


def test_lws_pin_matches_wrapper_module():
    gomod = CLUSTER / "build" / "lws" / "go.mod"
    assert required_version(gomod, "sigs.k8s.io/lws") == versions()["LWS_VERSION"]
