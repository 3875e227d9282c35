"""Image packing: what `ctr images import` reads, cached by content, never half written.

The base rootfs here is a small directory marked complete in a temporary cache, so no
debootstrap runs; tests/e2e_real imports the real image into containerd."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import docker_archive
import pytest
import rootfs

import images


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DARWIN_CACHE", str(tmp_path / "cache"))
    fs = rootfs.cache_root() / f"rootfs-{rootfs.SUITE}-{rootfs.rootfs_key(images.BASE_PACKAGES)}"
    (fs / "usr" / "bin").mkdir(parents=True)
    (fs / "dev" / "null").parent.mkdir()
    (fs / "dev" / "null").write_text("not a device")  # contents of dev/ are the runtime's
    (fs / "usr" / "bin" / "python3").write_text("#!/bin/sh\n")
    (fs / "bin").symlink_to("usr/bin")
    (fs / rootfs.MARKER).write_text("test")
    hf = rootfs.cache_root() / f"hf-client-{images.HF_CLIENT_VERSION}"  # as pip leaves it
    (hf / "huggingface_hub").mkdir(parents=True)
    (hf / "huggingface_hub" / "__init__.py").write_text("")
    (hf / images.HF_CLIENT_MARKER).write_text("test")
    return rootfs.cache_root()


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _entries(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_archive_is_a_docker_archive(cache):
    out = images.build("vllm-standin")
    members = _members(out)
    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == [images.STANDIN_IMAGE]
    config_bytes = members[manifest["Config"]]
    assert manifest["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    config = json.loads(config_bytes)
    diff_ids = [
        f"sha256:{hashlib.sha256(members[layer]).hexdigest()}" for layer in manifest["Layers"]
    ]
    assert config["rootfs"]["diff_ids"] == diff_ids
    assert (config["os"], config["architecture"]) == ("linux", "amd64")

    base, app = (_entries(members[layer]) for layer in manifest["Layers"])
    assert {"usr/bin/python3", "bin", "dev"} <= set(base)
    assert "dev/null" not in base and rootfs.MARKER not in base
    assert base["bin"].issym()
    assert "opt/vllm-standin/vllm_standin/serve_flags.json" in app
    assert app["usr/local/bin/vllm"].mode == 0o755
    assert app["usr/local/bin/hf"].mode == 0o755  # the staging pods' hub client
    assert "opt/hf-client/huggingface_hub/__init__.py" in app


def test_a_second_build_reuses_the_archive(cache):
    first = images.build("vllm-standin")
    stamp = first.stat().st_mtime_ns
    assert images.build("vllm-standin") == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in cache.glob("*.tar")] == [first.name]  # only images beside each other


def test_an_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    out = tmp_path / "image.tar"

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        docker_archive._atomic_write(out, broken)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_debootstrap_leaves_no_rootfs_and_a_good_one_does(cache, monkeypatch):
    packages = ("python3", "curl")
    final = cache / f"rootfs-{rootfs.SUITE}-{rootfs.rootfs_key(packages)}"
    final.mkdir()  # a rootfs without its marker: an earlier run was interrupted
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: f"/usr/sbin/{name}")
    outcome = {"fail": True}

    def debootstrap(command, **kwargs):
        target = rootfs.Path(command[-2])
        (target / "usr").mkdir(parents=True)
        if outcome["fail"]:
            raise rootfs.subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(rootfs.subprocess, "run", debootstrap)
    with pytest.raises(rootfs.subprocess.CalledProcessError):
        rootfs.ensure_rootfs(packages)
    assert not final.exists()
    assert not list(cache.glob(".rootfs-*.tmp.*"))

    outcome["fail"] = False
    assert rootfs.ensure_rootfs(packages) == final
    assert (final / rootfs.MARKER).is_file() and (final / "usr").is_dir()
