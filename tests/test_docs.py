"""The README and docs/ stay true to the repository as it changes.

README.md is the front page and docs/ holds the rest by topic, so the pages lean on links
between them and on commands a reader copies. Both rot silently when a file moves, a heading is
renamed, a stage or CLI command is dropped. These tests check that every relative markdown link
in README.md and docs/*.md resolves (to a file or directory, and to a heading when it names an
`#anchor`), and that every command a ```bash block shows still exists: `python -m pipeline X`
as a command of the typer app, `dvc repro STAGE[@...]` as a stage of dvc.yaml, and the scripts
and files that `python`, `bash`, `cat` and `pip install -r` are given. Links that leave the repository (the
project's shared material in ../shared, absent from a fresh clone) are not checked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from pipeline.cli import app
from pipeline.io import read_yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    seen: dict[str, int] = {}
    for title in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            continue  # outside the repository: ../shared, not part of a clone
        if not resolved.exists():
            broken.append(f"{target}: no such file or directory")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _commands(text: str) -> list[list[str]]:
    """Every simple command of the ```bash blocks, as tokens (`$(...)`, `&&`, `|`, `;` split)."""
    commands = []
    for lang, body in FENCE.findall(text):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("$", "") or set(token) <= set("();<>|&"):
                    if command:
                        commands.append(command)
                    command = []
                elif command or "=" not in token:  # skip leading VAR=value assignments
                    command.append(token)
    return commands


def _missing(command: list[str], cli: set[str], stages: set[str]) -> str | None:
    name, args = command[0], [a for a in command[1:] if not a.startswith("-")]
    if name in ("python", "python3") and command[1:3] == ["-m", "pipeline"]:
        sub = command[3] if len(command) > 3 else "--help"
        if not sub.startswith("-") and sub not in cli:
            return f"`python -m pipeline {sub}`: not a command of pipeline.cli.app"
    elif name in ("python", "python3") and args and args[0].endswith(".py"):
        if not (ROOT / args[0]).is_file():
            return f"`{name} {args[0]}`: no such script"
    elif name in ("bash", "sh", "cat") and args:
        if not (ROOT / args[0]).is_file():
            return f"`{name} {args[0]}`: no such file"
    elif name in ("pip", "python") and "-r" in command:
        requirements = command[command.index("-r") + 1]
        if not (ROOT / requirements).is_file():
            return f"`pip install -r {requirements}`: no such file"
    elif command[:2] == ["dvc", "repro"]:
        unknown = [t for t in args[1:] if t.split("@")[0] not in stages]
        if unknown:
            return f"`dvc repro {' '.join(unknown)}`: no such stage in dvc.yaml"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shown_commands_exist(page: Path) -> None:
    cli = set(typer.main.get_command(app).commands)
    stages = set(read_yaml(ROOT / "dvc.yaml")["stages"])
    commands = _commands(page.read_text(encoding="utf-8"))
    missing = [m for c in commands if (m := _missing(c, cli, stages))]
    assert not missing, f"{page.relative_to(ROOT)}: " + "; ".join(missing)


def test_readme_shows_the_quick_start_and_test_commands() -> None:
    """The checks above see the front page's commands (a parser that found none would pass)."""
    commands = [" ".join(c) for c in _commands((ROOT / "README.md").read_text(encoding="utf-8"))]
    assert "cat profiles/smoke.args" in commands
    assert "pip install --require-hashes -r requirements.lock" in commands
    assert "python -m pytest -q" in commands
    assert 'python -m pytest -q -m not e2e' in commands
