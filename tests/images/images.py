"""The images the tests run on real nodes, made locally as docker-archive tars.

    python3 tests/images/images.py vllm-standin darwin-operator   # prints each image's tar path

Each image starts from one cached Debian bookworm minbase rootfs (rootfs.py): the vLLM stand-in
is packed from it plus a layer of the repo's own files; the operator image is built from
operator/Dockerfile by buildah on a base image made from it (operator_image.py). Everything is
cached under $DARWIN_CACHE/images (default ~/.cache/darwin-operator/images) by content: a second
run with nothing changed only hashes the repo's files. Only finished image tars are written to
that directory itself (a real node imports every *.tar there); layers go to its layers/
directory. Load a tar into a node's containerd with `ctr -n k8s.io images import TAR`; pods then
use the tag with imagePullPolicy IfNotPresent or Never.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Its siblings are imported by bare name: a script's directory is on the path (build.sh runs
# this file), pytest's `pythonpath` names it, and tests/cluster/in_cluster.py adds it.
import docker_archive
import operator_image
import rootfs
from docker_archive import FileEntry

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STANDIN_SOURCE = REPO / "tests" / "standin" / "vllm_standin"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The Debian packages of the one base rootfs every image here starts from (debootstrap runs once
# per machine): python3-venv for the operator image's build stage (tests/images/operator_image.py).
BASE_PACKAGES = ("python3", "python3-venv")
# The name pods use (spec.engine.image in the tests); a re-import replaces the image behind it.
STANDIN_IMAGE = "localhost/darwin/vllm-standin:0.33.0"
# The chart's image.repository and image.tag for an install on the real nodes.
OPERATOR_REPOSITORY = "localhost/darwin/darwin-operator"
OPERATOR_TAG = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
OPERATOR_IMAGE = f"{OPERATOR_REPOSITORY}:{OPERATOR_TAG}"

_VLLM_LAUNCHER = b"""#!/usr/bin/python3
# vLLM stand-in (test tooling of darwin-operator): see tests/standin/README.md.
import sys

sys.path.insert(0, "/opt/vllm-standin")
from vllm_standin.main import main

sys.exit(main())
"""


# The hub client of vLLM 0.33.0's image (the version in the vLLM venv; tests/staging checks):
# the staging pods run its `hf download` in the stand-in image as they would in vLLM's.
HF_CLIENT_VERSION = "2.4.0"
HF_CLIENT_DIR = "/opt/hf-client"
HF_CLIENT_MARKER = ".darwin-hf-client-complete"

_HF_LAUNCHER = f"""#!/usr/bin/python3
# hf, the Hugging Face hub client (huggingface_hub {HF_CLIENT_VERSION}, as in vLLM's image).
import sys

sys.path.insert(0, "{HF_CLIENT_DIR}")
from huggingface_hub.cli.hf import main

sys.exit(main())
""".encode()


def hf_client_tree() -> Path:
    """huggingface_hub and its dependencies, pip-installed once into the cache (PyPI)."""
    final = rootfs.cache_root() / f"hf-client-{HF_CLIENT_VERSION}"
    if (final / HF_CLIENT_MARKER).is_file():
        return final
    with rootfs.locked(final.with_name(f".{final.name}.lock")):
        if (final / HF_CLIENT_MARKER).is_file():
            return final
        tmp = final.with_name(f".{final.name}.tmp.{os.getpid()}")
        shutil.rmtree(final, ignore_errors=True)
        try:
            rootfs.log(f"pip install huggingface_hub=={HF_CLIENT_VERSION} for the image")
            pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
            pip += ["--disable-pip-version-check", "--target", str(tmp)]
            subprocess.run(
                [*pip, f"huggingface_hub=={HF_CLIENT_VERSION}"], check=True, stdout=sys.stderr
            )
            shutil.rmtree(tmp / "bin", ignore_errors=True)  # scripts naming the host's python
            (tmp / HF_CLIENT_MARKER).write_text(HF_CLIENT_VERSION + "\n")
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _hf_client_files() -> list[FileEntry]:
    tree = hf_client_tree()
    entries = [FileEntry("/usr/local/bin/hf", _HF_LAUNCHER, 0o755)]
    for path in sorted(tree.rglob("*")):
        if path.is_file() and path.name != HF_CLIENT_MARKER and "__pycache__" not in path.parts:
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            relative = path.relative_to(tree).as_posix()
            entries.append(FileEntry(f"{HF_CLIENT_DIR}/{relative}", path.read_bytes(), mode))
    return entries


@dataclass(frozen=True)
class Image:
    tag: str
    packages: tuple[str, ...]  # Debian packages in the base rootfs
    files: Callable[[], list[FileEntry]]  # the layer of the repo's files
    config: dict  # the OCI config's `config`: Env, Cmd, WorkingDir ...


@dataclass(frozen=True)
class DockerfileImage:
    """Built by buildah from operator/Dockerfile on the base rootfs (operator_image.py)."""

    tag: str
    packages: tuple[str, ...]


def _standin_files() -> list[FileEntry]:
    entries = [FileEntry("/usr/local/bin/vllm", _VLLM_LAUNCHER, 0o755)]
    for path in sorted(STANDIN_SOURCE.iterdir()):
        if path.suffix in (".py", ".json"):
            entries.append(
                FileEntry(f"/opt/vllm-standin/vllm_standin/{path.name}", path.read_bytes())
            )
    return entries


IMAGES: dict[str, Image | DockerfileImage] = {
    "vllm-standin": Image(
        tag=STANDIN_IMAGE,
        packages=BASE_PACKAGES,
        files=lambda: _standin_files() + _hf_client_files(),
        config={
            "Env": [f"PATH={PATH}", "PYTHONUNBUFFERED=1"],
            "Cmd": ["vllm", "--help"],
            "WorkingDir": "/",
        },
    ),
    "darwin-operator": DockerfileImage(tag=OPERATOR_IMAGE, packages=BASE_PACKAGES),
}


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _layers_dir() -> Path:
    # Not beside the image tars: every *.tar in the images directory is an image to import.
    path = rootfs.cache_root() / "layers"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _base_layer(packages: tuple[str, ...]) -> Path:
    fs = rootfs.ensure_rootfs(packages)
    layer = _layers_dir() / f"{fs.name}.tar"
    if not layer.is_file():
        with rootfs.locked(layer.with_name(f".{layer.name}.lock")):
            if not layer.is_file():
                rootfs.log(f"packing {fs.name} as a layer")
                docker_archive.rootfs_layer(fs, layer, skip={rootfs.MARKER})
    return layer


def _files_layer(name: str, entries: list[FileEntry]) -> Path:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(f"{entry.path}\0{entry.mode}\0{len(entry.data)}\0".encode())
        digest.update(entry.data)
    layer = _layers_dir() / f"{name}-{digest.hexdigest()[:16]}.tar"
    if not layer.is_file():
        docker_archive.files_layer(entries, layer)
    return layer


def build(name: str) -> Path:
    """The image's docker-archive tar, built unless an identical one is cached."""
    image = IMAGES[name]
    if isinstance(image, DockerfileImage):
        return operator_image.build(image.tag, image.packages, rootfs.cache_root(), name)
    layers = [_base_layer(image.packages), _files_layer(name, image.files())]
    key = _key(image.tag, json.dumps(image.config, sort_keys=True), *(p.name for p in layers))
    out = rootfs.cache_root() / f"{name}-{key}.tar"
    if not out.is_file():
        with rootfs.locked(out.with_name(f".{name}.lock")):
            if not out.is_file():
                rootfs.log(f"packing {image.tag}")
                docker_archive.image_archive(out, tag=image.tag, layers=layers, config=image.config)
                for old in rootfs.cache_root().glob(f"{name}-*.tar"):
                    if old != out:
                        old.unlink(missing_ok=True)
                for old in _layers_dir().glob(f"{name}-*.tar"):
                    if old != layers[-1]:
                        old.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", choices=sorted(IMAGES), metavar="IMAGE")
    args = parser.parse_args(argv)
    for name in args.names:
        start = time.monotonic()
        tar = build(name)
        size = os.path.getsize(tar) / 2**20
        rootfs.log(f"{IMAGES[name].tag}: {tar} ({size:.0f} MiB, {time.monotonic() - start:.1f} s)")
        print(tar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
