"""The hub stand-in's answers, as plain HTTP (hf itself runs against it in tests/staging)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.standin.hub_process import HubProcess

MODEL = "org/tiny"
SHARDS = [64 * 1024, 128 * 1024]


@pytest.fixture(scope="module")
def hubs(tmp_path_factory):
    data = tmp_path_factory.mktemp("hub-data")
    logs = tmp_path_factory.mktemp("hub-logs")
    started = {
        "open": HubProcess(MODEL, data, logs / "open.log", shards=SHARDS, revisions=("main", "v2")),
        "private": HubProcess(
            MODEL, data, logs / "private.log", shards=SHARDS, options=("--token", "hf_ok")
        ),
        "gated": HubProcess(
            MODEL, data, logs / "gated.log", shards=SHARDS, options=("--token", "hf_ok", "--gated")
        ),
    }
    yield started
    for hub in started.values():
        hub.stop()


def get(hub, path, method="GET", headers=None):
    request = urllib.request.Request(hub.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_model_info_and_tree_describe_the_files_with_the_hubs_hashes(hubs):
    hub = hubs["open"]
    main, v2 = hub.revision("main"), hub.revision("v2")
    assert main.commit != v2.commit
    status, _, body = get(hub, f"/api/models/{MODEL}/revision/main")
    info = json.loads(body)
    assert status == 200 and info["sha"] == main.commit and info["id"] == MODEL
    status, _, body = get(hub, f"/api/models/{MODEL}/tree/{v2.commit}?recursive=true")
    tree = {e["path"]: e for e in json.loads(body)}
    assert set(tree) == set(v2.files)
    shard = tree["model-00002-of-00002.safetensors"]
    assert shard["lfs"]["oid"] == v2.files[shard["path"]].sha256
    assert (
        tree["config.json"]["oid"] == v2.files["config.json"].git_sha1
        and "lfs" not in (tree["config.json"])
    )


def test_resolve_carries_commit_etag_and_ranges(hubs):
    hub = hubs["open"]
    rev = hub.revision()
    shard = rev.files["model-00001-of-00002.safetensors"]
    path = f"/{MODEL}/resolve/main/{shard.path}"
    status, headers, body = get(hub, path, "HEAD")
    assert status == 200 and body == b""
    assert headers["X-Repo-Commit"] == rev.commit
    assert headers["X-Linked-Etag"] == f'"{shard.sha256}"'
    assert int(headers["X-Linked-Size"]) == shard.size
    status, headers, body = get(hub, path, headers={"Range": "bytes=1000-"})
    assert status == 206 and headers["Content-Range"] == f"bytes 1000-{shard.size - 1}/{shard.size}"
    assert body == (rev.root / shard.path).read_bytes()[1000:]
    assert get(hub, path, headers={"Range": f"bytes={shard.size}-"})[0] == 416
    status, headers, _ = get(hub, f"/{MODEL}/resolve/main/config.json", "HEAD")
    assert headers["ETag"] == f'"{rev.files["config.json"].git_sha1}"'


@pytest.mark.parametrize(
    ("hub_name", "path", "headers", "status", "code"),
    [
        ("open", "/api/models/org/other/revision/main", {}, 404, "RepoNotFound"),
        ("open", f"/api/models/{MODEL}/revision/nope", {}, 404, "RevisionNotFound"),
        ("open", f"/{MODEL}/resolve/main/nope.bin", {}, 404, "EntryNotFound"),
        ("private", f"/api/models/{MODEL}/revision/main", {}, 401, "RepoNotFound"),
        ("private", f"/{MODEL}/resolve/main/config.json", {"Authorization": "Bearer x"}, 401, None),
        ("gated", f"/api/models/{MODEL}/revision/main", {}, 200, None),
        ("gated", f"/{MODEL}/resolve/main/config.json", {}, 401, "GatedRepo"),
        (
            "gated",
            f"/{MODEL}/resolve/main/config.json",
            {"Authorization": "Bearer x"},
            403,
            "GatedRepo",
        ),
        (
            "gated",
            f"/{MODEL}/resolve/main/config.json",
            {"Authorization": "Bearer hf_ok"},
            200,
            None,
        ),
    ],
)
def test_errors_as_the_hub_answers_them(hubs, hub_name, path, headers, status, code):
    got, response_headers, _ = get(hubs[hub_name], path, headers=headers)
    assert got == status
    assert response_headers.get("X-Error-Code") == code
