"""Ablation arms as data (params.yaml `ablation`): validation, resolved settings, the table.

The stages themselves run for real in tests/test_e2e_dvc.py (`dvc repro` with arms declared).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import paths
from pipeline.ablation import ablation_table, logits_dtype
from pipeline.configure import main as configure
from pipeline.errors import PipelineError
from pipeline.io import file_sha256, logits_schema, read_json, read_yaml, write_table
from pipeline.params import ablation_order, load_arm, load_settings, parse_params, AugmentParams
from pipeline.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PARAMS = read_yaml(ROOT / "params.yaml")
ARMS = {
    "tasks": ["sst2"],
    "seeds": [0, 1],
    "reused_logits": {"soft_only": {"originals_only": True, "student": {"epochs": 10}}},
    "new_logits": {"mask_only": {"augment": {"p_pos": 0.0, "p_ng": 0.0}}, "mask_pos": {"augment": {"p_ng": 0.0}}},
}


def with_ablation(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(PARAMS)
    raw["ablation"] = {**copy.deepcopy(ARMS), **changes}
    return raw


def test_the_projects_arms_are_the_issues_three_and_the_record_runs_them_on_sst2():
    params = parse_params(PARAMS)
    assert params.ablation.tasks == ["sst2"]
    assert ablation_order(params.ablation) == ["baseline", "soft_only", "mask_only", "mask_pos", "distilled"]


def test_each_row_resolves_over_the_tasks_own_settings():
    params = parse_params(with_ablation())
    student = params.student.for_task("sst2")
    soft = params.arm("sst2", "soft_only")
    assert (soft.variant, soft.logits, soft.originals_only, soft.seeds) == ("distilled", "task", True, [0, 1])
    assert soft.student == student.model_copy(update={"epochs": 10})
    mask = params.arm("sst2", "mask_only")
    assert (mask.logits, mask.originals_only, mask.student) == ("own", False, student)
    assert params.arm_augment("sst2", "mask_only") == params.augment.for_task("sst2").model_copy(
        update={"p_pos": 0.0, "p_ng": 0.0}
    )
    assert params.arm_augment("sst2", "soft_only") is None
    # The DAG's own students are rows at the other seeds only: their own seed is trained already.
    for variant, originals_only in (("distilled", False), ("baseline", True)):
        row = params.arm("sst2", variant)
        assert (row.variant, row.seeds, row.originals_only, row.student) == (variant, [1], originals_only, student)


def test_the_tasks_student_seed_retrains_only_the_rows_of_the_dags_own_students():
    """An arm trains at ablation.seeds: student.seed is no input of its settings file."""
    before = parse_params(with_ablation())
    raw = with_ablation()
    raw["student"]["seed"] = 1
    after = parse_params(raw)
    for arm in ("soft_only", "mask_only", "mask_pos"):
        assert after.arm("sst2", arm) == before.arm("sst2", arm)
        assert after.arm("sst2", arm).student.seed == 0  # the row's first seed
    for variant in ("distilled", "baseline"):
        assert (before.arm("sst2", variant).seeds, after.arm("sst2", variant).seeds) == ([1], [0])


def test_an_arm_resolves_over_a_tasks_own_subsection():
    raw = with_ablation(tasks=["sst2", "mnli"])
    params = parse_params(raw)
    # augment.mnli.n_iter and student.mnli.epochs apply under the arm's overrides
    assert params.arm_augment("mnli", "mask_pos").n_iter == PARAMS["augment"]["mnli"]["n_iter"]
    assert params.arm("mnli", "mask_pos").student.epochs == PARAMS["student"]["mnli"]["epochs"]
    assert params.arm("mnli", "soft_only").student.epochs == 10


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"new_logits": {"x": {"augment": {"p_typo": 0.1}}}}, "ablation.new_logits.x.augment.p_typo: not a key of augment"),
        ({"reused_logits": {"x": {"student": {"alpha": 1.5}}}},
         "ablation.reused_logits.x.student.alpha: Input should be less than or equal to 1"),
        ({"reused_logits": {"x": {"originals": True}}}, "ablation.reused_logits.x.originals: Extra inputs are not permitted"),
        ({"new_logits": {"baseline": {"augment": {"p_ng": 0.0}}}}, "ablation.new_logits.baseline: arm names are"),
        ({"new_logits": {"x": {"augment": {"p_pos": 1.2}}}},
         "ablation.new_logits.x.augment.p_pos: Input should be less than or equal to 1"),
        ({"new_logits": {"x": {"augment": {"p_mask": 0.6, "p_pos": 0.6}}}},
         "ablation.new_logits.x.augment.p_mask + p_pos must be at most 1"),
        ({"new_logits": {"x": {"augment": {"p_ng": 0.25}}}}, "ablation.new_logits.x.augment: sst2's own augmentation"),
        ({"new_logits": {"x": {"augment": {"p_ng": 0.0}}, "y": {"augment": {"p_ng": 0.0}}}},
         "ablation.new_logits.y.augment: the same augmentation as arm 'x' for sst2"),
        ({"reused_logits": {"x": {}}}, "ablation.reused_logits.x: changes nothing that sst2's full method trains"),
        # threads set how fast a student trains, not what it learns
        ({"reused_logits": {"x": {"student": {"threads": 2}}}}, "ablation.reused_logits.x: changes nothing that"),
        ({"reused_logits": {"x": {"student": {"seed": 3}}}}, "ablation.reused_logits.x.student.seed: an arm trains at"),
        ({"reused_logits": {"x": {"student": {"baseline_epochs": 3}}}},
         "ablation.reused_logits.x.student.baseline_epochs: an arm trains a distilled student for `epochs`"),
        # checked even while no task runs the ablation, not first when one is added to tasks
        ({"tasks": [], "new_logits": {"x": {"augment": {"p_ng": 1.5}}}},
         "ablation.new_logits.x.augment.p_ng: Input should be less than or equal to 1"),
        ({"seeds": [0]}, "ablation.seeds: [0] must list at least two different seeds"),
        ({"seeds": [1, 2]}, "ablation.seeds: [1, 2] must include sst2's student.seed 0"),
        ({"tasks": ["cola"]}, "ablation.tasks: 'cola' is not in tasks"),
    ],
)
def test_a_bad_arm_fails_at_load_time_with_its_key(changes, message):
    with pytest.raises(PipelineError) as error:
        parse_params(with_ablation(**changes))
    assert str(error.value).startswith(f"params.yaml: {message}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"new_logits": {"x": {"augment": {"p_typo": 0.1}}}}, "ablation.new_logits.x.augment.p_typo: not a key"),
        ({"reused_logits": {"distilled": {"originals_only": True}}}, "ablation.reused_logits.distilled: arm names"),
        ({"new_logits": {"x": {"augment": {"p_ng": -0.5}}}}, "ablation.new_logits.x.augment.p_ng: Input should be"),
    ],
    ids=["unknown-key", "variant-name", "probability"],
)
def test_a_bad_arm_is_one_error_line_before_any_stage_work(tmp_path, changes, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_ablation(**changes)))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "configure", "--task", "sst2"], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: params.yaml: {message}"), result.stderr
    assert not (tmp_path / "data").exists()


def test_configure_writes_each_rows_files_and_the_stages_read_them_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_ablation()))
    configure("sst2", Path("params.yaml"))
    configure("qqp", Path("params.yaml"))
    arms = paths.arms_settings_dir("sst2")
    written = sorted(p.relative_to(arms).as_posix() for p in arms.rglob("*.json"))
    assert written == [
        "baseline/student.json", "distilled/student.json", "mask_only/augment.json", "mask_only/student.json",
        "mask_pos/augment.json", "mask_pos/student.json", "soft_only/student.json",
    ]
    assert not paths.arms_settings_dir("qqp").exists()  # not in ablation.tasks
    assert read_json(paths.arm_settings_file("sst2", "soft_only", "student"))["student"]["epochs"] == 10
    assert load_arm("sst2", "soft_only").originals_only
    assert load_settings(AugmentParams, "sst2", arm="mask_only").p_pos == 0.0
    with pytest.raises(PipelineError, match="arm 'soft_only' has no augment settings of its own"):
        load_settings(AugmentParams, "sst2", arm="soft_only")
    # An edit after configure: the stage refuses the stale file rather than train with it.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_ablation(seeds=[0, 2])))
    with pytest.raises(PipelineError, match=r"arms/soft_only/student.json: seeds differ from params.yaml \(rerun: dvc repro configure@sst2\)"):
        load_arm("sst2", "soft_only")


def training(seed: int, accuracy: float, variant: str = "distilled", rows: int = 100) -> dict[str, Any]:
    return {
        "variant": variant, "alpha": 0.0 if variant == "distilled" else 1.0, "epochs": 3, "train_rows": rows,
        "best_epoch": 2, "best_dev": {"eval_accuracy": accuracy}, "params": {"seed": seed},
    }


def test_the_table_gives_every_seed_its_mean_and_spread_in_table_order():
    params = parse_params(with_ablation(seeds=[1, 0]))
    ablation = params.ablation
    rows = {arm: params.arm("sst2", arm) for arm in ablation_order(ablation)}
    trainings = {
        "baseline": [training(0, 0.80, "baseline", 50), training(1, 0.82, "baseline", 50)],
        "soft_only": [training(1, 0.84, rows=50), training(0, 0.83, rows=50)],
        "mask_only": [training(0, 0.86, rows=300), training(1, 0.85, rows=300)],
        "mask_pos": [training(0, 0.87), training(1, 0.87)],
        "distilled": [training(0, 0.885, rows=900), training(1, 0.875, rows=900)],
    }
    dtypes = {arm: None if arm == "baseline" else "bfloat16" for arm in rows} | {"mask_only": "float32"}
    table = ablation_table(get_task("sst2"), ablation, rows, trainings, dtypes)
    assert [r["logits_dtype"] for r in table["arms"]] == [None, "bfloat16", "float32", "bfloat16", "bfloat16"]
    assert [r["name"] for r in table["arms"]] == ["baseline", "soft_only", "mask_only", "mask_pos", "distilled"]
    assert [r["role"] for r in table["arms"]] == ["baseline", "arm", "arm", "arm", "full"]
    assert [r["logits"] for r in table["arms"]] == ["none", "task", "own", "own", "task"]
    assert [r["originals_only"] for r in table["arms"]] == [True, True, False, False, False]
    assert (table["metric_keys"], table["seeds"], table["dev_split"]) == (["eval_accuracy"], [1, 0], "dev")
    soft = table["arms"][1]
    assert [(s["seed"], s["eval_accuracy"]) for s in soft["seeds"]] == [(1, 0.84), (0, 0.83)]  # ablation.seeds order
    assert soft["mean"]["eval_accuracy"] == pytest.approx(0.835)
    assert soft["spread"]["eval_accuracy"] == pytest.approx(0.01)
    assert soft["transfer_rows"] == 50
    assert soft["description"] == "teacher logits of the original rows only; student epochs 10"
    assert table["arms"][2]["description"] == "augment p_pos 0, p_ng 0"
    assert table["arms"][0]["settings"] == {"alpha": 1.0, "epochs": 3}


def test_each_rows_logits_precision_comes_from_labels_metadata(tmp_path, monkeypatch):
    """The task's logits are a dependency; an arm's own are the file its students hashed."""
    import pyarrow as pa

    monkeypatch.chdir(tmp_path)
    params = parse_params(with_ablation())
    rows = {arm: params.arm("sst2", arm) for arm in ablation_order(params.ablation)}
    table = pa.table({"idx": pa.array([0], pa.int64()), "logits": pa.array([[0.1, -0.1]], pa.list_(pa.float32(), 2))})
    write_table(table.cast(logits_schema(2)), paths.logits("sst2"), {"dtype": "bfloat16"})
    own = paths.arm_logits("sst2", "mask_only")
    write_table(table.cast(logits_schema(2)), own, {"dtype": "float32"})
    trained = [{"inputs": {"logits": str(own), "logits_sha256": file_sha256(own)}}]
    assert logits_dtype("sst2", "baseline", rows["baseline"], []) is None
    assert logits_dtype("sst2", "soft_only", rows["soft_only"], []) == "bfloat16"
    assert logits_dtype("sst2", "distilled", rows["distilled"], []) == "bfloat16"
    assert logits_dtype("sst2", "mask_only", rows["mask_only"], trained) == "float32"
    write_table(table.cast(logits_schema(2)), own, {"dtype": "bfloat16"})  # relabelled since
    with pytest.raises(PipelineError, match="not the logits ablation row 'mask_only' trained on; restore them"):
        logits_dtype("sst2", "mask_only", rows["mask_only"], trained)


def test_a_row_without_a_seeds_student_fails_naming_it():
    params = parse_params(with_ablation())
    ablation = params.ablation
    rows = {arm: params.arm("sst2", arm) for arm in ablation_order(ablation)}
    trainings = {arm: [training(0, 0.8), training(1, 0.8)] for arm in rows}
    trainings["mask_pos"] = [training(0, 0.8)]
    with pytest.raises(PipelineError, match="ablation row 'mask_pos' of sst2 has no student for seed 1"):
        ablation_table(get_task("sst2"), ablation, rows, trainings, dict.fromkeys(rows, "bfloat16"))


@pytest.mark.parametrize(
    ("path", "stage"),
    [
        ("data/ablation/sst2/mask_only/augmented.parquet", "ablation_augment@sst2-mask_only"),
        ("data/ablation/sst2/mask_only/logits.parquet", "ablation_label@sst2-mask_only"),
        ("metrics/evaluate/sst2_ablation.json", "ablation@sst2"),
        ("metrics/evaluate/sst2_speed.json", "evaluate@sst2"),
    ],
)
def test_readers_name_the_stage_that_makes_an_ablation_output(path, stage):
    assert paths.producing_stage(path) == stage


def test_a_task_name_may_not_end_like_an_ablation_file():
    raw = copy.deepcopy(PARAMS)
    raw["tasks"] = [*raw["tasks"], "films_ablation"]
    raw["datasets"] = {"films_ablation": {"dir": "d", "train": "t.csv", "dev": "d.csv", "text": "x", "label": "y"}}
    with pytest.raises(PipelineError, match="datasets.films_ablation: task names are .* not ending in _speed or _ablation"):
        parse_params(raw)
