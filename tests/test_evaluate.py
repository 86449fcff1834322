"""evaluate: GLUE metrics, parameter counts, the speed harness and the stage end to end."""

from __future__ import annotations

import dataclasses

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline import evaluate, paths
from pipeline.errors import PipelineError
from pipeline.io import SPLIT_SCHEMA, write_table
from pipeline.metrics import compute_metrics
from pipeline.export import export_student
from pipeline.models import StudentConfig, build_model, load_student, save_student
from pipeline.params import ExportParams
from pipeline.models.vocab import Vocab
from pipeline.speed import measure_latency, measure_throughput
from pipeline.tasks import get_task
from pipeline.text import normalize
from project import configured

SST2, QQP, MNLI = get_task("sst2"), get_task("qqp"), get_task("mnli")

# --------------------------------------------------------------------------- metrics


def test_sst2_accuracy_by_hand():
    metrics = compute_metrics(SST2, SST2.split("dev"), np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0]))
    assert metrics == {"eval_accuracy": 0.5}


def test_qqp_accuracy_and_f1_of_duplicates_by_hand():
    # tp = 2 (rows 0, 3), fp = 1 (row 2), fn = 1 (row 4): F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    predictions = np.array([1, 0, 1, 1, 0])
    labels = np.array([1, 0, 0, 1, 1])
    metrics = compute_metrics(QQP, QQP.split("dev"), predictions, labels)
    assert metrics["eval_accuracy"] == pytest.approx(3 / 5)
    assert metrics["eval_f1"] == pytest.approx(2 / 3)


def test_qqp_f1_is_zero_without_positive_predictions():
    # Predicting "not duplicate" everywhere scores 60 % accuracy but no duplicate is found.
    metrics = compute_metrics(QQP, QQP.split("dev"), np.zeros(5, int), np.array([1, 0, 0, 1, 0]))
    assert metrics == {"eval_accuracy": pytest.approx(0.6), "eval_f1": 0.0}


def test_qqp_f1_is_the_duplicate_class_not_the_majority():
    # All predicted duplicate: F1(class 1) = 2*2 / (2*2 + 3) = 4/7, whatever class 0 scores.
    metrics = compute_metrics(QQP, QQP.split("dev"), np.ones(5, int), np.array([1, 0, 0, 1, 0]))
    assert metrics["eval_f1"] == pytest.approx(4 / 7)


def test_mnli_mismatched_keys_carry_the_suffix():
    matched = compute_metrics(MNLI, MNLI.split("dev_matched"), np.array([0, 1, 2]), np.array([0, 1, 1]))
    mismatched = compute_metrics(MNLI, MNLI.split("dev_mismatched"), np.array([2, 2]), np.array([2, 0]))
    assert matched == {"eval_accuracy": pytest.approx(2 / 3)}
    assert mismatched == {"eval_accuracy_mm": 0.5}


def test_cola_matthews_by_hand():
    # tp 2, fp 1, tn 1, fn 1: (2*1 - 1*1) / sqrt(3 * 3 * 2 * 2) = 1/6
    cola = get_task("cola")
    metrics = compute_metrics(cola, cola.split("dev"), np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert metrics == {"eval_matthews": pytest.approx(1 / 6)}


def test_multi_class_matthews_and_macro_f1():
    # Values scikit-learn gives for the same arrays (matthews_corrcoef; f1_score, average="macro").
    labels, predictions = np.array([0, 1, 2, 0, 1, 2, 2, 1]), np.array([0, 2, 1, 0, 0, 2, 2, 1])
    task = dataclasses.replace(MNLI, metrics=("matthews", "macro_f1"))
    metrics = compute_metrics(task, task.split("dev_matched"), predictions, labels)
    assert metrics == {"eval_matthews": pytest.approx(0.4523809523809524), "eval_macro_f1": pytest.approx(0.6222222222222222)}


def test_macro_f1_counts_a_class_never_predicted_as_zero():
    # F1 per class: 2/3, 1/2, 0 (class 2 is never predicted): the mean is 7/18.
    task = dataclasses.replace(MNLI, metrics=("macro_f1",))
    metrics = compute_metrics(task, task.split("dev_matched"), np.array([0, 1, 1, 1]), np.array([0, 0, 1, 2]))
    assert metrics == {"eval_macro_f1": pytest.approx(7 / 18)}


def test_f1_scores_the_named_positive_class():
    # A declared pair task whose positive class is class 0: F1 of "same", not of class 1.
    task = dataclasses.replace(QQP, label_names=("same", "different"), positive_label="same")
    metrics = compute_metrics(task, task.split("dev"), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert metrics["eval_f1"] == pytest.approx(2 / 3)  # tp 1, fp 1, fn 0


class FixedClassifier:
    """A classifier whose logits are given per split (by its first text)."""

    device = torch.device("cpu")

    def __init__(self, logits: dict[str, np.ndarray]):
        self.logits = logits
        self.batch_sizes: list[int] = []

    def predict_logits(self, text_a, text_b, batch_size):
        self.batch_sizes.append(batch_size)
        return self.logits[text_a[0]]

    def num_parameters(self, include_embeddings: bool) -> int:
        return 1000 if include_embeddings else 10


def test_score_covers_every_eval_split_and_counts_parameters():
    splits = [
        evaluate.EvalSplit(MNLI.split("dev_matched"), ["m", "m"], ["x", "y"], np.array([0, 2]), [], []),
        evaluate.EvalSplit(MNLI.split("dev_mismatched"), ["mm", "mm"], ["x", "y"], np.array([1, 1]), [], []),
    ]
    model = FixedClassifier(
        {
            "m": np.array([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0]], np.float32),  # 0, 1: one right
            "mm": np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]], np.float32),  # 1, 1: both right
        }
    )
    result = evaluate.score(MNLI, model, splits, batch_size=7)
    assert result == {
        "eval_accuracy": 0.5,
        "eval_accuracy_mm": 1.0,
        "params_total": 1000,
        "params_no_embeddings": 10,
    }
    assert model.batch_sizes == [7, 7]


# --------------------------------------------------------------------------- speed harness


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingModel:
    """Records what the harness asks of it; each call advances a fake clock by a set time."""

    device = torch.device("cpu")

    def __init__(self, clock: FakeClock, encode_s: float, forward_s: Sequence[float]):
        self.clock = clock
        self.encode_s = encode_s
        self.forward_s = list(forward_s)  # per forward call, in call order (last one repeats)
        self.encoded: list[list[str]] = []
        self.encoded_b: list[list[str] | None] = []
        self.forward_sizes: list[int] = []

    def encode(self, text_a, text_b):
        self.clock.now += self.encode_s
        self.encoded.append(list(text_a))
        self.encoded_b.append(None if text_b is None else list(text_b))
        return torch.zeros(len(text_a), 2)

    def forward(self, inputs):
        call = len(self.forward_sizes)
        self.clock.now += self.forward_s[min(call, len(self.forward_s) - 1)]
        self.forward_sizes.append(inputs.shape[0])
        return inputs


ROWS = [f"sentence {i}" for i in range(10)]


def test_throughput_respects_batch_size_and_excludes_warmup():
    clock = FakeClock()
    # Two warm-up forwards take 100 s each; the three timed ones 1 s each.
    model = RecordingModel(clock, encode_s=0.5, forward_s=[100.0, 100.0, 1.0])
    result = measure_throughput(model, ROWS, None, batch_size=4, warmup_batches=2, clock=clock)
    assert [len(batch) for batch in model.encoded] == [4, 4, 2]
    assert sum(model.encoded, []) == ROWS  # every row once, in data order
    assert model.forward_sizes == [4, 4] + [4, 4, 2]  # warm-up, then every batch
    assert result == {
        "throughput_model_s": 3.0,
        "throughput_model_rows_per_s": 10 / 3.0,
        "throughput_e2e_s": 4.5,
        "throughput_e2e_rows_per_s": 10 / 4.5,
    }


def test_throughput_passes_the_second_sentence_of_pairs():
    clock = FakeClock()
    model = RecordingModel(clock, encode_s=0.0, forward_s=[1.0])
    second = [f"other {i}" for i in range(10)]
    measure_throughput(model, ROWS, second, batch_size=6, warmup_batches=0, clock=clock)
    assert model.encoded_b == [second[:6], second[6:]]


def test_latency_is_batch_one_with_warmup_excluded():
    clock = FakeClock()
    ms = 1e-3
    model = RecordingModel(clock, encode_s=0.5 * ms, forward_s=[ms * t for t in (100, 100, 1, 2, 3, 4, 5)])
    result = measure_latency(model, ROWS[:3], None, repeats=5, warmup=2, clock=clock)
    assert model.forward_sizes == [1] * 7
    assert [batch[0] for batch in model.encoded] == [ROWS[i % 3] for i in range(7)]  # cycles rows
    assert result["latency_model_ms_median"] == pytest.approx(3.0)
    assert result["latency_model_ms_p90"] == pytest.approx(4.6)  # linear interpolation in [1..5]
    assert result["latency_e2e_ms_median"] == pytest.approx(3.5)
    assert result["latency_e2e_ms_p90"] == pytest.approx(5.1)


# --------------------------------------------------------------------------- teacher


@pytest.fixture(scope="module")
def tiny_teacher(tiny_bert_factory):
    from pipeline.bert import load_teacher

    model, tokenizer = load_teacher(tiny_bert_factory(2), SST2)
    return evaluate.TeacherClassifier(model, tokenizer, max_length=64)


def test_teacher_parameters_without_embeddings_by_hand(tiny_teacher):
    config = tiny_teacher.model.config
    h = config.hidden_size
    # word, position and segment tables plus the embedding LayerNorm (weight and bias)
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    total = sum(p.numel() for p in tiny_teacher.model.parameters())
    assert tiny_teacher.num_parameters(include_embeddings=True) == total
    assert tiny_teacher.num_parameters(include_embeddings=False) == total - embeddings


def test_teacher_batched_logits_match_one_at_a_time(tiny_teacher):
    texts = [normalize(t) for t in ["a gripping , funny film .", "dull", "it 's not bad at all , really ."]]
    batched = tiny_teacher.predict_logits(texts, None, batch_size=2)
    single = np.concatenate([tiny_teacher.predict_logits([t], None, batch_size=1) for t in texts])
    assert batched.dtype == np.float32 and batched.shape == (3, 2)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_teacher_timing_on_a_real_model_is_positive(tiny_teacher):
    params = evaluate.EvaluateParams(throughput_batch_size=2, latency_repeats=3, warmup_batches=1)
    timing = evaluate.time_model(tiny_teacher, ["good", "bad movie", "fine ."], None, params)
    assert all(np.isfinite(v) and v > 0 for v in timing.values())
    assert timing["throughput_e2e_s"] > timing["throughput_model_s"]


# --------------------------------------------------------------------------- stage


def _write_split(root: Path, task, split: str, text_a, text_b, labels):
    table = pa.table(
        {"idx": list(range(len(text_a))), "text_a": text_a, "text_b": text_b, "label": labels},
        schema=SPLIT_SCHEMA,
    )
    meta = {
        "task": task.name,
        "split": split,
        "source_file": f"{task.source_dir}/{task.split(split).file}",
        "source_rows": len(text_a) + 1,
        "skipped_rows": 1,
    }
    write_table(table, root / paths.prepared_split(task.name, split), meta)


def _write_student(root: Path, task, variant: str, texts: list[str]) -> None:
    vocab, _ = Vocab.build([texts], "unk")
    config = StudentConfig(
        task=task.name,
        label_names=task.label_names,
        is_pair=task.is_pair,
        vocab_size=len(vocab),
        embedding_dim=8,
        hidden_size=6,
        fc_size=5,
        dropout=0.0,
        mask_policy="unk",
    )
    torch.manual_seed(1 if variant == "distilled" else 2)
    save_student(root / paths.student_dir(task.name, variant), config, vocab, build_model(config))


def _epoch_scores(task, epoch: int) -> dict[str, float]:
    """Made-up dev metrics of one epoch, under the task's metric keys."""
    return {f"eval_{m}": 0.5 + epoch / 10 - (epoch == 3) * 0.25 for m in task.metrics}


def _write_histories(root: Path, task, epochs: int = 3, best_epoch: int = 2) -> None:
    """What the teacher and student stages record per epoch: training.json and the curves."""
    rows = [{"epoch": e, "train_loss": 1 / e, "metrics": _epoch_scores(task, e)} for e in range(1, epochs + 1)]
    training = {
        "epochs": rows, "best_epoch": best_epoch, "checkpoint": {"name": "tiny-bert", "version": None},
        "params": {"lr": 5e-5, "epochs": epochs, "batch_size": 32}, "dtype": "fp32", "train_rows": 5,
    }  # fmt: skip
    (root / paths.teacher_dir(task.name) / "training.json").write_text(json.dumps(training))
    for variant in paths.STUDENT_VARIANTS:
        student_params = {"batch_size": 50, "epochs": epochs, "baseline_epochs": epochs, "hidden_size": 8, "alpha": 0.0}
        (root / paths.student_dir(task.name, variant) / "training.json").write_text(
            json.dumps({"best_epoch": best_epoch, "params": student_params, "train_rows": 7})
        )
        curve = root / paths.curve_file(task.name, variant)
        curve.parent.mkdir(parents=True, exist_ok=True)
        keys = list(_epoch_scores(task, 1))
        lines = [",".join(["epoch", "train_loss", *keys, "examples_per_s"])]
        lines += [",".join(map(str, [r["epoch"], r["train_loss"], *r["metrics"].values(), 123.4])) for r in rows]
        curve.write_text("\n".join(lines) + "\n")


def _write_project(root: Path, task, splits: dict[str, tuple], teacher_dir: Path) -> None:
    """Prepared splits, a tiny teacher, two tiny students and their histories."""
    for split, (text_a, text_b, labels) in splits.items():
        _write_split(root, task, split, text_a, text_b, labels)
    shutil.copytree(teacher_dir, root / paths.teacher_dir(task.name))
    texts = [normalize(t) for a, b, _ in splits.values() for t in [*a, *(b or [])]]
    for variant in paths.STUDENT_VARIANTS:
        _write_student(root, task, variant, texts)
        student = load_student(root / paths.student_dir(task.name, variant))
        export_student(student, task, root / paths.export_dir(task.name, variant), variant, ExportParams(), {})
    _write_histories(root, task)
    (root / "params.yaml").write_text(
        f"tasks: [{task.name}]\n"
        "evaluate:\n  throughput_batch_size: 2\n  throughput_rows: 3\n  latency_repeats: 2\n"
        "  warmup_batches: 1\n  threads: 1\n"
    )
    configured(root / "params.yaml")


@pytest.fixture
def qqp_project(tmp_path, monkeypatch, tiny_bert_factory):
    """A project dir with prepared QQP splits, a tiny teacher and two tiny students."""
    q1 = ["How do I learn Python?", "What is love?", "Why is the sky blue?", "Who am I?", "Is it raining?"]
    q2 = ["How can I learn Python fast?", "What's love?", "Is the sky blue?", "Where am I?", "Is it sunny?"]
    splits = {"train": (q1, q2, [1, 1, 0, 0, 0]), "dev": (q1[:4], q2[:4], [1, 0, 1, 0])}
    _write_project(tmp_path, QQP, splits, tiny_bert_factory(2))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_DEVICE", "cpu")
    monkeypatch.setattr(evaluate, "speed_devices", lambda: [torch.device("cpu")])
    threads = torch.get_num_threads()  # main() applies evaluate.threads process-wide
    yield tmp_path
    torch.set_num_threads(threads)


def test_main_writes_deterministic_metrics_and_separate_speed(qqp_project):
    evaluate.main("qqp", Path("params.yaml"))
    metrics = json.loads(paths.metrics_file("qqp").read_text())
    exports = {f"{v}_onnx{q}" for v in paths.STUDENT_VARIANTS for q in ("", "_int8")}
    assert set(metrics) == {"teacher", "distilled", "baseline", "data", *exports}
    for variant in paths.STUDENT_VARIANTS:  # the float32 export predicts what its student does
        fp32, int8 = metrics[f"{variant}_onnx"], metrics[f"{variant}_onnx_int8"]
        assert fp32["predictions_differing"] == 0
        assert fp32["eval_accuracy"] == metrics[variant]["eval_accuracy"]
        assert fp32["eval_f1"] == metrics[variant]["eval_f1"]
        assert (fp32["model_file"], int8["model_file"]) == ("model.onnx", "model.int8.onnx")
        assert 0 < int8["model_file_bytes"] and 0 < fp32["model_file_bytes"]
    for name in ("teacher", "distilled", "baseline"):
        entry = metrics[name]
        assert 0 <= entry["eval_accuracy"] <= 1 and 0 <= entry["eval_f1"] <= 1
        assert 0 < entry["params_no_embeddings"] < entry["params_total"]
        assert entry["best_epoch"] == 2
        assert entry["epochs"] == [
            {"epoch": e, "train_loss": 1 / e, **_epoch_scores(QQP, e)} for e in (1, 2, 3)
        ]  # every epoch's dev score, no timings
    assert metrics["teacher"]["settings"] == {
        "model": "tiny-bert", "lr": 5e-5, "epochs": 3, "batch_size": 32, "precision": "fp32", "train_rows": 5,
    }  # fmt: skip
    assert metrics["distilled"]["settings"] == {
        "batch_size": 50, "epochs": 3, "hidden_size": 8, "train_rows": 7, "alpha": 0.0,
    }  # fmt: skip
    assert "alpha" not in metrics["baseline"]["settings"]  # the baseline is CE on gold labels only
    assert metrics["teacher"]["num_layers"] == 2 and metrics["teacher"]["hidden_size"] == 32
    assert metrics["data"] == {
        "train_rows": 5, "train_source_rows": 6, "train_skipped_rows": 1, "train_source_sha256": "",
        "dev_rows": 4, "dev_source_rows": 5, "dev_skipped_rows": 1, "dev_source_sha256": "",
    }  # fmt: skip

    speed = json.loads(paths.speed_file("qqp").read_text())
    assert set(speed) == {"cpu", "protocol", "environment"}
    assert set(speed["cpu"]) == {"teacher", "distilled", "baseline", *exports}
    assert speed["protocol"] == {"rows": 3, "batch_size": 2, "latency_repeats": 2, "warmup_batches": 1}
    assert speed["environment"]["cpu_threads"] == 1
    assert speed["environment"]["dtype"] == "float32"

    first = paths.metrics_file("qqp").read_bytes()
    evaluate.main("qqp", Path("params.yaml"))
    assert paths.metrics_file("qqp").read_bytes() == first  # timings never leak into metrics


def test_main_refuses_a_missing_student_before_loading_anything(qqp_project):
    shutil.rmtree(paths.student_dir("qqp", "baseline"))
    with pytest.raises(PipelineError, match=r"student@qqp-baseline"):
        evaluate.main("qqp", Path("params.yaml"))
    assert not paths.metrics_file("qqp").exists()


def test_main_refuses_prepared_data_without_row_counts(qqp_project):
    table = pa.table({"idx": [0], "text_a": ["a"], "text_b": ["b"], "label": [1]}, schema=SPLIT_SCHEMA)
    write_table(table, paths.prepared_split("qqp", "dev"))  # no provenance metadata
    with pytest.raises(PipelineError, match=r"dev.parquet: no source row counts.*prepare@qqp"):
        evaluate.main("qqp", Path("params.yaml"))


@pytest.fixture
def reduced_mnli_project(tmp_path, monkeypatch, tiny_bert_factory):
    """MNLI as in ../shared/glue: train and dev_matched prepared, no dev_mismatched."""
    premises = ["A man is eating.", "The cat sleeps.", "Kids play outside.", "It is raining.", "He ran."]
    hypotheses = ["Someone eats.", "A dog barks.", "Children are indoors.", "It is wet.", "He moved."]
    splits = {
        "train": (premises, hypotheses, [0, 1, 2, 0, 0]),
        "dev_matched": (premises[:4], hypotheses[:4], [0, 1, 2, 0]),
    }
    _write_project(tmp_path, MNLI, splits, tiny_bert_factory(3))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISTILL_DEVICE", "cpu")
    monkeypatch.setattr(evaluate, "speed_devices", lambda: [torch.device("cpu")])
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def test_an_absent_optional_split_is_reported_never_scored(reduced_mnli_project):
    evaluate.main("mnli", Path("params.yaml"))
    metrics = json.loads(paths.metrics_file("mnli").read_text())
    assert metrics["unavailable"] == {
        "dev_mismatched": "MNLI/dev_mismatched.tsv was not in the GLUE source prepare read"
    }
    for name in ("teacher", "distilled", "baseline"):
        assert "eval_accuracy" in metrics[name]
        assert not [k for k in json.dumps(metrics[name]).split('"') if k.endswith("_mm")]
    assert not any(k.startswith("dev_mismatched") for k in metrics["data"])
