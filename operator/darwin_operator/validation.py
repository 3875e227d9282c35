"""Offline validation of a DarwinEndpoint, in the API server's words.

`validate` applies the pydantic models (types, ranges, patterns, enums) and then the Python side
of every CEL rule declared in api.py, so `darwin-operator render` and the operator reject what
the API server would, with the same messages. The operator uses it for whatever slips through
(an old CRD, a rule added later) and reports the problems as a Failed phase.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from darwin_operator.api import API_VERSION, KIND, DarwinEndpoint


class InvalidEndpoint(ValueError):
    """A DarwinEndpoint the API server would reject; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def validate(obj: Any) -> DarwinEndpoint:
    if not isinstance(obj, dict):
        raise InvalidEndpoint([f"expected a {KIND} object, got {type(obj).__name__}"])
    problems = _identity_problems(obj)
    if problems:
        raise InvalidEndpoint(problems)
    try:
        # Strict JSON, as the API server reads it: "2" is no integer, true no number, and
        # enums are their strings. YAML dates become strings, as kubectl sends them.
        document = json.dumps(obj, default=str)
        endpoint = DarwinEndpoint.model_validate_json(document, strict=True)
    except ValidationError as error:
        raise InvalidEndpoint(_describe(error.errors())) from None
    problems = rule_violations(endpoint)
    if problems:
        raise InvalidEndpoint(problems)
    return endpoint


def _identity_problems(obj: dict) -> list[str]:
    problems = []
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
        problems.append(
            f"apiVersion/kind: expected {API_VERSION} {KIND}, "
            f"got {obj.get('apiVersion')} {obj.get('kind')}"
        )
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        problems.append("metadata.name: Required value")
    return problems


def _describe(errors: list[dict]) -> list[str]:
    """One line per field; the branches of an int-or-string union become one message."""
    messages: dict[str, list[str]] = {}
    for error in errors:
        parts = [str(part) for part in error["loc"]]
        if parts and parts[-1] in _UNION_BRANCHES:
            parts.pop()
        path = _with_indices(".".join(p for p in parts if not p.startswith("function-")))
        message = error["msg"].removeprefix("Value error, ")
        if message not in messages.setdefault(path, []):
            messages[path].append(message)
    return [f"{path}: {_either(found)}" for path, found in messages.items()]


_UNION_BRANCHES = {"str", "int"}
_TYPE_ERROR = "Input should be a valid "


def _either(messages: list[str]) -> str:
    if len(messages) > 1 and all(m.startswith(_TYPE_ERROR) for m in messages):
        return _TYPE_ERROR + " or ".join(m.removeprefix(_TYPE_ERROR) for m in messages)
    return "; ".join(messages)


def _with_indices(path: str) -> str:
    """spec.engine.env.0.name -> spec.engine.env[0].name, as the API server writes paths."""
    parts: list[str] = []
    for part in path.split("."):
        if part.isdigit() and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(part)
    return ".".join(parts)


def rule_violations(model: BaseModel, path: str = "") -> list[str]:
    """Every violated rule in a model tree, as `path: message` lines."""
    problems = []
    for rule in type(model).__dict__.get("rules", ()):
        if not rule.check(model):
            where = (path + rule.field_path).lstrip(".")
            problems.append(f"{where}: {rule.message}" if where else rule.message)
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        child = f"{path}.{field.alias or name}"
        if isinstance(value, BaseModel):
            problems += rule_violations(value, child)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    problems += rule_violations(item, f"{child}[{index}]")
    return problems
