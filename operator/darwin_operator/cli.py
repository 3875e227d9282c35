"""`darwin-operator`: the command line (crd, render, version, and commands of other modules).

A subcommand is a `Command`: a module with a function that adds its arguments to a parser and a
function that runs it, `run(args) -> exit code` (by default `add_arguments` and `run`, as in
runner.py). A module is imported only when its command is chosen, so `darwin-operator crd`
never loads kopf; a command whose module is not there is not offered.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from darwin_operator import __version__

EXIT_INVALID = 2
# ownerReferences need a uid; offline there is no object yet.
OFFLINE_UID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str
    add_arguments: str = "add_arguments"
    run: str = "run"

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def load(self, parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module(self.module)
        getattr(module, self.add_arguments)(parser)
        parser.set_defaults(handler=getattr(module, self.run))


COMMANDS = (
    Command("run", "run the operator", "darwin_operator.runner"),
    Command("restart", "roll every group of an endpoint, one at a time", "darwin_operator.restart"),
    Command("crd", "print the CustomResourceDefinition", __name__, "crd_arguments", "crd"),
    Command(
        "render",
        "print the objects a DarwinEndpoint renders to (no cluster needed)",
        __name__,
        "render_arguments",
        "render",
    ),
    Command("version", "print the version", __name__, "version_arguments", "version"),
)


def crd_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", metavar="PATH", type=Path, help="write the YAML to PATH, not stdout"
    )


def crd(args: argparse.Namespace) -> int:
    from darwin_operator.crd import crd_yaml

    text = crd_yaml()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


def render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, type=Path, metavar="FILE")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--group", type=int, metavar="N", help="only the pods of group N")
    which.add_argument("--all", action="store_true", help="every group (the default)")
    parser.add_argument(
        "--namespace", "-n", help="namespace when the file names none (default: default)"
    )


def render(args: argparse.Namespace) -> int:
    try:
        documents = _rendered(args.filename, group=args.group, namespace=args.namespace)
    except _Invalid as error:
        for problem in error.problems:
            print(f"{args.filename}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=1_000_000))
    return 0


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors, scripts as literal blocks."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


class _Invalid(Exception):
    def __init__(self, problems: list[str]):
        super().__init__(problems)
        self.problems = problems


def _rendered(path: Path, *, group: int | None, namespace: str | None) -> list[dict]:
    from darwin_operator.api import KIND
    from darwin_operator.render import EndpointRef, render_endpoint
    from darwin_operator.validation import InvalidEndpoint, validate
    from darwin_operator.vocabulary import MAX_GROUP_INDEX

    if group is not None and not 0 <= group <= MAX_GROUP_INDEX:
        raise _Invalid([f"--group must be between 0 and {MAX_GROUP_INDEX}"])
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as error:
        raise _Invalid([f"cannot read: {error.strerror}"]) from None
    except yaml.YAMLError as error:
        raise _Invalid([_yaml_problem(error)]) from None
    endpoints = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not endpoints:
        raise _Invalid([f"no {KIND} in the file"])
    rendered, problems = [], []
    for document in endpoints:
        try:
            endpoint = validate(document)
        except InvalidEndpoint as error:
            name = (document.get("metadata") or {}).get("name", "?")
            problems += [f"{KIND} {name}: {problem}" for problem in error.problems]
            continue
        metadata = endpoint.metadata
        ref = EndpointRef(
            name=metadata["name"],
            namespace=metadata.get("namespace") or namespace or "default",
            uid=metadata.get("uid") or OFFLINE_UID,
        )
        groups = None if group is None else [group]
        rendered += render_endpoint(ref, endpoint, groups=groups)
    if problems:
        raise _Invalid(problems)
    return rendered


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def version_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def version(args: argparse.Namespace) -> int:
    print(f"darwin-operator {__version__}")
    return 0


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen command's module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="darwin-operator",
        description="Serve a giant model with vLLM on reserved GPUs as replica groups.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if not command.available():
            continue
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        if command.name == chosen:
            command.load(sub)
    return parser


def _chosen(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_chosen(argv)).parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
