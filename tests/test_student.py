"""The student stage: loss, targets, training on real SST-2 rows, input checks, and `predict`."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline import paths
from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.io import (
    AUGMENTED_SCHEMA,
    SPLIT_SCHEMA,
    dir_sha256,
    file_sha256,
    logits_schema,
    read_table,
    read_yaml,
    write_table,
)
from pipeline.models import StudentConfig, build_model, load_student, save_student
from pipeline.models.siamese import SiameseBiLSTM
from pipeline.models.vocab import Vocab
from pipeline.params import StudentParams
from pipeline.student import (
    LabelledTexts,
    ce_targets,
    fit_student,
    join_logits,
    main,
    student_loss,
)
from pipeline.tasks import get_task
from pipeline.text import MASK_TOKEN, normalize
from project import configured

ROOT = Path(__file__).resolve().parents[1]
SST2 = get_task("sst2")


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- loss


STUDENT = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
TEACHER = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
CE = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-2.0))) / 2  # targets [0, 1]
MSE = ((1.0 + 0.0) + (1.0 + 1.0)) / 2  # summed over the 2 classes, averaged over the 2 rows


@pytest.mark.parametrize(("alpha", "expected"), [(0.0, MSE), (1.0, CE), (0.3, 0.3 * CE + 0.7 * MSE)])
def test_loss_is_alpha_ce_plus_one_minus_alpha_summed_mse(alpha, expected):
    loss = student_loss(STUDENT, torch.tensor([0, 1]), TEACHER, alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_baseline_loss_is_ce_alone_and_needs_alpha_one():
    assert student_loss(STUDENT, torch.tensor([0, 1]), None, 1.0).item() == pytest.approx(CE, rel=1e-6)
    with pytest.raises(ValueError, match="needs teacher logits"):
        student_loss(STUDENT, torch.tensor([0, 1]), None, 0.3)


@pytest.mark.parametrize(
    ("policy", "targets", "ce"),
    [
        # row 0 is original with gold 1 although the teacher says 0; row 1 is synthetic
        ("gold_for_originals", [1, 1], (math.log1p(math.exp(1.0)) + math.log1p(math.exp(-2.0))) / 2),
        ("teacher_argmax", [0, 1], CE),
    ],
)
def test_ce_target_policies(policy, targets, ce):
    teacher = np.array([[3.0, 1.0], [0.0, 5.0]], dtype=np.float32)
    chosen = ce_targets(np.array([1, -1]), np.array([True, False]), teacher, policy)
    assert chosen.tolist() == targets
    loss = student_loss(STUDENT, torch.from_numpy(chosen), torch.from_numpy(teacher), 1.0)
    assert loss.item() == pytest.approx(ce, rel=1e-6)


# --------------------------------------------------------------------------- training


def _sst2_rows(glue_dir: Path, split: str, n: int) -> tuple[list[str], list[int]]:
    lines = (glue_dir / "SST-2" / f"{split}.tsv").read_text().split("\n")[1 : n + 1]
    fields = [line.split("\t") for line in lines]
    return [normalize(f[0]) for f in fields], [int(f[1]) for f in fields]


def test_tiny_student_overfits_32_real_sst2_rows(sample_glue_dir):
    texts, labels = _sst2_rows(sample_glue_dir, "train", 32)
    rows = LabelledTexts(pa.array(texts), None, np.array(labels))
    params = StudentParams(hidden_size=32, fc_size=32, dropout=0.0, batch_size=8)
    trained = fit_student(SST2, rows, rows, params, alpha=1.0, epochs=30, device=torch.device("cpu"))
    assert trained.curve[trained.best_epoch - 1]["eval_accuracy"] == 1.0
    assert trained.curve[0]["eval_accuracy"] < 1.0
    assert trained.config.embedding_dim == 50  # the packaged GloVe 6B 50-d default
    assert 0.9 < trained.token_coverage <= 1.0


def test_backoff_words_change_unseen_dev_words_only(sample_glue_dir):
    """Training is the same with or without backoff words; only unseen dev words read them."""
    texts, labels = _sst2_rows(sample_glue_dir, "train", 32)
    dev_texts, dev_labels = _sst2_rows(sample_glue_dir, "dev", 64)
    train = LabelledTexts(pa.array(texts), None, np.array(labels))
    dev = LabelledTexts(pa.array(dev_texts), None, np.array(dev_labels))
    runs = {
        n: fit_student(
            SST2, train, dev, StudentParams(hidden_size=8, fc_size=8, batch_size=8, backoff_words=n),
            alpha=1.0, epochs=2, device=torch.device("cpu"),
        )
        for n in (0, 1000)
    }
    plain, backoff = runs[0], runs[1000]
    assert [r["train_loss"] for r in plain.curve] == [r["train_loss"] for r in backoff.curve]
    assert plain.config.backoff_size == 0 and backoff.config.backoff_size == 1000
    assert backoff.vocab.words[: len(plain.vocab)] == plain.vocab.words
    unseen = [w for w in backoff.vocab.words[len(plain.vocab) :] if w in set(" ".join(dev_texts).split())]
    assert unseen  # frequent words such as these are missing from 32 training rows
    assert (backoff.vocab.encode(dev_texts).ids >= len(plain.vocab)).any()


def test_pair_student_trains_and_scores_real_mnli_rows(sample_glue_dir):
    mnli = get_task("mnli")
    lines = (sample_glue_dir / "MNLI" / "dev_matched.tsv").read_text().split("\n")[1:25]
    fields = [line.split("\t") for line in lines]
    text_a = pa.array([normalize(f[3]) for f in fields])
    text_b = pa.array([normalize(f[4]) for f in fields])
    rows = LabelledTexts(text_a, text_b, np.array([mnli.label_index(f[5]) for f in fields]))
    params = StudentParams(vectors="random", random_dim=8, hidden_size=8, fc_size=8, batch_size=8)
    trained = fit_student(mnli, rows, rows, params, alpha=1.0, epochs=2, device=torch.device("cpu"))
    assert list(trained.curve[0]) == ["epoch", "train_loss", "eval_accuracy", "examples_per_s"]
    assert isinstance(trained.model, SiameseBiLSTM)


# --------------------------------------------------------------------------- the stage


TINY_PARAMS = {
    "tasks": ["sst2"],
    "student": {
        "vectors": "random",
        "random_dim": 8,
        "hidden_size": 8,
        "fc_size": 8,
        "batch_size": 8,
        "epochs": 2,
        "baseline_epochs": 2,
    },
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch, sample_glue_dir) -> Path:
    """A working directory with a small SST-2 transfer set, random teacher logits and a dev split."""
    texts, labels = _sst2_rows(sample_glue_dir, "train", 24)
    synthetic = [" ".join([MASK_TOKEN, *t.split()[1:]]) for t in texts[:16]]
    n = len(texts) + len(synthetic)
    corpus = pa.table(
        {
            "idx": list(range(n)),
            "source_idx": list(range(len(texts))) + list(range(len(synthetic))),
            "text_a": texts + synthetic,
            "text_b": [None] * n,
            "label": labels + [-1] * len(synthetic),
            "is_original": [True] * len(texts) + [False] * len(synthetic),
        },
        schema=AUGMENTED_SCHEMA,
    )
    monkeypatch.chdir(tmp_path)
    write_table(corpus, paths.augmented("sst2"))
    write_logits(np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32), np.arange(n))
    dev_texts, dev_labels = _sst2_rows(sample_glue_dir, "dev", 20)
    dev = pa.table(
        {"idx": list(range(20)), "text_a": dev_texts, "text_b": [None] * 20, "label": dev_labels},
        schema=SPLIT_SCHEMA,
    )
    write_table(dev, paths.prepared_split("sst2", "dev"))
    write_params(TINY_PARAMS)
    return tmp_path


def write_params(raw: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(raw))
    configured(Path("params.yaml"))


def write_logits(values: np.ndarray, idx: np.ndarray, corpus_sha256: str | None = None) -> None:
    """Logits with the label stage's metadata, in the current directory."""
    width = values.shape[1]
    logits = pa.FixedSizeListArray.from_arrays(values.ravel(), width)
    table = pa.table({"idx": pa.array(idx, pa.int64()), "logits": logits}, schema=logits_schema(width))
    meta = {
        "task": "sst2",
        "num_labels": width,
        "corpus_path": str(paths.augmented("sst2")),
        "corpus_sha256": corpus_sha256 or file_sha256(paths.augmented("sst2")),
        "rows": len(idx),
    }
    write_table(table, paths.logits("sst2"), meta)


@pytest.mark.parametrize(("variant", "rows", "alpha"), [("distilled", 40, 0.0), ("baseline", 24, 1.0)])
def test_stage_writes_a_loadable_student_and_a_curve(project, variant, rows, alpha):
    main("sst2", variant, Path("params.yaml"))
    out = paths.student_dir("sst2", variant)
    training = json.loads((out / "training.json").read_text())
    assert training["train_rows"] == rows and training["alpha"] == alpha
    student = load_student(out)
    assert training["params_no_embeddings"] == student.num_parameters(include_embeddings=False)
    with paths.curve_file("sst2", variant).open() as fh:
        curve = list(csv.DictReader(fh))
    assert list(curve[0]) == ["epoch", "train_loss", "eval_accuracy", "examples_per_s"]
    assert [row["epoch"] for row in curve] == ["1", "2"]
    best = max(curve, key=lambda row: float(row["eval_accuracy"]))
    assert training["best_dev"]["eval_accuracy"] == pytest.approx(float(best["eval_accuracy"]))
    assert [p.name for p in Path("models/student/sst2").iterdir()] == [variant]  # no temp dir left


def test_stage_is_deterministic_on_cpu(project):
    main("sst2", "distilled", Path("params.yaml"))
    first = dir_sha256(paths.student_dir("sst2", "distilled"))
    main("sst2", "distilled", Path("params.yaml"))
    assert dir_sha256(paths.student_dir("sst2", "distilled")) == first
    write_params({**TINY_PARAMS, "student": {**TINY_PARAMS["student"], "seed": 1}})
    main("sst2", "distilled", Path("params.yaml"))
    assert dir_sha256(paths.student_dir("sst2", "distilled")) != first


def test_logits_join_the_corpus_on_idx(project):
    idx = np.arange(40)[::-1]
    write_logits(np.stack([idx, -idx], axis=1).astype(np.float32), idx)
    corpus, logits = read_table(paths.augmented("sst2")), read_table(paths.logits("sst2"))
    teacher = join_logits(corpus, logits, SST2, paths.logits("sst2"))
    assert teacher.tolist() == [[i, -i] for i in range(40)]


def _zeros(rows: int, width: int = 2) -> np.ndarray:
    return np.zeros((rows, width), np.float32)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda: write_logits(_zeros(40, 3), np.arange(40)), "sst2 with 3 labels, not sst2 with 2"),
        (lambda: write_logits(_zeros(39), np.arange(39)), "39 rows .* has 40"),
        (lambda: write_logits(_zeros(40), np.arange(40) + 1), "no logits for 1 corpus rows .first idx 0"),
        (lambda: write_logits(_zeros(40), np.arange(40), "0" * 64), "corpus hash differs"),
        (lambda: paths.logits("sst2").unlink(), "file not found"),
    ],
)
def test_mismatched_logits_are_refused_before_training(project, damage, message):
    damage()
    with pytest.raises(PipelineError, match=message):
        main("sst2", "distilled", Path("params.yaml"))
    assert not Path("models").exists()


def test_unknown_vectors_format_is_refused_before_training(project):
    Path("vectors.txt").write_text("not vectors at all\n")
    write_params({**TINY_PARAMS, "student": {**TINY_PARAMS["student"], "vectors": "vectors.txt"}})
    with pytest.raises(PipelineError, match="is not a GloVe text, word2vec text or word2vec binary"):
        main("sst2", "baseline", Path("params.yaml"))
    assert not Path("models").exists()


def test_dvc_declares_distilled_and_baseline_as_separate_stages():
    stage = read_yaml(ROOT / "dvc.yaml")["stages"]["student"]
    assert stage["matrix"]["variant"] == list(paths.STUDENT_VARIANTS)
    assert stage["outs"] == ["models/student/${item.task}/${item.variant}"]
    assert list(stage["plots"][0]) == ["metrics/curves/${item.task}-${item.variant}.csv"]
    assert "params" not in stage  # its settings: configure's file for the task
    assert "data/params/${item.task}/student.json" in stage["deps"]


# --------------------------------------------------------------------------- predict


@pytest.fixture
def student_dir(tmp_path: Path) -> Path:
    vocab, _ = Vocab.build([["a gorgeous , witty film", "a dull , lifeless film"]], "unk")
    config = StudentConfig("sst2", SST2.label_names, False, len(vocab), 6, 5, 4, 0.0, "unk")
    torch.manual_seed(0)
    save_student(tmp_path / "student", config, vocab, build_model(config))
    return tmp_path / "student"


def _rows(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.strip().split("\n")]


def test_predict_normalizes_text_and_prints_label_and_probabilities(student_dir):
    texts = ["a gorgeous, witty film", "A dull film."]
    result = CliRunner().invoke(app, ["predict", str(student_dir), *texts])
    assert result.exit_code == 0, result.output
    header, *rows = _rows(result.stdout)
    assert header == ["label", "p_negative", "p_positive", "text_a"]
    logits = load_student(student_dir).predict_logits(["a gorgeous , witty film", "a dull film ."])
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    for row, p, text in zip(rows, probabilities, texts):
        assert row == [SST2.label_names[p.argmax()], f"{p[0]:.4f}", f"{p[1]:.4f}", text]


def test_predict_reads_a_file_and_stdin_in_batches(student_dir, tmp_path):
    texts = ["a gorgeous, witty film", "", "dull", "lifeless and dull", "witty"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    predict = ["predict", str(student_dir), "--batch-size", "2", "--file"]
    from_file = CliRunner().invoke(app, [*predict, str(tmp_path / "in.txt")])
    from_stdin = CliRunner().invoke(app, [*predict, "-"], input="\n".join(texts))
    assert from_file.exit_code == 0 and from_stdin.exit_code == 0, from_file.output + from_stdin.output
    assert from_file.stdout == from_stdin.stdout
    assert [row[-1] for row in _rows(from_file.stdout)[1:]] == [t for t in texts if t]  # blank skipped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a film\tanother film"], "classifies single sentences, got a TAB-separated pair"),
        ([], "nothing to classify"),
        (["--file", "missing.txt"], "missing.txt: file not found"),
    ],
)
def test_predict_input_errors(student_dir, args, message):
    result = CliRunner().invoke(app, ["predict", str(student_dir), *args])
    assert isinstance(result.exception, PipelineError) and message in str(result.exception)


def test_predict_pair_student_refuses_single_texts(tmp_path):
    vocab, _ = Vocab.build([["how do i learn ?", "what is it ?"]], "unk")
    qqp = get_task("qqp")
    config = StudentConfig("qqp", qqp.label_names, True, len(vocab), 6, 5, 4, 0.0, "unk")
    save_student(tmp_path / "pair", config, vocab, build_model(config))
    ok = CliRunner().invoke(app, ["predict", str(tmp_path / "pair"), "How do I learn?\tWhat is it?"])
    assert ok.exit_code == 0 and _rows(ok.stdout)[1][-2:] == ["How do I learn?", "What is it?"]
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "pair"), "How do I learn?"])
    assert "argument 1: the qqp student classifies pairs" in str(result.exception)


def test_predict_missing_model_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", str(tmp_path / "nope"), "a film"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 1
    expected = f"error: {tmp_path / 'nope'}: student directory not found; check the path, or re-make it: dvc repro"
    assert result.stderr.strip().splitlines() == [expected]


@pytest.mark.parametrize(
    ("file_bytes", "args", "message"),
    [
        (b"a witty film\ncaf\xe9 society\n", ["--file", "{in}"], "{in} line 2: not UTF-8"),
        (None, ["--file", "{dir}"], "{dir}: is a directory, not a file (one text per line"),
        (None, ["a long film " * 1000], "argument 1: 12,000 characters, over the limit of 10,000"),
    ],
)
def test_predict_failures_are_one_stderr_line_and_no_stdout(student_dir, tmp_path, file_bytes, args, message):
    """A script piping predict's output never sees a header without rows."""
    names = {"in": tmp_path / "in.txt", "dir": tmp_path}
    if file_bytes is not None:
        names["in"].write_bytes(file_bytes)
    argv = [arg.format_map(names) if arg.startswith("{") else arg for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", str(student_dir), *argv],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert (result.returncode, result.stdout) == (1, "")
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message.format_map(names)}"), line
