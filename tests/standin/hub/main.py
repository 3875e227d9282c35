"""`python -m hub --model ORG/NAME [options]`: generate the repository, then serve it."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
from pathlib import Path

from . import repo
from .server import Faults, Hub, Throttle, serve

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)(i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 64K, 8M, 1G)")
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def sizes(text: str) -> list[int]:
    return [size(part) for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hub", description=__doc__)
    p.add_argument("--model", required=True, help="repository id, e.g. org/name")
    p.add_argument(
        "--revision",
        action="append",
        help="a branch to serve (repeatable; default main); each has content of its own",
    )
    p.add_argument(
        "--shards", type=sizes, default=[size("4M")] * 3, help="shard sizes, e.g. 4M,4M,16M"
    )
    p.add_argument("--data-dir", type=Path, help="where the generated files live (reused)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", help="the repository is private: requests need this token")
    p.add_argument(
        "--gated", action="store_true", help="with --token: metadata public, files need it"
    )
    p.add_argument("--bytes-per-second", type=size, default=0, help="one shared link's rate")
    p.add_argument("--drop-after-bytes", type=size, help="close one connection at byte N")
    p.add_argument("--die-after-bytes", type=size, help="the process exits at byte N")
    p.add_argument("--corrupt", metavar="FILE", help="serve FILE with its last byte changed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.gated and not args.token:
        parser().error("--gated needs --token")
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "hub-standin"
    revisions = {
        name: repo.generate(data_dir, args.model, name, args.shards)
        for name in (args.revision or ["main"])
    }
    hub = Hub(
        model=args.model,
        revisions=revisions,
        token=args.token,
        gated=args.gated,
        throttle=Throttle(args.bytes_per_second),
        faults=Faults(
            drop_after_bytes=args.drop_after_bytes,
            die_after_bytes=args.die_after_bytes,
            corrupt=args.corrupt,
        ),
    )
    server = serve(hub, args.host, args.port)
    for rev in revisions.values():
        print(
            f"serving {args.model}@{rev.name} (commit {rev.commit}): {len(rev.files)} files,"
            f" {rev.total_bytes} bytes",
            flush=True,
        )
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
