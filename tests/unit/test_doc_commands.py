"""Reading the commands a README shows out of its markdown (the e2e test runs them)."""

from __future__ import annotations

from tests.doc_commands import REPO, DocCommand, commands_in, documented_commands, sections

SAMPLE = """# Title

## Install

Run `helm install x charts/x` first; `helm upgrade` is only a mention.

```
helm install x charts/x -n ns   # a comment after a command
# a comment line
kubectl apply -f file.yaml
```

### More

```
kubectl get dwe                 # NAME READY
```

## Other

```
make secret
```
"""


def test_code_block_lines_and_whole_inline_commands_of_a_section():
    commands = commands_in(sections(SAMPLE)["Install"], "x#Install")
    assert [c.text for c in commands] == [
        "helm install x charts/x",
        "helm install x charts/x -n ns   # a comment after a command",
        "kubectl apply -f file.yaml",
        "kubectl get dwe                 # NAME READY",
    ]
    assert commands[-1].comment == "NAME READY"
    assert commands[2].comment == ""


def test_a_hash_inside_a_fence_is_not_a_heading():
    text = "## A\n```\n## not a heading\nkubectl get pods\n```\n"
    assert list(sections(text)) == ["", "A"]
    assert commands_in(sections(text)["A"], "x") == [DocCommand("kubectl get pods", "x")]


def test_the_readmes_show_install_and_use_commands():
    commands = documented_commands(
        {
            REPO / "README.md": ("Install", "Use"),
            REPO / "charts" / "darwin-operator" / "README.md": None,
        }
    )
    texts = [c.text for c in commands]
    assert any(t.startswith("helm install") for t in texts)
    assert any(t.startswith("kubectl apply -f manifests/darwin-endpoint.yaml") for t in texts)
