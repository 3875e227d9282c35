"""`darwin-operator` crd, render and version, run in-process."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from darwin_operator import cli
from darwin_operator.crd import crd_yaml
from tests.specs import endpoint_doc

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "manifests" / "darwin-endpoint.yaml"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_prints_every_object_of_the_reference_endpoint(capsys):
    code, out, err = run(capsys, "render", "-f", str(REFERENCE))
    assert (code, err) == (0, "")
    documents = list(yaml.safe_load_all(out))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
    assert kinds == [
        ("Service", "darwin-398b-pods"),
        ("Service", "darwin-398b"),
        ("PodDisruptionBudget", "darwin-398b-members"),
        ("Pod", "darwin-398b-0-0"),
        ("Pod", "darwin-398b-1-0"),
    ]
    assert all(d["metadata"]["namespace"] == "default" for d in documents)


def test_render_one_group_in_a_namespace(capsys):
    staged = REPO / "manifests" / "examples" / "pipeline-stage-per-pod.yaml"
    code, out, _ = run(capsys, "render", "-f", str(staged), "--group", "1", "-n", "llm")
    pods = [d for d in yaml.safe_load_all(out) if d["kind"] == "Pod"]
    assert code == 0
    assert [p["metadata"]["name"] for p in pods] == [f"darwin-398b-staged-1-{r}" for r in range(3)]
    assert {p["metadata"]["namespace"] for p in pods} == {"llm"}


def test_render_output_is_plain_yaml(capsys):
    _, out, _ = run(capsys, "render", "-f", str(REFERENCE))
    assert "&id" not in out and "*id" not in out


def test_invalid_spec_prints_one_line_per_problem_and_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    doc = endpoint_doc(placement={"podsPerGroup": 4}, engine={"extraArgs": ["--port=9000"]})
    bad.write_text(yaml.safe_dump(doc))
    code, out, err = run(capsys, "render", "-f", str(bad))
    lines = err.splitlines()
    assert (code, out) == (2, "")
    assert len(lines) == 2
    assert lines[0].startswith(f"{bad}: DarwinEndpoint darwin-398b: spec.placement.podsPerGroup:")
    assert "spec.engine.extraArgs" in lines[1]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        ("spec: [unclosed\n", "invalid YAML at line 2"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no DarwinEndpoint in the file"),
        ("apiVersion: serving.darwin.ai/v1alpha1\nkind: DarwinEndpoint\n", "metadata.name"),
    ],
)
def test_bad_files_get_one_clear_line(capsys, tmp_path, content, expected):
    path = tmp_path / "endpoint.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = run(capsys, "render", "-f", str(path))
    assert (code, out) == (2, "")
    assert expected in err and "Traceback" not in err


def test_crd_prints_or_writes_the_generated_crd(capsys, tmp_path):
    code, out, _ = run(capsys, "crd")
    assert (code, out) == (0, crd_yaml())
    target = tmp_path / "sub" / "crd.yaml"
    assert run(capsys, "crd", "--output", str(target))[0] == 0
    assert target.read_text() == crd_yaml()


def test_version(capsys):
    assert run(capsys, "version")[:2] == (0, "darwin-operator 0.1.0\n")


def test_commands_of_missing_modules_are_not_offered():
    missing = cli.Command("later", "not written yet", "darwin_operator.not_written_yet")
    assert not missing.available()
    offered = {c.name for c in cli.COMMANDS if c.available()}
    assert {"crd", "render", "version"} <= offered


def test_only_the_chosen_commands_module_is_imported():
    probe = (
        "import sys; from darwin_operator import cli; cli.main(['version']); "
        "assert 'kopf' not in sys.modules and 'darwin_operator.runner' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)
