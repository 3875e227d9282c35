"""The `vllm` command line: vLLM 0.33.0's `serve` options, read from serve_flags.json.

serve_flags.json is generated from vLLM's own parser (tests/standin/dump_serve_flags.py), so the
stand-in accepts exactly the options vLLM accepts, converts values the way vLLM's plain int and
float options do, and refuses an unknown option with argparse's own error and exit code 2.
Values of vLLM's richer types (JSON configs, sizes like "18k") are taken as text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_standin import VERSION

FLAGS = Path(__file__).with_name("serve_flags.json")
DESCRIPTION = "vLLM CLI (a stand-in for tests: only `serve` exists; see tests/standin/README.md)"


class _Flag(argparse.Action):
    """An option without a value (store_true, --x/--no-x ...): stores what vLLM's stores."""

    def __init__(self, option_strings, dest, flag_values, **kwargs):
        self.flag_values = flag_values
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.flag_values[option_string])


def _converter(kind: str | None):
    base = {"int": int, "float": float}.get((kind or "str").removeprefix("optional-"), str)
    if not (kind or "").startswith("optional-"):
        return base

    def optional(text: str):
        return None if text == "None" else base(text)

    optional.__name__ = base.__name__  # argparse names the type in its error message
    return optional


def _add(parser: argparse.ArgumentParser, entry: dict) -> None:
    options, action = entry["options"], entry["action"]
    if action == "help":
        parser.add_argument(*options, action="help", help=argparse.SUPPRESS)
        return
    if action == "version":
        parser.add_argument(*options, action="version", version=VERSION)
        return
    kwargs: dict = {"default": entry["default"], "help": argparse.SUPPRESS}
    if action == "flag":
        parser.add_argument(
            *options, dest=entry["dest"], action=_Flag, flag_values=entry["flag_values"], **kwargs
        )
        return
    convert = _converter(entry["type"])
    kwargs["type"] = convert
    if entry["nargs"] is not None:
        kwargs["nargs"] = entry["nargs"]
    if entry["choices"] is not None:
        kwargs["choices"] = [convert(c) for c in entry["choices"]]
    if action == "append":
        kwargs["action"] = "append"
    if options:
        parser.add_argument(*options, dest=entry["dest"], **kwargs)
    else:
        parser.add_argument(entry["dest"], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    flags = json.loads(FLAGS.read_text())
    parser = argparse.ArgumentParser(prog="vllm", description=DESCRIPTION)
    parser.add_argument("-v", "--version", action="version", version=VERSION)
    subparsers = parser.add_subparsers(dest="subparser")
    serve = subparsers.add_parser(
        "serve",
        allow_abbrev=flags["allow_abbrev"],
        add_help=False,
        usage="vllm serve [model_tag] [options]",
    )
    for entry in flags["actions"]:
        _add(serve, entry)
    return parser


def normalize(argv: list[str]) -> list[str]:
    """What vLLM's FlexibleArgumentParser rewrites first: --foo_bar is --foo-bar, -O3 is
    --optimization-level 3."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--"):
            key, eq, value = arg.partition("=")
            out.append(key.replace("_", "-") + eq + value)
        elif arg.startswith("-O") and arg != "-O":
            out += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        else:
            out.append(arg)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `vllm ARGV...`; exits 2 with argparse's message on a bad command line."""
    parser = build_parser()
    args = parser.parse_args(normalize(argv))
    if args.subparser != "serve":
        parser.print_help()
        parser.exit(0 if not argv else 2)
    if getattr(args, "model_tag", None):
        args.model = args.model_tag
    return args
