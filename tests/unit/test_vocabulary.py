"""The shared vocabulary: a leaf module, spelled once, with one time format and one hash."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import vocabulary
from darwin_operator.api import Condition
from darwin_operator.vocabulary import find_condition, format_time, parse_time, stable_hash

PACKAGE = Path(vocabulary.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_vocabulary_imports_nothing_of_the_package():
    assert not {m for m in _imports(PACKAGE / "vocabulary.py") if m.startswith("darwin_operator")}


def test_the_api_does_not_import_what_imports_it():
    """api.py takes its names from the vocabulary; topology.py (which needs the spec) is not
    imported by it, so the two no longer form a cycle."""
    assert not any("topology" in m for m in _imports(PACKAGE / "api.py"))


def test_keys_under_the_prefix_are_spelled_only_in_the_vocabulary():
    for path in PACKAGE.glob("*.py"):
        if path.name == "vocabulary.py":
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        strings = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
        ]
        assert not [s for s in strings if vocabulary.LABEL_PREFIX in s], path.name


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_a_time_reads_back_as_itself_to_the_millisecond(epoch):
    text = format_time(epoch)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    back = parse_time(text)
    assert back is not None and abs(back - epoch) < 0.001
    assert format_time(back) == text  # a stamp is a fixed point
    assert vocabulary.stamp(back) == back


def test_times_the_api_writes_in_seconds_parse_too():
    assert parse_time("2025-06-15T15:06:40Z") == parse_time("2025-06-15T15:06:40.000Z")
    assert parse_time("") is None and parse_time("yesterday") is None


def test_the_hash_ignores_key_order_and_sees_every_value():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert len(stable_hash({}, length=10)) == 10


def test_one_condition_look_up_for_api_dicts_and_status_models():
    wire = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]
    assert find_condition(wire, "Ready") == {"type": "Ready", "status": "False"}
    assert find_condition(wire, "Missing") is None and find_condition(None, "Ready") is None
    models = [Condition(type="Available", status="True", reason="r", message="")]
    assert find_condition(models, "Available") is models[0]


def test_startup_order_is_the_order_of_a_start():
    assert vocabulary.STARTUP_ORDER[0] == vocabulary.GroupPhase.PENDING
    assert vocabulary.STARTUP_ORDER[-1] == vocabulary.GroupPhase.READY
