"""A Debian bookworm minbase root filesystem made by debootstrap, cached by its package list.

Cached at $DARWIN_CACHE/images/rootfs-bookworm-<key>/ (DARWIN_CACHE defaults to
~/.cache/darwin-operator). It is built in a temporary directory beside it and renamed into place
only after debootstrap succeeded and the cleanup ran, with a marker written last: an interrupted
build never leaves a directory that looks complete, and the next run removes its leftovers.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
MARKER = ".darwin-rootfs-complete"
# Bump when the way the rootfs is made changes, so that cached copies are rebuilt.
RECIPE = "1"
# Removed after debootstrap: package caches and docs no container needs.
PRUNE = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man")


def cache_root() -> Path:
    root = os.environ.get("DARWIN_CACHE") or Path.home() / ".cache" / "darwin-operator"
    return Path(root) / "images"


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


@contextmanager
def locked(path: Path):
    """One builder at a time per cache entry; a second caller waits, then finds it done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix[:-1]:
                points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts what an interrupted debootstrap left mounted inside (proc,
    sys, a bind of /dev): removing through such a mount would delete the host's files."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
    if left := _mounts_under(path):
        raise RuntimeError(f"still mounted under {path}: {left}; not removing it")
    shutil.rmtree(path)


def rootfs_key(packages: tuple[str, ...]) -> str:
    text = "\n".join([SUITE, MIRROR, RECIPE, *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_rootfs(packages: tuple[str, ...]) -> Path:
    """The cached rootfs with `packages` installed (built once; later calls return at once)."""
    root = cache_root()
    final = root / f"rootfs-{SUITE}-{rootfs_key(packages)}"
    if (final / MARKER).is_file():
        return final
    with locked(root / f".{final.name}.lock"):
        if (final / MARKER).is_file():
            return final
        for leftover in root.glob(f".{final.name}.tmp.*"):
            remove_tree(leftover)
        remove_tree(final)  # present without a marker: an interrupted rename or cleanup
        if shutil.which("debootstrap") is None:
            raise SystemExit(
                "images: debootstrap is missing: run `apt-get install debootstrap` (as root)"
            )
        if os.geteuid() != 0:
            raise SystemExit("images: debootstrap needs root to build the base rootfs")
        tmp = root / f".{final.name}.tmp.{os.getpid()}"
        try:
            log(f"debootstrap {SUITE} minbase with {', '.join(packages)} (about a minute)")
            include = ",".join(packages)
            command = ["debootstrap", "--variant=minbase", f"--include={include}", SUITE]
            subprocess.run([*command, str(tmp), MIRROR], check=True, stdout=sys.stderr)
            if _mounts_under(tmp):
                raise RuntimeError(f"debootstrap left mounts under {tmp}")
            for relative in PRUNE:
                for child in (tmp / relative).glob("*"):
                    remove_tree(
                        child
                    ) if child.is_dir() and not child.is_symlink() else child.unlink()
            (tmp / MARKER).write_text(f"{SUITE} {' '.join(sorted(packages))}\n")
            tmp.rename(final)
        finally:
            remove_tree(tmp)
    return final
