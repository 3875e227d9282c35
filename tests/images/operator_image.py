"""The operator image, built from operator/Dockerfile with Debian's buildah (no Docker, no
registry) on a base made from the cached Debian rootfs, and exported as a docker-archive tar.

    python3 tests/images/images.py darwin-operator     # prints the tar's path

Cached by content: the tar's name carries a hash of the Dockerfile, the files it copies and the
base rootfs, so a run with none of them changed only hashes them. Under $DARWIN_CACHE/buildah,
outside the repo: buildah's storage (vfs: no overlay mounts, which a shared host may not
allow), where the base image stays between builds (the built image is removed once exported),
and a wheelhouse of the package's dependencies. The wheelhouse is downloaded once per
dependency list, by pip in the base image with the host's CA bundle mounted (a TLS-intercepting
proxy's CA is trusted that way; such a proxy also keeps pip's own HTTP cache empty); builds
then install from it without the network (the Dockerfile's PIP_NO_INDEX and PIP_FIND_LINKS
build arguments). Needs root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import rootfs

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "operator" / "Dockerfile"
# What the Dockerfile copies from the build context (the only files .dockerignore lets in).
CONTEXT = ("pyproject.toml", "README.md", "operator/darwin_operator")
CA_BUNDLE_DIR = "/etc/ssl/certs"
CA_BUNDLE = f"{CA_BUNDLE_DIR}/ca-certificates.crt"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the way the image is built changes, so that cached tars are rebuilt.
RECIPE = "2"


def context_files() -> list[Path]:
    """Every file the build copies, relative to the repo, sorted (no bytecode caches)."""
    files = []
    for entry in CONTEXT:
        path = REPO / entry
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [
            p.relative_to(REPO)
            for p in found
            if "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return files


# Copied for the package's metadata (its long description) only: a change to it alone does not
# rebuild the image, which would then carry the README of its last build.
METADATA_ONLY = Path("README.md")


def content_key(base_key: str) -> str:
    digest = hashlib.sha256(f"{RECIPE}\0{base_key}\0".encode())
    hashed = [p for p in context_files() if p != METADATA_ONLY]
    for relative in [Path("operator/Dockerfile"), *hashed]:
        data = (REPO / relative).read_bytes()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def _storage() -> Path:
    return rootfs.cache_root().parent / "buildah"


def buildah(*args: str, capture: bool = False) -> str:
    storage = _storage()
    command = [
        "buildah",
        "--root",
        str(storage / "storage"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "vfs",
        *args,
    ]
    result = subprocess.run(
        command,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else 2,  # progress to stderr: stdout is for paths
        env={**os.environ, "TMPDIR": str(storage / "tmp")},
    )
    return (result.stdout or "").strip()


def _has_image(name: str) -> bool:
    try:
        buildah("inspect", "--type", "image", name, capture=True)
    except subprocess.CalledProcessError:
        return False
    return True


def base_image(packages: tuple[str, ...]) -> str:
    """The cached rootfs as a buildah image (made once; kept in buildah's storage)."""
    fs = rootfs.ensure_rootfs(packages)
    name = f"localhost/darwin/python-base:{fs.name.removeprefix('rootfs-')}"
    if _has_image(name):
        return name
    rootfs.log(f"making the base image {name} from {fs}")
    container = buildah("from", "scratch", capture=True)
    try:
        mount = buildah("mount", container, capture=True)
        subprocess.run(["cp", "-a", f"{fs}/.", mount], check=True)
        Path(mount, rootfs.MARKER).unlink(missing_ok=True)
        buildah("umount", container)
        buildah("config", "--env", f"PATH={PATH}", "--cmd", "python3", container)
        buildah("commit", "--quiet", container, name, capture=True)
    finally:
        buildah("rm", container, capture=True)
    return name


def requirements() -> list[str]:
    """What pip installs in the build: the package's dependencies and its build backend."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return sorted([*project["project"]["dependencies"], *project["build-system"]["requires"]])


def wheelhouse(base: str) -> Path:
    """Every wheel the build installs, downloaded once per requirement list (in the base, so
    that they fit its Python and platform)."""
    wanted = requirements()
    key = hashlib.sha256("\0".join([base, *wanted]).encode()).hexdigest()[:16]
    wheels = _storage() / "wheels" / key
    if (wheels / rootfs.MARKER).is_file():
        return wheels
    for old in wheels.parent.glob("*"):
        shutil.rmtree(old)
    partial = wheels.with_name(f".{key}.tmp")
    partial.mkdir(parents=True)
    rootfs.log(f"downloading the wheels of {', '.join(wanted)}")
    container = buildah("from", base, capture=True)
    try:
        buildah(
            "run", "--network", "host",
            "-v", f"{CA_BUNDLE_DIR}:{CA_BUNDLE_DIR}:ro", "-v", f"{partial}:/wheels",
            container, "--",
            "sh", "-c", 'python3 -m venv /tmp/venv && exec /tmp/venv/bin/pip download '
            f'--disable-pip-version-check --cert {CA_BUNDLE} --dest /wheels "$@"', "-", *wanted,
        )  # fmt: skip
    finally:
        buildah("rm", container, capture=True)
    (partial / rootfs.MARKER).write_text("\n".join(wanted) + "\n")
    partial.rename(wheels)
    return wheels


def _stage_context(directory: Path) -> None:
    for relative in context_files():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)


def build(tag: str, packages: tuple[str, ...], out_dir: Path, name: str) -> Path:
    """The image's docker-archive tar in `out_dir`, built unless an identical one is cached."""
    fs = rootfs.ensure_rootfs(packages)
    out = out_dir / f"{name}-{content_key(fs.name)}.tar"
    if out.is_file():
        return out
    with rootfs.locked(out_dir / f".{name}.lock"):
        if out.is_file():
            return out
        for directory in ("storage", "run", "tmp", "wheels"):
            (_storage() / directory).mkdir(parents=True, exist_ok=True)
        base = base_image(packages)
        wheels = wheelhouse(base)
        rootfs.log(f"building {tag} from {DOCKERFILE.relative_to(REPO)} on {base}")
        with tempfile.TemporaryDirectory(dir=_storage() / "tmp") as tmp:
            context = Path(tmp) / "context"
            _stage_context(context)
            buildah(
                "bud", "--network", "none", "--layers=false",
                "--build-arg", f"PYTHON_IMAGE={base}",
                # pip installs from the wheelhouse only, mounted where the base has a directory
                "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/mnt",
                "-v", f"{wheels}:/mnt:ro",
                "-f", str(DOCKERFILE), "-t", tag, str(context),
            )  # fmt: skip
            partial = Path(tmp) / "image.tar"
            try:
                buildah("push", "--quiet", tag, f"docker-archive:{partial}:{tag}")
            finally:
                buildah("rmi", tag, capture=True)
            os.replace(partial, out)
        for old in out_dir.glob(f"{name}-*.tar"):
            if old != out:
                old.unlink(missing_ok=True)
    return out
