"""cluster-up and cluster-down with real nodes leave the host as they found it; a second cluster
is refused while real nodes are up, and a start that fails midway is undone."""

from __future__ import annotations

import os
from pathlib import Path

import host
import pytest
import real_nodes
from localcluster import Cluster, NodeShape

pytestmark = pytest.mark.own_cluster


def host_snapshot(marker: Path) -> dict:
    """What real nodes may change on the host, plus anything of ours still running or mounted."""
    processes = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(marker) in cmdline or cmdline.startswith(real_nodes.NAMESPACE_HOLDER):
                processes.append(cmdline.replace("\0", " "))
    mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(marker) in m]
    cgroups = sorted(
        str(p)
        for root in host.hierarchies()
        for p in root.iterdir()
        if p.name.startswith("darwin-")
    )
    return {
        "links": sorted(host.links()),
        "chains": {family: host.chains(family) for family in ("iptables", "ip6tables")},
        "sysctls": host.read_sysctls(),
        "cgroups": cgroups,
        "claimed": host.Claim().file.exists(),
        "processes": processes,
        "mounts": mounts,
    }


def test_down_restores_the_host_and_a_second_cluster_is_refused(tmp_path):
    before = host_snapshot(tmp_path)
    first = Cluster(tmp_path / "first")
    try:
        first.up(0, NodeShape(), real_nodes=1)
        during = host_snapshot(tmp_path)
        assert real_nodes.HOST_LINK in during["links"] and during["claimed"]
        assert during["processes"] and during["mounts"] == []  # the node's mounts stay inside it
        pids = first.real_nodes().claim.read()["pids"]

        first.up(0, NodeShape(), real_nodes=1)  # a second `up` keeps the healthy cluster
        assert first.real_nodes().claim.read()["pids"] == pids

        second = Cluster(tmp_path / "second")
        with pytest.raises(SystemExit, match="are up on this host"):
            second.up(0, NodeShape(), real_nodes=1)
        assert not (tmp_path / "second").exists()
        assert first.healthy()
    finally:
        first.down()
    assert host_snapshot(tmp_path) == before


def test_a_start_that_fails_midway_is_undone(tmp_path, monkeypatch):
    """A kubelet that exits at once: containerd and the rest are up, the node never registers."""
    from_cache = real_nodes.NodeBinaries.from_cache

    def exiting_kubelet(cache, versions):
        bins = from_cache(cache, versions)
        return real_nodes.NodeBinaries(Path("/bin/false"), bins.kube_proxy, bins.coredns)

    monkeypatch.setattr(real_nodes.NodeBinaries, "from_cache", staticmethod(exiting_kubelet))
    before = host_snapshot(tmp_path)
    broken = Cluster(tmp_path / "broken")
    with pytest.raises(SystemExit, match="real nodes Ready"):
        broken.up(0, NodeShape(), timeout=20, attempts=1, real_nodes=1)
    assert host_snapshot(tmp_path) == before
    assert not (tmp_path / "broken").exists()


def test_preflight_refuses_without_root_before_changing_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = host_snapshot(tmp_path)
    with pytest.raises(SystemExit, match="real nodes need root"):
        Cluster(tmp_path / "c").up(0, NodeShape(), real_nodes=1)
    assert host_snapshot(tmp_path) == before
    assert not (tmp_path / "c").exists()
