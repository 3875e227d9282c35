"""The images every real node has without a registry: the pod sandbox ("pause") and a toolbox.

Both are Debian's static busybox in a one-layer image, written as one docker-archive tar
($DARWIN_CACHE/images/darwin-node-busybox.tar) that `ctr images import` loads:
  - registry.k8s.io/pause:3.10: what containerd runs as each pod's sandbox (any process that
    sleeps does; containerd's config names this tag);
  - localhost/darwin/toolbox:1: sh, httpd, nslookup, nc, wget... for the real-node tests.
Standard library only. Rebuilt when the busybox binary changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
TOOLBOX_IMAGE = "localhost/darwin/toolbox:1"
TAR_NAME = "darwin-node-busybox.tar"
PATH = "/bin"


def _layer(busybox: bytes, applets: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "dev", "proc", "sys", "etc", "tmp", "var", "var/www"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        for name, data in (("etc/passwd", passwd), ("etc/group", b"root:x:0:\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _config(layer_digest: str, entrypoint: list[str]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [f"PATH={PATH}"], "Entrypoint": entrypoint, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        },
        sort_keys=True,
    ).encode()


def build(cache: Path) -> Path:
    """The tar of both images, built only if missing or made from another busybox."""
    busybox = BUSYBOX.read_bytes()
    key = hashlib.sha256(busybox).hexdigest()[:16]
    out = cache / "images" / TAR_NAME
    stamp = out.with_suffix(".key")
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    layer = _layer(busybox, [a for a in applets if a != "busybox"])
    layer_digest = hashlib.sha256(layer).hexdigest()
    images = {
        PAUSE_IMAGE: ["/bin/sleep", "2147483647"],
        TOOLBOX_IMAGE: ["/bin/sh"],
    }
    manifest, members = [], {f"{layer_digest}/layer.tar": layer}
    for tag, entrypoint in images.items():
        config = _config(layer_digest, entrypoint)
        name = f"{hashlib.sha256(config).hexdigest()}.json"
        members[name] = config
        manifest.append(
            {"Config": name, "RepoTags": [tag], "Layers": [f"{layer_digest}/layer.tar"]}
        )
    members["manifest.json"] = json.dumps(manifest).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    with tarfile.open(tmp, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    stamp.write_text(key)
    return out


def is_image_archive(path: Path) -> bool:
    """A docker-archive has a manifest.json (the cache also holds bare layer tars)."""
    try:
        with tarfile.open(path) as tar:
            return any(m.name in ("manifest.json", "./manifest.json") for m in tar)
    except (OSError, tarfile.TarError):
        return False


def image_tars(cache: Path) -> list[Path]:
    """Every image tar in the cache (ours, then those tests/images builds, oldest first so that
    a tag's newest build is imported last and wins)."""
    ours = build(cache)
    others = [p for p in (cache / "images").glob("*.tar") if p != ours and is_image_archive(p)]
    return [ours, *sorted(others, key=lambda p: p.stat().st_mtime)]
