"""DISTILL_STRICT_SKIPS=1 (CI) turns every skip into a failure except one for material the
repository cannot hold (tests/conftest.py `outside_material`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
TESTS = """
import pytest
from conftest import outside_material

def test_needs_outside_material():
    outside_material("no/such/material", "some shared files")

def test_skips_for_another_reason():
    pytest.skip("the SSH server is not installed")

def test_runs():
    pass
"""


@pytest.mark.parametrize("strict", [False, True])
def test_only_outside_material_may_skip_in_strict_mode(pytester, monkeypatch, tmp_path, strict):
    monkeypatch.setenv("DISTILL_SHARED", str(tmp_path / "nothing-beside-the-clone"))
    monkeypatch.setenv("DISTILL_STRICT_SKIPS", "1" if strict else "0")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sample=TESTS)
    result = pytester.runpytest("-ra")
    if strict:
        result.assert_outcomes(passed=1, skipped=1, failed=1)
        result.stdout.fnmatch_lines(["skipped where DISTILL_STRICT_SKIPS=1 (CI): *the SSH server is not installed*"])
    else:
        result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*needs material outside the repository: some shared files, none at *nothing-beside-the-clone*"])
