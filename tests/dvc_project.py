"""A git + DVC copy of the project in a temp dir, driven as a user drives it (the e2e tests).

DVC's own log lines say which stages ran, were restored from the run-cache or were skipped
("Running stage 'x'", "Stage 'x' is cached", "Stage 'x' didn't change").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import paths
from pipeline.io import read_yaml

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_ROOTS = {str(p) for p in (paths.DATA, paths.MODELS, paths.METRICS, paths.REPORTS, paths.SCRATCH)}

# A git identity and no user/system git config, so commits work anywhere and never sign.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@example.com",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@example.com",
}


@dataclass(frozen=True)
class DvcRun:
    """A finished `dvc repro`/`dvc exp run`: which stages ran, were restored, were skipped."""

    output: str
    seconds: float

    def _stages(self, pattern: str) -> set[str]:
        return set(re.findall(pattern, self.output, flags=re.MULTILINE))

    @property
    def ran(self) -> set[str]:
        return self._stages(r"^Running stage '([^']+)':")

    @property
    def restored(self) -> set[str]:
        """Stages whose outputs came from the run-cache instead of running."""
        return self._stages(r"^Stage '([^']+)' is cached - skipping run")

    @property
    def unchanged(self) -> set[str]:
        return self._stages(r"^Stage '([^']+)' didn't change, skipping")


@dataclass(frozen=True)
class Project:
    """A git + DVC working copy of the project in a temp dir."""

    path: Path
    always_changed: frozenset[str] = frozenset()  # its `always_changed` stages (GLUE prepare)

    def _run(self, *cmd: str) -> tuple[str, float]:
        start = time.perf_counter()
        done = subprocess.run(
            cmd, cwd=self.path, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout[-6000:]}")
        return done.stdout, seconds

    def git(self, *args: str) -> str:
        return self._run("git", *args)[0]

    def dvc(self, *args: str) -> DvcRun:
        return DvcRun(*self._run(sys.executable, "-m", "dvc", *args))

    def lock(self) -> dict[str, Any]:
        return read_yaml(self.path / "dvc.lock")["stages"]

    def stage_names(self) -> set[str]:
        return set(self.dvc("stage", "list", "--name-only").output.split())

    def status(self) -> dict[str, Any]:
        """`dvc status` for every stage but the always-changed ones (empty: all cached)."""
        status = json.loads(self.dvc("status", "--json").output.splitlines()[-1])
        assert all(status.pop(p, ["always changed"]) == ["always changed"] for p in self.always_changed)
        return status

    def clone(self, dest: Path, *, share_cache: bool = False) -> Project:
        """A teammate's `git clone`; with `share_cache`, outputs checked out from this cache.

        Sharing the cache (as teammates on one machine may) saves the push/pull for tests
        that are about reruns, not transfer; the sharing tests use their own cache.
        """
        subprocess.run(["git", "clone", "-q", str(self.path), str(dest)], env=ENV, check=True)
        clone = Project(dest, self.always_changed)
        if share_cache:
            clone.dvc("cache", "dir", "--local", str(self.path / ".dvc" / "cache"))
            clone.dvc("checkout")
        return clone


def copy_checkout(dest: Path) -> None:
    """This checkout as git would commit it (tracked and new files), without stage outputs."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, env=ENV, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if Path(name).parts[0] in OUTPUT_ROOTS or not source.is_file():
            continue  # outputs of a local run, files deleted in the working tree
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name)


