"""The commands the docs show a user, read from the markdown itself so that a doc change is
picked up: every line of the fenced code blocks of the chosen sections (comment lines and blank
lines aside), and inline code in their prose that is a whole command (a known program and at
least two arguments: `helm upgrade` alone is a mention, not a command)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ("kubectl", "helm", "darwin-operator", "docker", "make")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_INLINE = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class DocCommand:
    text: str  # exactly as written, trailing comment included (the shell ignores it)
    where: str  # file#section, for messages

    @property
    def command(self) -> str:
        """The command without its trailing comment, whitespace normalised."""
        return " ".join(re.sub(r"\s#.*$", "", self.text).split())

    @property
    def comment(self) -> str:
        """The trailing `# ...` of the line, if any (e.g. the columns `kubectl get` prints)."""
        match = re.search(r"\s#\s*(.*)$", self.text)
        return match.group(1) if match else ""


def sections(text: str) -> dict[str, str]:
    """Top-level (##) section title -> its markdown, subsections included; '' is the preamble."""
    result: dict[str, list[str]] = {"": []}
    current, fenced = "", False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else _HEADING.match(line)
        if heading and len(heading.group(1)) <= 2:
            current = heading.group(2)
            result.setdefault(current, [])
            continue
        result[current].append(line)
    return {title: "\n".join(lines) for title, lines in result.items()}


def commands_in(markdown: str, where: str) -> list[DocCommand]:
    found: list[DocCommand] = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        stripped = line.strip()
        if fenced:
            if stripped and not stripped.startswith("#"):
                found.append(DocCommand(stripped, where))
            continue
        for span in _INLINE.findall(line):
            words = span.split()
            if words[0] in PROGRAMS and len(words) >= 3:
                found.append(DocCommand(span.strip(), where))
    return found


def documented_commands(documents: dict[Path, tuple[str, ...] | None]) -> list[DocCommand]:
    """The commands of the given files, each limited to the named sections (None: the whole
    file); a named section that is missing is an error, not an empty list."""
    found: list[DocCommand] = []
    for path, wanted in documents.items():
        parts = sections(path.read_text())
        titles = list(parts) if wanted is None else list(wanted)
        for title in titles:
            if title not in parts:
                raise AssertionError(f"{path.name} has no section '## {title}'")
            found += commands_in(parts[title], f"{path.relative_to(REPO)}#{title or 'top'}")
    return found
