"""What the operator image build hashes and copies is what the Dockerfile's build context holds,
and the hash moves with every file the image is made from. (The build itself, with buildah, is
run by `make images` and the real-node tier.)"""

from __future__ import annotations

import io
import json
import tarfile

import docker_archive
import operator_image

from tests.unit.test_dockerfile import dockerignore_excludes


def test_the_staged_context_is_what_dockerignore_lets_in(tmp_path):
    files = {str(p) for p in operator_image.context_files()}
    assert "operator/darwin_operator/cli.py" in files and "pyproject.toml" in files
    assert not [f for f in files if dockerignore_excludes(f)]
    repo = operator_image.REPO
    for source in ("operator/darwin_operator", "pyproject.toml", "README.md"):
        path = repo / source
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = {str(p.relative_to(repo)) for p in found}
        kept = {f for f in kept if not dockerignore_excludes(f)}
        assert kept <= files, kept - files
    operator_image._stage_context(tmp_path)
    staged = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert staged == files


def test_the_cache_key_follows_the_sources_and_the_base(monkeypatch):
    key = operator_image.content_key("rootfs-a")
    assert key == operator_image.content_key("rootfs-a")
    assert key != operator_image.content_key("rootfs-b")
    real_read = type(operator_image.REPO).read_bytes

    def edited(path):
        data = real_read(path)
        return data + b"# edited\n" if path.name == "planner.py" else data

    monkeypatch.setattr(type(operator_image.REPO), "read_bytes", edited)
    assert operator_image.content_key("rootfs-a") != key


def test_a_retagged_archive_names_the_new_tag_and_keeps_the_layers(tmp_path):
    layer = tmp_path / "layer.tar"
    docker_archive.files_layer([docker_archive.FileEntry("/hello", b"hi")], layer)
    original = tmp_path / "image.tar"
    docker_archive.image_archive(original, tag="localhost/a:1", layers=[layer], config={})
    copy = tmp_path / "copy.tar"
    docker_archive.retagged(original, copy, "localhost/a:2")

    def members(path):
        with tarfile.open(path) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}

    before, after = members(original), members(copy)
    (manifest,) = json.loads(after["manifest.json"])
    assert manifest["RepoTags"] == ["localhost/a:2"]
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    with tarfile.open(fileobj=io.BytesIO(after[manifest["Layers"][0]])) as tar:
        assert tar.extractfile("hello").read() == b"hi"


def test_a_readme_edit_alone_does_not_rebuild(monkeypatch):
    key = operator_image.content_key("rootfs-a")
    real_read = type(operator_image.REPO).read_bytes

    def edited(path):
        data = real_read(path)
        return data + b"more words\n" if path.name == "README.md" else data

    monkeypatch.setattr(type(operator_image.REPO), "read_bytes", edited)
    assert operator_image.content_key("rootfs-a") == key
