"""Print the options of vLLM 0.33.0's `vllm serve` parser as JSON: vllm_standin/serve_flags.json.

Run with the python of the vLLM venv (tests/vllm/setup-venv.sh):
    ~/.cache/darwin-operator/vllm-0.33.0/bin/python tests/standin/dump_serve_flags.py \
        > tests/standin/vllm_standin/serve_flags.json
The parser is built as `vllm serve` builds it (tests/vllm/check_serve_args.py does the same);
test_serve_flags.py fails when the checked-in file differs from this output.

One entry per argparse action: its option strings (none for the positional model tag), dest,
nargs, what the action does ("value", "true", "false", "bool-optional", "help", ...), the value
kind its type function accepts ("int", "float", "str"; "optional" when it also takes "None"),
choices, and the default when it is plain JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
    os.environ[_name] = "1"
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

ACTIONS = {
    argparse._StoreAction: "value",
    argparse._StoreTrueAction: "true",
    argparse._StoreFalseAction: "false",
    argparse._StoreConstAction: "const",
    argparse._AppendAction: "append",
    argparse._CountAction: "count",
    argparse._HelpAction: "help",
    argparse._VersionAction: "version",
    argparse.BooleanOptionalAction: "bool-optional",
}


def _accepts(convert, text: str) -> bool:
    try:
        convert(text)
    except Exception:
        return False
    return True


def value_kind(action: argparse.Action) -> str:
    """What the action's type function takes, found by trying it (vLLM wraps int/float)."""
    convert = action.type
    if convert is None or convert is str:
        return "str"
    optional = _accepts(convert, "None") and convert("None") is None
    if _accepts(convert, "7") and not _accepts(convert, "7.5") and not _accepts(convert, "x"):
        kind = "int"
    elif _accepts(convert, "7.5") and not _accepts(convert, "x"):
        kind = "float"
    else:
        kind = "str"
    return f"optional-{kind}" if optional and kind != "str" else kind


def _plain(value):
    try:
        json.dumps(value)
    except TypeError:
        return None
    return value


def describe(action: argparse.Action) -> dict:
    kind = ACTIONS.get(type(action))
    if kind is None:
        kind = "value" if action.nargs != 0 else "const"
    choices = action.choices
    return {
        "options": list(action.option_strings),
        "dest": action.dest,
        "nargs": action.nargs,
        "action": kind,
        "type": value_kind(action) if kind in ("value", "append") else None,
        "choices": [str(c) for c in choices] if choices is not None else None,
        "default": _plain(action.default),
    }


def main() -> int:
    import importlib.metadata

    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.common.startup import cli_env_setup
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = FlexibleArgumentParser(prog="vllm", description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(subparsers)
    document = {
        "vllm": importlib.metadata.version("vllm"),
        "allow_abbrev": serve.allow_abbrev,
        "actions": [describe(action) for action in serve._actions],
    }
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
