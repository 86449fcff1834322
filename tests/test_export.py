"""The export stage and its runtime: same tokens, same logits, verified files, no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline import serve
from pipeline.cli import app
from pipeline.errors import PipelineError
from pipeline.export import export_student, lowercase_table
from pipeline.io import parse_glue_tsv
from pipeline.models import StudentConfig, build_model, load_student, save_student
from pipeline.models.vocab import Vocab, tokenize
from pipeline.params import ExportParams
from pipeline.tasks import get_task
from pipeline.text import normalize
from project import configured

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lowercase() -> dict[str, str]:
    return lowercase_table()


def glue_texts(glue_dir: Path, task_name: str) -> list[str]:
    """Every text of the task's train and dev files (both sides of pairs), as prepare reads them."""
    task = get_task(task_name)
    texts: list[str] = []
    for spec in (task.split("train"), task.split("dev")):
        parsed = parse_glue_tsv((glue_dir / task.source_dir / spec.file).read_text(), task, spec, spec.file)
        texts += parsed.text_a + [t for t in parsed.text_b if t is not None]
    return texts


# --------------------------------------------------------------------------- tokenizer


def test_runtime_tokens_and_ids_equal_the_pipelines_on_every_sst2_and_qqp_sentence(glue_dir, lowercase):
    texts = glue_texts(glue_dir, "sst2") + glue_texts(glue_dir, "qqp")
    canonical = [normalize(t) for t in texts]  # the slow part: NLTK itself, ~90 us a text
    vocab, _ = Vocab.build([canonical[::2]], "unk")  # half the texts: the rest meet unknown words
    vocab = vocab.with_backoff(["zeitgeist", "kolkata", "quora"])
    runtime = serve.Tokenizer(vocab.words, lowercase)

    expected = tokenize(canonical)
    tokens = [runtime.tokenize(t) for t in texts]
    assert [len(t) for t in tokens] == np.diff(expected.offsets.to_numpy()).tolist()
    assert [t for row in tokens for t in row] == expected.values.to_pylist()
    ids = np.fromiter((i for row in tokens for i in runtime.lookup(row)), dtype=np.int64)
    np.testing.assert_array_equal(ids, vocab.encode(canonical).ids)
    assert runtime.ids(texts[-1]) == runtime.lookup(tokens[-1])
    assert set(ids[ids >= len(vocab) - 3]) == {len(vocab) - 3, len(vocab) - 2, len(vocab) - 1}


@pytest.mark.parametrize(
    "text",
    [
        "İstanbul'S ΟΔΟΣ Σ ꟋA",  # Python's str.lower differs from the student's on each word
        '"Gimme" more\'n THAT, cannot \'Tis "so"... (x) -- [y] {z} <w>; @#$%&?!',
        "He said: 'wanna go?' d'ye ''gotta'' LEMME gonna'",
        "ſtop ıt: cannot İn'T",  # (?i) matches ſ for s and ı for i: not ASCII, so every rule runs
        "the end.\x1c",  # \x1c is space to `re` and str.split, not to NLTK's `regex`
        "   ",
        "",
    ],
)
def test_runtime_tokens_on_odd_text(text, lowercase):
    runtime = serve.Tokenizer(["<pad>", "<unk>"], lowercase)
    assert runtime.tokenize(text) == tokenize([normalize(text)]).values.to_pylist()


def test_lowercase_table_agrees_with_ascii_lowercasing(lowercase):
    ascii_entries = {c: low for c, low in lowercase.items() if c.isascii()}
    assert ascii_entries == {chr(c): chr(c).lower() for c in range(ord("A"), ord("Z") + 1)}


# --------------------------------------------------------------------------- export


def tiny_student(tmp_path: Path, is_pair: bool, backoff: int = 2):
    """A small random student with trained and backoff words, saved and loaded back."""
    task = get_task("qqp" if is_pair else "sst2")
    trained, _ = Vocab.build([["a good film", "a bad film , is it ?"]], "unk")
    config = StudentConfig(task.name, task.label_names, is_pair, len(trained), 4, 5, 6, 0.1, "unk", backoff)
    torch.manual_seed(0)
    model = build_model(config)
    rng = np.random.default_rng(0)
    model.encoder.embedding.initialise(
        rng.normal(size=(len(trained), 4)).astype(np.float32), rng.normal(size=(backoff, 4)).astype(np.float32)
    )
    directory = tmp_path / f"student-{task.name}"
    save_student(directory, config, trained.with_backoff(["great", "movie"][:backoff]), model)
    return load_student(directory), directory


@pytest.fixture(params=[False, True], ids=["single", "pair"])
def exported(request, tmp_path, one_thread):
    student, student_dir = tiny_student(tmp_path, request.param)
    export_dir = tmp_path / "export"
    export_student(student, get_task(student.config.task), export_dir, "distilled", ExportParams(), {"student_dir": str(student_dir)})
    return student, student_dir, export_dir


def _has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux/x86: hold the strict bound
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni"))


# On x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC before Zen 4), onnxruntime's 8-bit dot
# products add pairs of products in 16 bits, which can saturate: there the tiny student's
# int8 logits were up to 0.093 off (0.05 holds with VNNI, and on AVX2 with 7-bit weights,
# `reduce_range=True`, which would rewrite every recorded export; docs/export.md).
INT8_LOGIT_TOLERANCE = 0.05 if _has_vnni() else 0.15

TEXT_A = ["A good film!", "a bad, bad film", "", "great movie", "is it a GOOD film? a bad one."]
TEXT_B = ["good", "Bad film.", "a great", "", "a film"]


def test_padded_onnx_logits_equal_the_packed_student(exported):
    student, _, export_dir = exported
    text_b = TEXT_B if student.config.is_pair else None
    canonical_b = None if text_b is None else [normalize(t) for t in text_b]
    with torch.inference_mode():  # one padded batch in input order, packed by the student
        expected = student.forward(student.encode([normalize(t) for t in TEXT_A], canonical_b)).numpy()
    export = serve.load_export(export_dir)
    inputs = export.encode(TEXT_A, text_b)
    assert {k: v.dtype for k, v in inputs.items()} == {
        name: np.dtype(np.int64 if name.startswith("ids") else np.int32) for name in inputs
    }
    np.testing.assert_allclose(export.run(inputs), expected, atol=1e-5)
    np.testing.assert_allclose(export.predict_logits(TEXT_A, text_b, batch_size=2), expected, atol=1e-5)
    probabilities = export.predict_proba(TEXT_A, text_b)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    predictions = serve.score_export(export_dir, TEXT_A, text_b)
    np.testing.assert_array_equal(predictions, expected.argmax(axis=1))
    int8 = serve.load_export(export_dir, int8=True).predict_logits(TEXT_A, text_b)
    np.testing.assert_allclose(int8, expected, atol=INT8_LOGIT_TOLERANCE)


def test_a_batch_runs_in_length_groups_with_the_same_logits(exported, monkeypatch):
    """`run` cuts a big batch into length-sorted groups: the logits must not move."""
    student, _, export_dir = exported
    text_b = TEXT_B if student.config.is_pair else None
    export = serve.load_export(export_dir)
    inputs = export.encode(TEXT_A, text_b)
    whole = export.run(inputs)
    monkeypatch.setattr(serve, "LENGTH_GROUP_ROWS", 2)
    np.testing.assert_allclose(export.run(inputs), whole, atol=1e-6)


def test_export_directory_contents(exported):
    student, student_dir, export_dir = exported
    manifest = json.loads((export_dir / serve.MANIFEST_FILE).read_text())
    assert manifest["format_version"] == serve.EXPORT_FORMAT and manifest["opset"] == 17
    assert set(manifest["producers"]) == {"python", "torch", "onnx", "onnxruntime"}
    assert manifest["source"] == {"student_dir": str(student_dir)}
    assert sorted(manifest["files"]) == ["config.json", "model.int8.onnx", "model.onnx", "vocab.json"]
    assert sorted(p.name for p in export_dir.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    export = serve.load_export(export_dir)
    task = get_task(student.config.task)
    assert (export.task, export.variant, export.label_names) == (task.name, "distilled", task.label_names)
    assert export.text_fields == ((task.text_a, task.text_b) if task.is_pair else (task.text_a,))
    assert json.loads((export_dir / serve.VOCAB_FILE).read_text()) == list(student.vocab.words)
    sizes = serve.export_sizes(export_dir)
    assert sizes["model.onnx"] == (export_dir / "model.onnx").stat().st_size and "manifest.json" in sizes


def test_export_without_int8_and_a_rerun_replaces_the_directory(tmp_path):
    student, _ = tiny_student(tmp_path, is_pair=False)
    export_dir = tmp_path / "export"
    export_student(student, get_task(student.config.task), export_dir, "baseline", ExportParams(), {})
    export_student(student, get_task(student.config.task), export_dir, "baseline", ExportParams(int8=False, opset=13), {})
    assert not (export_dir / serve.INT8_FILE).exists()
    assert json.loads((export_dir / serve.MANIFEST_FILE).read_text())["opset"] == 13
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp debris
    with pytest.raises(PipelineError, match=r"this export has no model.int8.onnx \(exported with export.int8: false\)"):
        serve.load_export(export_dir, int8=True)


def test_int8_file_is_at_most_half_the_float32_file(tmp_path):
    """With a realistic vocabulary (here 20k words) the embedding table is most of the file."""
    task = get_task("sst2")
    vocab = Vocab(("<pad>", "<unk>", *(f"w{i}" for i in range(20_000))), "unk")
    config = StudentConfig(task.name, task.label_names, False, len(vocab), 50, 150, 200, 0.1, "unk")
    save_student(tmp_path / "big", config, vocab, build_model(config))
    export_student(load_student(tmp_path / "big"), get_task("sst2"), tmp_path / "export", "distilled", ExportParams(), {})
    sizes = serve.export_sizes(tmp_path / "export")
    assert sizes[serve.INT8_FILE] <= sizes[serve.FP32_FILE] / 2


def test_a_changed_or_missing_file_is_refused_in_one_line(exported):
    _, _, export_dir = exported
    vocab = export_dir / serve.VOCAB_FILE
    original = vocab.read_bytes()
    vocab.write_bytes(original.replace(b'"good"', b'"gold"'))
    with pytest.raises(PipelineError, match=r"vocab.json: sha256 differs from manifest.json") as error:
        serve.load_export(export_dir)
    assert "\n" not in str(error.value)
    vocab.unlink()
    with pytest.raises(PipelineError, match="vocab.json: missing from the export"):
        serve.load_export(export_dir)
    vocab.write_bytes(original)
    manifest = json.loads((export_dir / serve.MANIFEST_FILE).read_text())
    (export_dir / serve.MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(PipelineError, match="export format 99, this runtime reads format 1"):
        serve.load_export(export_dir)
    (export_dir / serve.MANIFEST_FILE).unlink()
    with pytest.raises(PipelineError, match="not an export directory"):
        serve.load_export(export_dir)
    with pytest.raises(PipelineError, match="export directory not found"):
        serve.load_export(export_dir / "missing")


def test_wrong_input_shape_is_refused(exported):
    student, _, export_dir = exported
    export = serve.load_export(export_dir)
    if student.config.is_pair:
        with pytest.raises(PipelineError, match="pair model: give text_a and text_b"):
            export.predict_logits(["a film"])
        with pytest.raises(PipelineError, match="text_a has 1 rows but text_b has 2"):
            export.encode(["a film"], ["a", "b"])
    else:
        with pytest.raises(PipelineError, match="single-sentence model: give text_a only"):
            export.encode(["a film"], ["a film"])


def _tamper(export_dir: Path, **files: bytes) -> None:
    """Rewrite export files and their sha256 in the manifest, as a hand edit that knows about the
    manifest (or a copy mixed from two exports) would: only the facts can tell."""
    manifest = json.loads((export_dir / serve.MANIFEST_FILE).read_text())
    for name, data in files.items():
        (export_dir / name).write_bytes(data)
        manifest["files"][name] = serve._sha256(export_dir / name)
    (export_dir / serve.MANIFEST_FILE).write_text(json.dumps(manifest))


def _config_with(export_dir: Path, **changes) -> bytes:
    config = json.loads((export_dir / serve.CONFIG_FILE).read_text())
    for key, value in changes.items():
        if key.startswith("student_"):
            config["student"][key.removeprefix("student_")] = value
        else:
            config[key] = value
    return json.dumps(config).encode()


@pytest.mark.parametrize(
    "mismatch",
    ["labels", "labels-everywhere", "vocab-shortened", "vocab-and-config", "pair-config", "fp32-int8-swapped",
     "int8-under-fp32", "onnx-truncated", "onnx-other-format", "config-field-missing"],
)
def test_an_export_whose_files_disagree_is_refused_before_any_prediction(exported, mismatch):
    """What the files say of each other and what the ONNX graph says of itself must agree; a
    tampered export is one line naming the file and the disagreement, never a prediction."""
    student, _, export_dir = exported
    fp32, int8 = (export_dir / serve.FP32_FILE).read_bytes(), (export_dir / serve.INT8_FILE).read_bytes()
    words = json.loads((export_dir / serve.VOCAB_FILE).read_text())
    labels = list(student.config.label_names)
    pair = student.config.is_pair
    shorter = json.dumps(words[:-3]).encode()
    cases = {
        "labels": ({serve.CONFIG_FILE: _config_with(export_dir, label_names=labels[:1])},
                   "config.json: label_names .* differ from the student's"),
        "labels-everywhere": ({serve.CONFIG_FILE: _config_with(export_dir, label_names=labels + ["x"], student_label_names=labels + ["x"])},
                              "model.onnx: graph outputs 2 logits, config.json names 3 labels"),
        "vocab-shortened": ({serve.VOCAB_FILE: shorter}, f"vocab.json: {len(words) - 3} words, config.json says"),
        "vocab-and-config": ({serve.VOCAB_FILE: shorter, serve.CONFIG_FILE: _config_with(
            export_dir, student_vocab_size=student.config.vocab_size - 3)},
            f"model.onnx: embedding table of {len(words)} rows, vocab.json has {len(words) - 3} words"),
        "pair-config": ({serve.CONFIG_FILE: _config_with(
            export_dir, text_fields=["a"] if pair else ["a", "b"], student_is_pair=not pair,
            inputs=["ids", "lengths"] if pair else ["ids_a", "lengths_a", "ids_b", "lengths_b"])},
            "model.onnx: graph inputs .*, config.json says"),
        "fp32-int8-swapped": ({serve.FP32_FILE: int8, serve.INT8_FILE: fp32}, "model.onnx: an int8 graph under the float32 name"),
        "int8-under-fp32": ({serve.FP32_FILE: int8}, "model.onnx: an int8 graph under the float32 name"),
        "onnx-truncated": ({serve.FP32_FILE: fp32[: len(fp32) // 2]}, r"model.onnx: not a readable ONNX file \(.*truncated"),
        "onnx-other-format": ({serve.FP32_FILE: b"PK\x03\x04 a zip file"}, "model.onnx: not a readable ONNX file"),
        "config-field-missing": ({serve.CONFIG_FILE: json.dumps({"task": "x"}).encode()},
                                 r"config.json: not a readable export config file \('student'\)"),
    }
    files, expected = cases[mismatch]
    _tamper(export_dir, **files)
    with pytest.raises(PipelineError, match=expected) as error:
        serve.load_export(export_dir)
    assert "\n" not in str(error.value)
    text = "a good film\tgood" if pair else "a good film"
    result = CliRunner().invoke(app, ["predict", str(export_dir), text])
    assert result.exit_code == 1 and result.stdout == "", result.output


def test_the_int8_file_is_checked_as_well(exported):
    _, _, export_dir = exported
    _tamper(export_dir, **{serve.INT8_FILE: (export_dir / serve.FP32_FILE).read_bytes()})
    serve.load_export(export_dir)  # model.onnx is fine
    with pytest.raises(PipelineError, match="model.int8.onnx: a float32 graph under the int8 name"):
        serve.load_export(export_dir, int8=True)


def test_an_empty_input_prints_the_header_alone(exported):
    student, _, export_dir = exported
    result = CliRunner().invoke(app, ["predict", str(export_dir), "--file", "-"], input="")
    assert result.exit_code == 0, result.output
    columns = ["text_a", "text_b"] if student.config.is_pair else ["text_a"]
    probabilities = [f"p_{name}" for name in student.config.label_names]
    assert result.stdout == "\t".join(["label", *probabilities, *columns]) + "\n"


def test_runtime_serves_without_torch_nltk_or_arrow(exported):
    """The runtime is what a server installs: onnxruntime and numpy, nothing heavier."""
    _, _, export_dir = exported
    code = (
        "import sys\n"
        "for name in ('torch', 'nltk', 'pyarrow', 'pandas', 'transformers'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from pipeline import serve\n"
        f"export = serve.load_export({str(export_dir)!r})\n"
        "b = ['a film'] if export.is_pair else None\n"
        "print(export.predict_proba(['A good film!'], b).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 2)"


# --------------------------------------------------------------------------- commands


def _rows(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.strip().split("\n")]


def test_predict_serves_an_export_directory_like_its_student(exported):
    student, student_dir, export_dir = exported
    texts = ["a good film\tgood", "A bad, bad film!\tbad"] if student.config.is_pair else ["a good film", "A bad film!"]
    from_student = CliRunner().invoke(app, ["predict", str(student_dir), *texts])
    from_export = CliRunner().invoke(app, ["predict", str(export_dir), *texts])
    assert from_student.exit_code == 0 and from_export.exit_code == 0, from_student.output + from_export.output
    (header, *rows), (export_header, *export_rows) = (_rows(r.stdout) for r in (from_student, from_export))
    assert export_header == header
    assert [r[:1] + r[3:] for r in export_rows] == [r[:1] + r[3:] for r in rows]  # label, texts (2 classes)
    probabilities = [[float(p) for p in r[1:3]] for r in rows]
    np.testing.assert_allclose([[float(p) for p in r[1:3]] for r in export_rows], probabilities, atol=2e-4)
    shape_error = CliRunner().invoke(app, ["predict", str(export_dir), "a\tb\tc"])
    assert isinstance(shape_error.exception, PipelineError) and "argument 1" in str(shape_error.exception)


def test_export_command_writes_the_stage_output(tmp_path, monkeypatch, one_thread):
    student, _ = tiny_student(tmp_path / "build", is_pair=False)
    monkeypatch.chdir(tmp_path)
    save_student(Path("models/student/sst2/baseline"), student.config, student.vocab, student.model)
    Path("params.yaml").write_text("tasks: [sst2]\nexport:\n  int8: false\n")
    configured(Path("params.yaml"))
    result = CliRunner().invoke(app, ["export", "--task", "sst2", "--variant", "baseline"])
    assert result.exit_code == 0, result.output
    export = serve.load_export("models/export/sst2/baseline")
    assert export.variant == "baseline" and not (export.path / serve.INT8_FILE).exists()
    wrong = CliRunner().invoke(app, ["export", "--task", "sst2", "--variant", "best"])
    assert "unknown student variant 'best'" in str(wrong.exception)
    missing = CliRunner().invoke(app, ["export", "--task", "sst2", "--variant", "distilled"])
    assert "student directory not found" in str(missing.exception)
