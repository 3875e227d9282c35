"""Print the options of vLLM 0.33.0's `vllm serve` parser as JSON: vllm_standin/serve_flags.json.

Run with the python of the vLLM venv (tests/vllm/setup-venv.sh):
    ~/.cache/darwin-operator/vllm-0.33.0/bin/python tests/standin/dump_serve_flags.py \
        > tests/standin/vllm_standin/serve_flags.json
The parser is built as `vllm serve` builds it (tests/vllm/check_serve_args.py does the same);
test_serve_flags.py fails when the checked-in file differs from this output.

One entry per argparse action: its option strings (none for the positional model tag), dest,
nargs, what the action does ("value", "append", "flag", "help", "version"), for a flag the value
each of its option strings stores, the value kind its type function accepts ("int", "float":
exactly those numbers; "optional-" when it also takes "None"; "str": anything else, e.g. "18k"),
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
    argparse._AppendAction: "append",
    argparse._HelpAction: "help",
    argparse._VersionAction: "version",
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
    rejects = not any(_accepts(convert, text) for text in ("x", "1k", "[1]", '{"a": 1}'))
    if _accepts(convert, "7") and not _accepts(convert, "7.5") and rejects:
        kind = "int"
    elif _accepts(convert, "7.5") and rejects:
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


def flag_values(parser: argparse.ArgumentParser, action: argparse.Action) -> dict:
    """What each option string of a value-less action stores, found by running the action."""
    values = {}
    for option in (o for o, a in parser._option_string_actions.items() if a is action):
        namespace = argparse.Namespace()
        action(parser, namespace, [], option)
        values[option] = _plain(getattr(namespace, action.dest, None))
    return values


def describe(parser: argparse.ArgumentParser, action: argparse.Action) -> dict:
    kind = ACTIONS.get(type(action))
    if kind is None:
        kind = "flag" if action.nargs == 0 else "value"
    choices = action.choices
    # Every option string the parser takes, the ones hidden from help included (vLLM's
    # EnableDisableAction still takes --no-enable-x without showing it).
    options = [o for o, a in parser._option_string_actions.items() if a is action]
    return {
        "options": options,
        "dest": action.dest,
        "nargs": action.nargs,
        "action": kind,
        "flag_values": flag_values(parser, action) if kind == "flag" else None,
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
        "actions": [describe(serve, action) for action in serve._actions],
    }
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
