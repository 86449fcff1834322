"""params.yaml read as DVC reads and writes it (YAML 1.2), before and after `dvc exp run -S`.

YAML 1.1 (PyYAML) and YAML 1.2 (ruamel.yaml, DVC's reader) disagree on plain scalars: a
class named `no` is False to one and "no" to the other, `010` is 8 or 10, `1:20` is 80 or a
string, `3e-05` a string or a number. The pipeline must see exactly DVC's values, or DVC
would call a param unchanged that the pipeline reads differently (or the reverse).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dvc_project import ENV, Project
from pipeline.errors import PipelineError
from pipeline.io import parse_yaml
from pipeline.params import load_params

# Plain (unquoted) scalars on which YAML 1.1 and 1.2 differ, where the pipeline reads them.
PARAMS = """\
tasks: [answers]
glue: []
datasets:
  answers:
    dir: data/raw/answers
    train: train.csv
    dev: dev.csv
    text: question
    label: answer
    labels: [no, yes, on, off]
    positive_label: yes
    metrics: [accuracy, f1]
    title: 1:20
    description: off
teacher:
  lr: 3e-05
  epochs: 010
augment:
  n_iter: 0o10
"""
STAGE = {
    "stages": {
        "read": {
            "cmd": f"{sys.executable} -c \"open('out.txt', 'w').write('read')\"",
            "params": ["datasets", "teacher", "augment"],
            "outs": ["out.txt"],
        }
    }
}


def pipeline_view(path: Path) -> dict[str, object]:
    """The values the pipeline's typed params hold for each YAML 1.1/1.2 difference."""
    params = load_params(path)
    answers = params.datasets["answers"]
    return {
        "datasets.answers.labels": answers.labels,
        "datasets.answers.positive_label": answers.positive_label,
        "datasets.answers.title": answers.title,
        "datasets.answers.description": answers.description,
        "teacher.lr": params.teacher.lr,
        "teacher.epochs": params.teacher.epochs,
        "augment.n_iter": params.augment.n_iter,
    }


def dvc_view(root: Path) -> dict[str, object]:
    """The same keys as DVC itself reads them (`dvc.api.params_show()` in the workspace)."""
    done = subprocess.run(
        [sys.executable, "-c", "import json, dvc.api; print(json.dumps(dvc.api.params_show()))"],
        cwd=root, env=ENV, capture_output=True, text=True, check=True,
    )
    shown = json.loads(done.stdout)
    view = {}
    for key in ("datasets.answers.labels", "datasets.answers.positive_label", "datasets.answers.title",
                "datasets.answers.description", "teacher.lr", "teacher.epochs", "augment.n_iter"):
        value = shown
        for part in key.split("."):
            value = value[part]
        view[key] = value
    return view


def test_yaml_1_2_scalars_read_as_dvc_reads_them(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    assert pipeline_view(path) == {
        "datasets.answers.labels": ["no", "yes", "on", "off"],
        "datasets.answers.positive_label": "yes",
        "datasets.answers.title": "1:20",
        "datasets.answers.description": "off",
        "teacher.lr": 3e-05,
        "teacher.epochs": 10,
        "augment.n_iter": 8,
    }


@pytest.mark.e2e
def test_the_pipeline_sees_dvcs_values_before_and_after_exp_run_rewrites_params(tmp_path):
    project = Project(tmp_path / "repo")
    project.path.mkdir()
    (project.path / "params.yaml").write_text(PARAMS)
    (project.path / "dvc.yaml").write_text(json.dumps(STAGE))  # JSON is YAML
    project.git("init", "-q")
    project.dvc("init", "-q")
    project.git("add", "-A")
    project.git("commit", "-qm", "params full of YAML 1.1/1.2 differences")
    assert pipeline_view(project.path / "params.yaml") == dvc_view(project.path)

    project.dvc("exp", "run", "-S", "teacher.lr=5e-05", "-S", "datasets.answers.labels=[no,yes,on,off]")
    rewritten = (project.path / "params.yaml").read_text()
    assert rewritten != PARAMS and "lr: 5e-05" in rewritten  # DVC wrote the file anew
    after = pipeline_view(project.path / "params.yaml")
    assert after == dvc_view(project.path)
    assert after["teacher.lr"] == 5e-05 and after["datasets.answers.labels"] == ["no", "yes", "on", "off"]


def test_a_repeated_key_and_bad_syntax_are_one_line():
    with pytest.raises(PipelineError, match=r"^x line 3, column 1: found duplicate key \"a\""):
        parse_yaml("a: 1\nb: 2\na: 3\n", "x")
    with pytest.raises(PipelineError, match=r"^x line 2, column 1: expected ',' or '\]'"):
        parse_yaml("a: [1, 2\n", "x")
