"""operator/Dockerfile's promises, checked by reading it (fast, no build): what it copies exists
and survives .dockerignore, the final stage is non-root and free of installers, and its
entrypoint is the package's CLI. The image itself is built with buildah by tests/images and run
from the chart on real nodes by tests/e2e_real/test_in_cluster_install.py."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path

from darwin_operator import cli

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "operator" / "Dockerfile"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with line continuations joined."""
    logical = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            name = rest.split()[2] if len(rest.split()) == 3 else None
            stages.append(Stage(image, name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(value: str) -> list[str]:
    assert value.startswith("["), f"not exec form (signals would not reach the operator): {value}"
    return re.findall(r'"([^"]*)"', value)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule, for the patterns we use: the last pattern matching the path or one of its
    parent directories decides."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


ARGS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def test_multi_stage_on_a_pinned_base():
    assert len(STAGES) >= 2
    for stage in STAGES:
        assert re.search(r":\d+\.\d+\.\d+[-\w.]*(@sha256:[0-9a-f]{64})?$", stage.image), (
            f"base {stage.image} is not pinned to a full version"
        )


def test_everything_copied_from_the_context_exists_and_is_not_dockerignored():
    copied = []
    for stage in STAGES:
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            *sources, _ = args.split()
            copied += sources
    assert copied
    for source in copied:
        path = REPO / source
        assert path.exists(), f"COPY {source}: no such file in the build context"
        files = list(path.rglob("*.py")) if path.is_dir() else [path]
        kept = [f for f in files if not dockerignore_excludes(str(f.relative_to(REPO)))]
        assert kept, f"COPY {source}: .dockerignore excludes it"
    assert not dockerignore_excludes("operator/darwin_operator/cli.py")
    assert dockerignore_excludes(".venv/bin/python")
    assert dockerignore_excludes("operator/darwin_operator/__pycache__/cli.cpython-311.pyc")


def test_the_copied_sources_are_what_the_package_build_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = " ".join(" ".join(stage.all("COPY")) for stage in STAGES)
    assert project["project"]["readme"] in copied
    assert "pyproject.toml" in copied
    source_root = project["tool"]["setuptools"]["packages"]["find"]["where"][0]
    assert f"{source_root}/darwin_operator" in copied


def test_final_stage_runs_as_a_numeric_non_root_user():
    (user,) = FINAL.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so the kubelet can verify runAsNonRoot"


def test_final_stage_installs_nothing_and_takes_the_venv_from_the_build_stage():
    for command in FINAL.all("RUN"):
        assert not re.search(r"apt-get install|apk add|pip install|gcc|make\b", command), command
    assert any(args.startswith(f"--from={STAGES[0].name}") for args in FINAL.all("COPY"))


def test_entrypoint_is_the_cli_and_the_default_command_is_run():
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (program,) = exec_form(entrypoint)
    script = Path(program).name
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in scripts, f"{script} is not a console script of the package"
    target = EntryPoint(name=script, value=scripts[script], group="console_scripts").load()
    assert target is cli.main
    (command,) = FINAL.all("CMD")
    assert exec_form(command)[0] in {c.name for c in cli.COMMANDS}
