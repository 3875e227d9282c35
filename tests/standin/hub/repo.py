"""A generated model repository: the files of each revision on disk, with the hub's hashes.

Each revision is a small safetensors model: config.json, tokenizer files, shards whose headers
are valid safetensors headers (BF16 tensors) over pseudo-random data, and the shard index. The
content is a function of (model, revision, shard sizes) only, so two processes generate the same
bytes and a test can compute what the hub serves. Safetensors files are stored as LFS files (the
hub's ETag and verification hash is their sha256), the others as plain git blobs (git sha1).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
ROW = 1024  # elements per tensor row
BF16 = 2  # bytes per element
LFS_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class RepoFile:
    path: str  # relative, with / separators
    size: int
    sha256: str
    git_sha1: str  # git blob id of the content
    lfs: bool

    @property
    def etag(self) -> str:
        """What the hub's ETag / X-Linked-Etag carry: sha256 for LFS files, the blob id else."""
        return self.sha256 if self.lfs else self.git_sha1

    def lfs_pointer(self) -> bytes:
        return (
            "version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{self.sha256}\nsize {self.size}\n"
        ).encode()

    def tree_entry(self) -> dict:
        """One entry of GET /api/models/{repo}/tree/{rev}."""
        entry: dict = {"type": "file", "path": self.path, "size": self.size}
        if self.lfs:
            pointer = self.lfs_pointer()
            entry["oid"] = git_blob_sha1(pointer)
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(pointer)}
        else:
            entry["oid"] = self.git_sha1
        return entry


@dataclass(frozen=True)
class Revision:
    name: str
    commit: str
    root: Path
    files: dict[str, RepoFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _safetensors_header(tensors: list[tuple[str, int]]) -> bytes:
    """The 8-byte length and JSON header for BF16 tensors of the given byte sizes, padded to 8."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, nbytes in tensors:
        header[name] = {
            "dtype": "BF16",
            "shape": [nbytes // (ROW * BF16), ROW],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _text_files(model: str, revision: str, tensor_map: dict[str, str], total: int) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": ROW,
        "intermediate_size": 4 * ROW,
        "num_attention_heads": 8,
        "num_hidden_layers": len(tensor_map),
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16",
        "_name_or_path": model,
        "_revision": revision,
    }
    tokenizer = {
        "version": "1.0",
        "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 2}, "merges": []},
        "added_tokens": [],
    }
    return {
        ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "config.json": json.dumps(config, indent=2) + "\n",
        "generation_config.json": json.dumps({"bos_token_id": 0, "eos_token_id": 1}) + "\n",
        "tokenizer.json": json.dumps(tokenizer) + "\n",
        "tokenizer_config.json": json.dumps({"bos_token": "<s>", "eos_token": "</s>"}) + "\n",
        "model.safetensors.index.json": json.dumps(
            {"metadata": {"total_size": total}, "weight_map": tensor_map}, indent=2
        )
        + "\n",
    }


def _write_shard(path: Path, tensor: str, nbytes: int, seed: str) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as out:
        out.write(_safetensors_header([(tensor, nbytes)]))
        left = nbytes
        while left:
            n = min(CHUNK, left)
            out.write(rng.randbytes(n))
            left -= n


def _describe(root: Path, relative: str) -> RepoFile:
    sha256, size = hashlib.sha256(), 0
    path = root / relative
    size = path.stat().st_size
    git = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha256.update(chunk)
            git.update(chunk)
    return RepoFile(
        path=relative,
        size=size,
        sha256=sha256.hexdigest(),
        git_sha1=git.hexdigest(),
        lfs=relative.endswith(LFS_SUFFIXES),
    )


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def generate(data_dir: Path, model: str, revision: str, shard_bytes: list[int]) -> Revision:
    """Write (or reuse) one revision's files under data_dir and describe them."""
    slug = f"{model.replace('/', '--')}--{revision.replace('/', '--')}"
    spec = hashlib.sha256(json.dumps([model, revision, shard_bytes]).encode()).hexdigest()[:16]
    root = data_dir / f"{slug}-{spec}"
    done = root / ".generated"
    names = [shard_name(i, len(shard_bytes)) for i in range(len(shard_bytes))]
    sizes = [max(ROW * BF16, n - n % (ROW * BF16)) for n in shard_bytes]
    tensor_map = {f"model.layers.{i}.weight": names[i] for i in range(len(names))}
    if not done.is_file():
        root.mkdir(parents=True, exist_ok=True)
        for i, nbytes in enumerate(sizes):
            _write_shard(root / names[i], f"model.layers.{i}.weight", nbytes, f"{spec}/{i}")
        for name, text in _text_files(model, revision, tensor_map, sum(sizes)).items():
            (root / name).write_text(text)
        done.write_text("")
    relatives = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p != done
    )
    files = {rel: _describe(root, rel) for rel in relatives}
    listing = "".join(f"{f.path} {f.etag}\n" for f in files.values())
    commit = hashlib.sha1(f"{model}@{revision}\n{listing}".encode()).hexdigest()
    return Revision(name=revision, commit=commit, root=root, files=files)
