"""The host-global state real nodes touch, and how to put it back.

Real nodes change things outside their cluster directory: network links, iptables chains,
cgroups, sysctls. What was there before is recorded in a claim file under /run (one cluster with
real nodes per host at a time: two kube-proxies would fight over the same iptables chains), and
`release` undoes every change, also for a claim left by a run that died.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

CLAIM_DIR = Path("/run/darwin-operator-real-nodes")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Sysctls the kubelet, kube-proxy or the CNI bridge set on the host (written down in
# NOTES-platform.md and the kubelet's kernel tunables).
SYSCTLS = (
    "net.ipv4.ip_forward",  # first: writing it resets the per-interface forwarding flags
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.default.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# Chains created by kube-proxy, the kubelet and CNI plugins; new ones are removed by `release`.
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle", "raw")

# Commands the real nodes run; the Debian package that has each.
REQUIRED_COMMANDS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "busybox": "busybox-static",
    "nft": "nftables",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")


def preflight_problem(binaries: list[Path], cluster_dir: Path) -> str | None:
    """Why real nodes cannot start here, in one line; None if they can."""
    if os.geteuid() != 0:
        return "real nodes need root (containerd, iptables, cgroups, network links); run as root"
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if not shutil.which(cmd)})
    missing += (
        []
        if all((CNI_BIN_DIR / p).exists() for p in CNI_PLUGINS)
        else ["containernetworking-plugins"]
    )
    if missing:
        return (
            f"real nodes need the Debian packages {' '.join(sorted(set(missing)))}; "
            "run tests/cluster/install-node-packages.sh"
        )
    if absent := [str(b) for b in binaries if not os.access(b, os.X_OK)]:
        return f"real nodes need {', '.join(absent)}; run tests/cluster/build.sh node coredns"
    if not (CGROUP_ROOT / "memory" / "cgroup.procs").exists():
        return "real nodes need cgroup v1 hierarchies under /sys/fs/cgroup (cgroupfs driver)"
    for shadowed in ("/run", "/var/lib", "/var/log"):
        if cluster_dir.resolve().is_relative_to(shadowed):
            return f"the cluster directory must not be under {shadowed} (real nodes remount it)"
    return None


# --- sysctls ---------------------------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls(names=SYSCTLS) -> dict[str, str]:
    values = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def restore_sysctls(values: dict[str, str]) -> None:
    for name in SYSCTLS:
        if name in values and read_sysctls((name,)).get(name) != values[name]:
            with contextlib.suppress(OSError):
                _sysctl_path(name).write_text(values[name])


# --- iptables --------------------------------------------------------------------------------


def chains(family: str = "iptables") -> dict[str, list[str]]:
    """Chains per table, from iptables-save (tables never used are left out)."""
    out = subprocess.run([f"{family}-save"], capture_output=True, text=True, check=False).stdout
    found: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            found.setdefault(table, [])
        elif line.startswith(":"):
            found[table].append(line[1:].split()[0])
    return found


def remove_new_chains(before: dict[str, dict[str, list[str]]]) -> None:
    """Deletes the KUBE-*/CNI-* chains that were not there before, and the rules jumping to them."""
    for family in ("iptables", "ip6tables"):
        now, was = chains(family), before.get(family, {})
        for table, names in now.items():
            doomed = {
                c for c in names if c.startswith(CHAIN_PREFIXES) and c not in was.get(table, [])
            }
            if not doomed:
                continue
            rules = subprocess.run(
                [family, "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout
            for rule in rules.splitlines():
                parts = shlex.split(rule)
                if parts[:1] != ["-A"] or parts[1] in doomed:
                    continue
                if any(parts[i + 1] in doomed for i, p in enumerate(parts[:-1]) if p == "-j"):
                    subprocess.run([family, "-t", table, "-D", *parts[1:]], check=False)
            for chain in doomed:
                subprocess.run([family, "-t", table, "-F", chain], check=False)
            for chain in doomed:
                subprocess.run([family, "-t", table, "-X", chain], check=False)
        # iptables-nft creates a table on first use; drop those that were not there and are empty.
        nft_family = "ip" if family == "iptables" else "ip6"
        for table in now:
            if table not in was and _only_policies(family, table):
                subprocess.run(["nft", "delete", "table", nft_family, table], check=False)


def _only_policies(family: str, table: str) -> bool:
    rules = subprocess.run(
        [family, "-t", table, "-S"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return all(rule.startswith("-P ") for rule in rules)


# --- cgroups (v1, cgroupfs) --------------------------------------------------------------------


def hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_ROOT.iterdir() if (p / "cgroup.procs").exists())


def make_cgroup(name: str) -> None:
    """/NAME in every hierarchy; cpuset needs its cpus and mems before a task can join."""
    for root in hierarchies():
        path = root / name
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (root / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text((root / knob).read_text())


def join_cgroup(name: str) -> None:
    """Moves the calling process into /NAME of every hierarchy (run in the child before exec)."""
    for root in hierarchies():
        (root / name / "cgroup.procs").write_text(str(os.getpid()))


def cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for root in hierarchies():
        base = root / name
        if base.is_dir():
            for dirpath, _, _ in os.walk(base):
                with contextlib.suppress(OSError):
                    text = (Path(dirpath) / "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return pids


def kill_cgroup(name: str, timeout: float = 20) -> None:
    """SIGKILL everything in /NAME (and below) until it is empty."""
    deadline = time.monotonic() + timeout
    while (pids := cgroup_pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_cgroup(name: str) -> None:
    """rmdir /NAME and everything below it (deepest first) in every hierarchy."""
    for root in hierarchies():
        base = root / name
        if not base.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):
            for _ in range(50):  # a cgroup whose last task just died can be busy for a moment
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


# --- network links -----------------------------------------------------------------------------


def links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def add_link(name: str, kind: str, address: str) -> None:
    subprocess.run(["ip", "link", "add", name, "type", kind], check=True, capture_output=True)
    subprocess.run(["ip", "addr", "add", address, "dev", name], check=True, capture_output=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True, capture_output=True)


def links_on(bridge: str) -> list[str]:
    """The links enslaved to `bridge` (pods' veth ends)."""
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def delete_link(name: str) -> None:
    if name in links():
        subprocess.run(["ip", "link", "delete", name], check=False, capture_output=True)


# --- the claim ---------------------------------------------------------------------------------


class Claim:
    """What one cluster changed on this host: read and written as CLAIM_DIR/state.json."""

    def __init__(self, directory: Path = CLAIM_DIR):
        self.dir = directory
        self.file = directory / "state.json"

    def read(self) -> dict:
        try:
            return json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}

    def write(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.file)

    @contextlib.contextmanager
    def locked(self):
        """One cluster at a time between looking at the claim and taking it."""
        # The lock is on the parent directory itself, so that no lock file is left behind.
        fd = os.open(self.dir.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def starting(self) -> bool:
        """True while the process that took the claim still runs (its cluster may be starting)."""
        pid, started = self.read().get("starter", (0, ""))
        return bool(pid) and process_start_time(pid) == started

    def take(self, owner: Path) -> dict:
        """Records the host as it is now, before anything changes, for `owner`."""
        state = {
            "owner": str(owner),
            "starter": [os.getpid(), process_start_time(os.getpid())],
            "sysctls": read_sysctls(),
            "chains": {f: chains(f) for f in ("iptables", "ip6tables")},
            "links": [],
            "cgroups": [],
            "pids": {},
        }
        self.write(state)
        return state

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def process_start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot ("" if gone): with the pid, an identity
    that survives pid reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
