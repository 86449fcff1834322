"""Your own data, end to end: three datasets declared in params.yaml, run by `dvc repro`.

A new user's path (docs/own-data.md): put the files in data/raw/<name>/, `dvc add`
them, declare the task under `datasets` and list it in `tasks`; no Python changes. The
datasets are built here: a 3-class single-sentence CSV with declared classes, a binary pair
JSON Lines file, and a Parquet file whose integer classes are inferred from train. Settings
are tiny (one epoch, one augmentation round), so the scores mean nothing; what is checked is
that every stage runs, each task gets its own metrics, and that editing one raw file makes
exactly that task's chain stale.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dvc_project import ENV, Project, copy_checkout
from pipeline import paths
from pipeline.io import read_metadata, read_yaml
from smoke_profile import with_overrides

pytestmark = pytest.mark.e2e

TASKS = ["tickets", "pairs", "reviews"]
DATASETS = {
    "tickets": {
        "dir": "data/raw/tickets",
        "train": "train.csv",
        "dev": "dev.csv",
        "text": "body",
        "label": "queue",
        "labels": ["billing", "bug", "feature"],
        "metrics": ["accuracy", "macro_f1"],
        "title": "Tickets",
        "description": "support tickets, built by tests/test_e2e_datasets.py",
    },
    "pairs": {
        "dir": "data/raw/pairs",
        "train": "train.jsonl",
        "dev": "dev.jsonl",
        "text": "first",
        "text_pair": "second",
        "label": "same",
        "labels": ["no", "yes"],
        "metrics": ["accuracy", "f1"],
        "positive_label": "yes",
    },
    "reviews": {
        "dir": "data/raw/reviews",
        "train": "train.parquet",
        "dev": "dev.parquet",
        "text": "review",
        "label": "stars",
        "metrics": ["matthews", "accuracy"],
    },
}
TINY = {  # one pass of everything, on short inputs
    "tasks": TASKS,
    "glue": [],
    "datasets": DATASETS,
    "ablation.tasks": [],  # the record's SST-2 ablation: not one of these tasks
    "teacher.epochs": 1,
    "teacher.max_length": 32,
    "augment.n_iter": 1,
    "label.max_length": 32,
    "student.epochs": 1,
    "student.baseline_epochs": 1,
    "evaluate.max_length": 32,
    "evaluate.throughput_rows": 40,
    "evaluate.latency_repeats": 2,
    "evaluate.warmup_batches": 1,
}
CHAIN = (
    "prepare_dataset@{t}", "teacher@{t}", "augment@{t}", "label@{t}", "student@{t}-distilled",
    "student@{t}-baseline", "export@{t}-distilled", "export@{t}-baseline", "evaluate@{t}",
)


def chain(task: str) -> set[str]:
    return {stage.format(t=task) for stage in CHAIN}


TOPICS = {
    "billing": ["my invoice shows a double charge", "refund the payment for last month", "the card was billed twice"],
    "bug": ["the app crashes when i open settings", "login fails with an error", "the page freezes on save"],
    "feature": ["please add a dark mode", "could you support export to pdf", "i would like a weekly summary"],
}
QUESTIONS = ["how do i reset my password", "what is the refund policy", "where is my order",
             "how can i change my email", "why was my card declined", "when does the store open"]


def tickets_csv(rng: random.Random, rows: int) -> str:
    lines = ["id,body,queue"]
    for i in range(rows):
        queue = rng.choice(sorted(TOPICS))
        body = f"{rng.choice(TOPICS[queue])}, ticket {i}"
        lines.append(f'{i},"{body}",{queue}')  # quoted: the text holds a comma
    return "\n".join(lines) + "\n"


def pairs_jsonl(rng: random.Random, rows: int) -> str:
    out = []
    for _ in range(rows):
        first = rng.choice(QUESTIONS)
        same = rng.random() < 0.5
        second = first.replace("how", "in what way") if same else rng.choice([q for q in QUESTIONS if q != first])
        out.append(json.dumps({"first": first, "second": second, "same": "yes" if same else "no"}))
    return "\n".join(out) + "\n"


def reviews_table(rng: random.Random, rows: int) -> pa.Table:
    good, bad = ["a wonderful film", "great acting and a warm story"], ["a dull mess", "boring and far too long"]
    stars = [rng.choice([1, 5]) for _ in range(rows)]
    texts = [rng.choice(good if s == 5 else bad) for s in stars]
    return pa.table({"review": texts, "stars": stars})


def write_raw_data(root, rng: random.Random) -> None:
    for name in TASKS:
        (root / DATASETS[name]["dir"]).mkdir(parents=True)
    for split, rows in (("train", 36), ("dev", 12)):
        (root / f"data/raw/tickets/{split}.csv").write_text(tickets_csv(rng, rows))
        (root / f"data/raw/pairs/{split}.jsonl").write_text(pairs_jsonl(rng, rows))
        pq.write_table(reviews_table(rng, rows), root / f"data/raw/reviews/{split}.parquet")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """A fresh copy of the project with only the three datasets, after its first `dvc repro`."""
    user = Project(tmp_path_factory.mktemp("datasets") / "user")
    copy_checkout(user.path)
    params = read_yaml(user.path / "params.yaml")
    (user.path / "params.yaml").write_text(yaml.safe_dump(with_overrides(params, TINY), sort_keys=False))
    write_raw_data(user.path, random.Random(0))
    user.git("init", "-q")
    user.dvc("add", *(DATASETS[name]["dir"] for name in TASKS))
    user.git("add", "-A")
    user.git("commit", "-qm", "three datasets of my own")
    first = user.dvc("repro")
    user.git("add", "-A")
    user.git("commit", "-qm", "first run")
    return user, first


def test_every_dataset_runs_the_whole_dag(project):
    user, first = project
    assert first.ran == user.stage_names()
    assert first.ran == {f"configure@{t}" for t in TASKS} | set().union(*map(chain, TASKS)) | {"report"}
    expected_keys = {
        "tickets": {"eval_accuracy", "eval_macro_f1"},
        "pairs": {"eval_accuracy", "eval_f1"},
        "reviews": {"eval_matthews", "eval_accuracy"},
    }
    for task, keys in expected_keys.items():
        metrics = json.loads((user.path / paths.metrics_file(task)).read_text())
        assert {k for k in metrics["distilled"] if k.startswith("eval_")} == keys
    # Inferred classes: the sorted integers of train, the same in the data and the student.
    assert read_metadata(user.path / paths.prepared_split("reviews", "train"))["label_names"] == ["1", "5"]
    config = json.loads((user.path / paths.student_dir("reviews", "distilled") / "config.json").read_text())
    assert config["label_names"] == ["1", "5"] and not config["is_pair"]
    pair_config = json.loads((user.path / paths.student_dir("pairs", "baseline") / "config.json").read_text())
    assert pair_config["is_pair"] and pair_config["label_names"] == ["no", "yes"]
    report = (user.path / paths.REPORTS / "results.md").read_text()
    assert "Tickets macro-F1" in report and "reviews MCC" in report and "SST-2" not in report
    predicted = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", "models/student/reviews/distilled", "a wonderful film"],
        cwd=user.path, env=ENV, capture_output=True, text=True, check=True,
    )
    assert predicted.stdout.splitlines()[0] == "label\tp_1\tp_5\ttext_a"


def test_a_no_op_repro_runs_nothing(project, capsys):
    user, _ = project
    run = user.dvc("repro")
    assert run.ran == set() and user.status() == {}
    with capsys.disabled():
        print(f"\n[timing] no-op `dvc repro`, three datasets: {run.seconds:.1f} s")


def test_editing_one_raw_file_reruns_exactly_that_tasks_chain(project, tmp_path):
    user, _ = project
    bob = user.clone(tmp_path / "bob", share_cache=True)
    raw = bob.path / "data/raw/tickets/train.csv"
    raw.write_text(raw.read_text() + '99,"the invoice total is wrong again",billing\n')
    untouched = bob.path / "data/raw/pairs/train.jsonl"
    untouched.write_text(untouched.read_text())  # same bytes, new mtime: not a change
    bob.dvc("add", "data/raw/tickets")
    status = bob.status()
    assert status == {"prepare_dataset@tickets": [{"changed deps": {"data/raw/tickets": "modified"}}]}
    run = bob.dvc("repro")
    assert run.ran == chain("tickets") | {"report"}
    assert bob.status() == {}


def test_classes_named_no_and_yes_survive_dvc_rewriting_params(project, tmp_path):
    """`dvc exp run -S` rewrites params.yaml as YAML 1.2, where the classes `no` and `yes`
    need no quotes; the pipeline reads the file as DVC does, so they stay strings."""
    user, _ = project
    bob = user.clone(tmp_path / "bob", share_cache=True)
    params = bob.path / "params.yaml"
    assert "- 'no'\n" in params.read_text()  # as PyYAML wrote it, quoted for YAML 1.1
    run = bob.dvc("exp", "run", "-S", "+student.pairs.dropout=0.2")
    rewritten = params.read_text()
    assert "- no\n" in rewritten and "positive_label: yes\n" in rewritten and "'no'" not in rewritten
    assert run.ran == {f"configure@{t}" for t in TASKS} | {
        "student@pairs-distilled", "student@pairs-baseline", "export@pairs-distilled",
        "export@pairs-baseline", "evaluate@pairs", "report",
    }
    config = json.loads((bob.path / paths.student_dir("pairs", "distilled") / "config.json").read_text())
    assert config["label_names"] == ["no", "yes"] and config["is_pair"]
    assert json.loads((bob.path / paths.metrics_file("pairs")).read_text())["distilled"]["eval_f1"] >= 0
