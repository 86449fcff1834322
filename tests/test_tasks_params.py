"""The task table and params validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.params import Params, TeacherParams, load_params, load_settings, parse_params
from pipeline.tasks import TASKS, TaskSpec, get_task
from pipeline.io import read_yaml
from project import configured

ROOT = Path(__file__).resolve().parents[1]


def test_task_table_follows_hf_glue_label_convention():
    assert get_task("sst2").label_names == ("negative", "positive")
    assert get_task("qqp").label_names[1] == "duplicate"
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("mnli").label_index("contradiction") == 2
    assert get_task("sst2").label_index("2") is None


def test_task_table_shapes():
    sst2, qqp, mnli = get_task("sst2"), get_task("qqp"), get_task("mnli")
    assert not sst2.is_pair and qqp.is_pair and mnli.is_pair
    assert (sst2.num_labels, qqp.num_labels, mnli.num_labels) == (2, 2, 3)
    assert qqp.metrics == ("accuracy", "f1")
    assert [s.name for s in mnli.eval_splits] == ["dev_matched", "dev_mismatched"]
    assert [s.metric_suffix for s in mnli.eval_splits] == ["", "_mm"]
    assert [s.name for s in sst2.eval_splits] == ["dev"]  # test is unlabelled
    assert {s.file for s in mnli.splits} >= {"dev_matched.tsv", "dev_mismatched.tsv"}


def test_unknown_task_names_the_known_ones():
    with pytest.raises(PipelineError, match="unknown task 'nope'.*cola, mnli, mrpc, qnli, qqp, rte, sst2, wnli; declare"):
        get_task("nope")


def test_project_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.tasks == ["sst2", "qqp", "mnli"]
    assert params.teacher.for_task("mnli").lr == 5e-5
    assert params.teacher.for_task("mnli").epochs == 2
    assert params.teacher.for_task("sst2").lr == 2e-5
    assert params.teacher.for_task("sst2").epochs == 3
    assert params.augment.for_task("qqp").n_iter == 20
    assert params.augment.for_task("mnli").n_iter == 4
    assert params.augment.for_task("sst2").n_iter == 20
    assert params.student.for_task("qqp").batch_size == 50
    assert params.student.for_task("qqp").mask_policy == "dedicated"
    assert params.student.for_task("qqp").epochs == 5
    assert params.student.for_task("sst2").mask_policy == "unk"
    assert params.student.for_task("mnli").epochs == 4
    assert params.student.for_task("mnli").baseline_epochs == 10
    assert params.student.for_task("sst2").epochs == 3


def test_every_section_default_matches_params_yaml():
    """params.yaml spells out every key, so a reader sees each value the run used."""
    raw = read_yaml(ROOT / "params.yaml")
    for section in Params.SECTIONS:
        model = getattr(Params.model_fields[section].annotation, "shared_keys", None)
        keys = model() if model else list(Params.model_fields[section].annotation.model_fields)
        shared = {k for k in raw[section] if k not in TASKS}
        assert shared == set(keys), section


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tasks": ["sst2", "nope"]}, "tasks: 'nope' is neither in glue nor in datasets; declare it under datasets.nope"),
        ({"tasks": ["sst2"], "glue": []}, "tasks: 'sst2' is neither in glue nor in datasets; add it to glue too"),
        ({"tasks": ["sst2"], "glue": ["sst2", "rte"]}, "glue: 'rte' is not in tasks; add it to tasks"),
        ({"tasks": ["sst2", "x"], "glue": ["sst2", "x"]}, "glue: 'x' is not a built-in task"),
        ({"tasks": ["sst2"], "teacher": {"nope": {"lr": 1.0}}}, "teacher.nope: neither a key of teacher nor a task"),
        ({"tasks": ["sst2"], "teacher": {"nope": 1}}, "teacher.nope: not a key of this section"),
        ({"tasks": ["sst2"], "teacher": {"sst2": {"lrr": 1}}}, "teacher.sst2.lrr: not a key of this section"),
        ({"tasks": ["sst2"], "teacher": {"sst2": {"sst2": {"lr": 1}}}}, "teacher.sst2.sst2: not a key of this section"),
        ({"tasks": []}, "tasks: List should have at least 1 item"),
        ({"tasks": ["sst2"], "teacher": {"lrr": 1}}, "teacher.lrr: not a key of this section"),
        ({"tasks": ["sst2"], "teacher": {"lr": "fast"}}, "teacher.lr: Input should be a valid number"),
        ({"tasks": ["sst2"], "teacher": {"qqp": {"lr": -1}}}, "teacher.qqp.lr: Input should be greater than 0"),
        ({"tasks": ["sst2"], "augment": {"p_ng": 1.5}}, "augment.p_ng: Input should be less than or equal to 1"),
        ({"tasks": ["sst2"], "augment": {"n_iter": -1}}, "augment.n_iter: Input should be greater than or equal to 0"),
        ({"tasks": ["sst2"], "augment": {"p_mask": 0.7, "p_pos": 0.4}}, "p_mask \\+ p_pos must be at most 1"),
        ({"tasks": ["sst2"], "student": {"mask_policy": "drop"}}, "student.mask_policy: Input should be 'unk' or 'dedicated'"),
        ({"tasks": ["sst2"], "bogus": {}}, "bogus: Extra inputs are not permitted"),
        ({"tasks": ["sst2"], "data": {"max_bad_fraction": 2}}, "data.max_bad_fraction"),
    ],
)
def test_bad_params_fail_with_the_key(raw, message):
    with pytest.raises(PipelineError, match=message):
        parse_params(raw)


def test_missing_params_file(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"teacher": {"epochs": "2"}}, "teacher.epochs: Input should be a valid integer, got the string '2'"),
        ({"student": {"qqp": {"dropout": "0.1"}}}, "student.qqp.dropout: Input should be a valid number"),
        ({"teacher": {"seed": True}}, "teacher.seed: Input should be a valid integer"),
        ({"data": {"max_text_chars": 1e4}}, "data.max_text_chars: Input should be a valid integer"),
    ],
)
def test_types_are_strict(raw, message):
    with pytest.raises(PipelineError, match=message):
        parse_params({"tasks": ["sst2"], **raw})


def test_ints_pass_where_floats_go_and_exponents_are_numbers(tmp_path):
    """`dvc exp run -S teacher.lr=3e-5` writes `3e-05`, a string to YAML 1.1 but a number to DVC
    (and to the pipeline, which reads params.yaml as DVC does: tests/test_params_yaml_as_dvc.py)."""
    path = tmp_path / "params.yaml"
    path.write_text("tasks: [sst2]\nteacher:\n  lr: 3e-05\n  max_grad_norm: 1\nstudent:\n  lr: 1E+0\n")
    params = load_params(path)
    assert (params.teacher.lr, params.teacher.max_grad_norm, params.student.lr) == (3e-5, 1.0, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"tasks: [sst2, qqp\n", "line 2, column 1: expected ',' or ']', but got '<stream end>' "
         "(while parsing a flow sequence from line 1, column 8); fix the YAML syntax"),
        (b"tasks: [sst2]\ndata:\n  max_bad_fraction: 0.1\n glue_dir: x\n",
         "line 4, column 2: expected <block end>, but found '<block mapping start>'"),
        (b"tasks: [sst2]\nteacher:\n  lr: 1.0e-5\n  epochs: 2\n  lr: 3.0e-5\n",  # DVC refuses it too
         "line 5, column 3: found duplicate key \"lr\" with value \"3e-05\" (original value: \"1e-05\") "
         "(while constructing a mapping from line 3, column 3); fix the YAML syntax"),
        (b"tasks: [sst2]\n# caf\xe9\n", "line 2: not UTF-8 (byte 19: invalid continuation byte); convert it"),
    ],
)
def test_unreadable_params_file_is_one_line_with_its_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_bytes(text)
    with pytest.raises(PipelineError) as failure:
        load_params(path)
    assert str(failure.value).startswith(f"{path} {message}") and "\n" not in str(failure.value)


def test_params_directory_is_called_a_directory(tmp_path):
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(PipelineError, match="params.yaml: is a directory, not a params file"):
        load_params(tmp_path / "params.yaml")


def test_a_declared_dataset_is_a_task_with_optional_overrides():
    tickets = {"dir": "data/raw/tickets", "train": "t.csv", "dev": "d.jsonl", "text": "body", "label": "queue",
               "labels": ["billing", "bug"], "metrics": ["f1", "accuracy"], "positive_label": "billing"}
    params = parse_params({
        "tasks": ["sst2", "tickets"], "glue": ["sst2"], "datasets": {"tickets": tickets},
        "student": {"tickets": {"epochs": 7}},  # optional: no other section names the task
    })
    task = params.task("tickets")
    assert (task.builtin, task.is_pair, task.title, task.positive_class) == (False, False, "tickets", 0)
    assert [(s.name, task.split_format(s)) for s in task.splits] == [("train", "csv"), ("dev", "jsonl")]
    assert params.student.for_task("tickets").epochs == 7 and params.teacher.for_task("tickets").epochs == 3
    assert params.task("sst2") is get_task("sst2")


def test_every_built_in_task_is_consistent():
    for task in TASKS.values():
        assert len(task.label_names) == len(task.raw_labels) >= 2, task.name
        assert task.train_split.labelled and task.eval_splits, task.name
        assert set(task.official_rows) <= {s.name for s in task.splits}, task.name
        assert (task.archive is None) == (task.archive_sha256 is None), task.name
        for_model_stages = dataclasses.replace(
            task, title=task.name, description="", official_rows={}, published=(), source_notes={},
            published_ablation=None,
        )
        assert TaskSpec.from_dict(json.loads(json.dumps(task.to_dict(with_source=True)))) == for_model_stages
        assert TaskSpec.from_dict(task.to_dict(with_source=False)) == dataclasses.replace(
            for_model_stages, source_dir="", format="tsv", header=True, archive=None, archive_sha256=None, hub_config=""
        )


def test_a_stage_refuses_settings_params_yaml_no_longer_gives(tmp_path, monkeypatch):
    """Run by hand after an edit, a stage would otherwise train with configure's old values."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"tasks": ["sst2"], "teacher": {"sst2": {"lr": 3.0e-5}}}))
    configured(path)
    assert load_settings(TeacherParams, "sst2", path).lr == 3.0e-5
    path.write_text(yaml.safe_dump({"tasks": ["sst2"], "teacher": {"sst2": {"lr": 5.0e-5}}}))
    with pytest.raises(PipelineError, match=r"data/params/sst2/teacher.json: lr differ from .*params.yaml "
                                            r"\(rerun: dvc repro configure@sst2\)"):
        load_settings(TeacherParams, "sst2", path)
