"""Stage mains called directly, as `dvc repro` would run them."""

from __future__ import annotations

from contextlib import chdir
from pathlib import Path

from pipeline import configure
from pipeline.params import load_params


def configured(params_path: Path) -> Path:
    """Run configure for every task of a params file, as `dvc repro` does before any other
    stage, so stage mains find their task's settings (in data/params/ beside the file, its
    project root); returns the path."""
    params_path = Path(params_path).resolve()
    with chdir(params_path.parent):
        for task in load_params(params_path).tasks:
            configure.main(task, params_path)
    return params_path
