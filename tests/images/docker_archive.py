"""Image tars without a registry or a daemon: layers and docker-archive images (stdlib only).

A docker-archive (what `docker save` writes and `ctr images import` reads) is a tar holding
manifest.json, the image config as <sha256>.json and each layer as <diff_id>/layer.tar. Layers
here are uncompressed, so a layer's diff_id is the sha256 of its tar. Every file is written
beside its final name and renamed into place once complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Inside a rootfs, kept as empty directories: the runtime mounts them.
_MOUNTED = ("dev", "proc", "sys")


@dataclass(frozen=True)
class FileEntry:
    """A file put into a layer at `path` (absolute inside the image)."""

    path: str
    data: bytes
    mode: int = 0o644


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(out: Path, write: Callable[[Path], None]) -> None:
    tmp = out.with_name(f".{out.name}.tmp.{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def rootfs_layer(rootfs: Path, out: Path, *, skip: Iterable[str] = ()) -> None:
    """A layer of a whole root filesystem, ownership and modes kept (run as root)."""
    skipped = set(skip)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        top, _, rest = info.name.partition("/")
        if info.name in skipped or (top in _MOUNTED and rest):
            return None
        return info

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for child in sorted(os.listdir(rootfs)):
                tar.add(rootfs / child, arcname=child, recursive=True, filter=keep)

    _atomic_write(out, write)


def files_layer(entries: Iterable[FileEntry], out: Path) -> None:
    """A layer of the given files, owned by root, with their parent directories."""
    entries = sorted(entries, key=lambda e: e.path)
    dirs = sorted({str(parent) for e in entries for parent in Path(e.path.lstrip("/")).parents})

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in dirs:
                if name != ".":
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            for entry in entries:
                info = tarfile.TarInfo(entry.path.lstrip("/"))
                info.size, info.mode = len(entry.data), entry.mode
                tar.addfile(info, io.BytesIO(entry.data))

    _atomic_write(out, write)


def image_archive(out: Path, *, tag: str, layers: list[Path], config: dict) -> None:
    """A docker-archive tar of `layers` (bottom first) with the container `config`
    (Env, Entrypoint, Cmd, WorkingDir ... as in the OCI image config's `config`)."""
    diff_ids = [sha256_of(layer) for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [
            {"created_by": f"darwin-operator tests/images: layer {d[:12]}"} for d in diff_ids
        ],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": [f"{d}/layer.tar" for d in diff_ids],
        }
    ]

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            add_bytes(tar, config_name, config_bytes)
            for layer, digest in zip(layers, diff_ids, strict=True):
                tar.add(layer, arcname=f"{digest}/layer.tar")
            add_bytes(tar, "manifest.json", json.dumps(manifest).encode())

    _atomic_write(out, write)


def retagged(archive: Path, out: Path, tag: str) -> None:
    """A copy of a docker-archive whose manifest names `tag` instead: the same image under
    another name, as a rebuild pushed with a new tag looks to a Deployment."""

    def write(tmp: Path) -> None:
        with tarfile.open(archive) as source, tarfile.open(tmp, "w") as target:
            for member in source:
                data = source.extractfile(member) if member.isfile() else None
                if member.name.lstrip("./") == "manifest.json":
                    manifest = json.load(data)
                    for entry in manifest:
                        entry["RepoTags"] = [tag]
                    body = json.dumps(manifest).encode()
                    member.size, data = len(body), io.BytesIO(body)
                target.addfile(member, data)

    _atomic_write(out, write)
