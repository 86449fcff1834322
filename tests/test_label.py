"""`label`: exact logits in idx order, token-budget batches, torchrun shard merge, resume, refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline import label, paths
from pipeline.bert import load_teacher
from pipeline.errors import PipelineError
from pipeline.params import load_params
from pipeline.io import (
    check_logits_match,
    AUGMENTED_SCHEMA,
    dir_sha256,
    file_sha256,
    logits_schema,
    parse_glue_tsv,
    read_metadata,
    write_table,
)
from pipeline.tasks import get_task
from pipeline.text import MASK_TOKEN, normalize
from project import configured

ROOT = Path(__file__).resolve().parents[1]
PARAMS = Path("params.yaml")
LABEL_PARAMS = {"batch_tokens": 256, "max_length": 64, "precision": "fp32", "chunk_rows": 24}


def masked(text: str, every: int) -> str:
    """A deterministic synthetic row: every `every`-th token replaced by the literal [MASK]."""
    return " ".join(MASK_TOKEN if i % every == 0 else t for i, t in enumerate(text.split()))


def build_corpus(glue_dir: Path, task_name: str, originals: int) -> pa.Table:
    """Real training rows (normalised) followed by masked and truncated synthetic variants."""
    task = get_task(task_name)
    source = glue_dir / task.source_dir / "train.tsv"
    parsed = parse_glue_tsv(source.read_text(encoding="utf-8"), task, task.train_split, str(source))
    rows = []
    for i in range(originals):
        a = normalize(parsed.text_a[i])
        b = normalize(parsed.text_b[i]) if task.is_pair else None
        rows.append((parsed.idx[i], a, b, parsed.label[i], True))
    for source_idx, a, b, _, _ in rows[: originals // 2]:
        rows.append((source_idx, masked(a, 3), b, -1, False))
        rows.append((source_idx, " ".join(a.split()[:3]), masked(b, 2) if b else None, -1, False))
    return pa.table(
        {
            "idx": list(range(len(rows))),
            "source_idx": [r[0] for r in rows],
            "text_a": [r[1] for r in rows],
            "text_b": [r[2] for r in rows],
            "label": [r[3] for r in rows],
            "is_original": [r[4] for r in rows],
        },
        schema=AUGMENTED_SCHEMA,
    )


@pytest.fixture
def project(tmp_path, monkeypatch, sample_glue_dir, tiny_bert_factory):
    """A temp project root (cwd) with params, a tiny teacher and a real-row corpus per task."""
    monkeypatch.chdir(tmp_path)
    PARAMS.write_text(yaml.safe_dump({"tasks": ["sst2", "mnli"], "label": LABEL_PARAMS}))
    configured(PARAMS)
    for task, originals in (("sst2", 40), ("mnli", 16)):
        shutil.copytree(tiny_bert_factory(get_task(task).num_labels), paths.teacher_dir(task))
        write_table(build_corpus(sample_glue_dir, task, originals), paths.augmented(task))
    return tmp_path


@pytest.fixture
def count_infer(monkeypatch):
    """Count calls to `label.infer` (one per computed chunk); optionally fail on call `fail_at`."""
    calls = {"n": 0, "fail_at": None}
    real = label.infer

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(label, "infer", wrapper)
    return calls


def read_logits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    width = table.schema.field("logits").type.list_size
    values = table.column("logits").combine_chunks().values.to_numpy().reshape(-1, width)
    return table.column("idx").to_numpy(), values


def direct_logits(
    task_name: str, text_a: list[str], text_b: list[str] | None, batch_size: int
) -> np.ndarray:
    """The teacher called the plain way: fixed-size padded batches in the given order."""
    model, tokenizer = load_teacher(paths.teacher_dir(task_name), get_task(task_name))
    out = []
    for start in range(0, len(text_a), batch_size):
        enc = tokenizer(
            text_a[start : start + batch_size],
            text_b[start : start + batch_size] if text_b else None,
            truncation=True, max_length=LABEL_PARAMS["max_length"], padding=True, return_tensors="pt",
        )
        with torch.inference_mode():
            out.append(model(**enc).logits.numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------- exactness and order


@pytest.mark.parametrize("task_name", ["sst2", "mnli"])
def test_logits_equal_a_direct_model_call(project, task_name):
    label.main(task_name, PARAMS)
    corpus = pq.read_table(paths.augmented(task_name))
    text_a = corpus.column("text_a").to_pylist()
    text_b = corpus.column("text_b").to_pylist() if get_task(task_name).is_pair else None
    expected = direct_logits(task_name, text_a, text_b, batch_size=corpus.num_rows)
    idx, logits = read_logits(paths.logits(task_name))
    assert MASK_TOKEN in " ".join(text_a)
    np.testing.assert_array_equal(idx, corpus.column("idx").to_numpy())
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert not paths.label_scratch(task_name).exists()
    model, tokenizer = load_teacher(paths.teacher_dir(task_name), get_task(task_name))
    params = load_params(PARAMS).label
    core = label.label_texts(model, tokenizer, text_a, text_b, params, torch.device("cpu"))
    np.testing.assert_array_equal(core, logits)  # same batches as the chunked stage: same bits


def test_rows_come_back_in_idx_order_after_length_sorting(project):
    corpus = pq.read_table(paths.augmented("sst2"))
    shuffled = np.random.default_rng(0).permutation(corpus.num_rows)
    write_table(corpus.set_column(0, "idx", pa.array(shuffled, pa.int64())), paths.augmented("sst2"))
    label.main("sst2", PARAMS)
    idx, logits = read_logits(paths.logits("sst2"))
    np.testing.assert_array_equal(idx, np.arange(corpus.num_rows))
    texts = corpus.column("text_a").to_pylist()
    by_idx = [texts[i] for i in np.argsort(shuffled)]
    singles = direct_logits("sst2", by_idx, None, batch_size=1)  # no padding at all
    np.testing.assert_allclose(logits, singles, rtol=1e-5, atol=1e-5)


def test_synthetic_mask_reaches_the_teacher_as_its_mask_token(tiny_bert_factory):
    _, tokenizer = load_teacher(tiny_bert_factory(2), get_task("qqp"))
    encoded = label.encode(tokenizer, ["a [MASK] film", "ok"], [MASK_TOKEN, "fine"], max_length=16)
    first = encoded.ids[encoded.offsets[0] : encoded.offsets[1]]
    assert tokenizer.convert_ids_to_tokens(first.tolist()) == [
        "[CLS]", "a", "[MASK]", "film", "[SEP]", "[MASK]", "[SEP]"
    ]
    np.testing.assert_array_equal(encoded.type_ids[: encoded.offsets[1]], [0, 0, 0, 0, 0, 1, 1])
    assert (first == tokenizer.mask_token_id).sum() == 2


@pytest.mark.parametrize("pair", [False, True])
def test_a_chunk_encodes_its_rows_as_the_whole_corpus_would(tiny_bert_factory, pair):
    """Ids made per chunk (the stage) equal ids made for every row at once, row for row,
    from Arrow columns or lists; so do the up-front lengths the batch plan is cut from."""
    _, tokenizer = load_teacher(tiny_bert_factory(2), get_task("qqp"))
    rng = np.random.default_rng(0)
    words = ["a", "film", MASK_TOKEN, "good", "unbelievably", "?", "the"]
    text_a = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(300)]
    text_b = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(300)] if pair else None
    whole = label.encode(tokenizer, text_a, text_b, max_length=32)
    columns = pa.array(text_a), None if text_b is None else pa.array(text_b)
    lengths = label.token_lengths(tokenizer, *columns, max_length=32)
    np.testing.assert_array_equal(lengths, whole.lengths)
    source = label.ChunkSource(tokenizer, *columns, max_length=32, lengths=lengths)
    batches = label.plan_batches(lengths, batch_tokens=256)[3:9]
    encoded, local = source.encode(batches)
    for rows, positions in zip(batches, local):
        for row, position in zip(rows, positions):
            ours = encoded.ids[encoded.offsets[position] : encoded.offsets[position + 1]]
            np.testing.assert_array_equal(ours, whole.ids[whole.offsets[row] : whole.offsets[row + 1]])
            ours_types = encoded.type_ids[encoded.offsets[position] : encoded.offsets[position + 1]]
            np.testing.assert_array_equal(ours_types, whole.type_ids[whole.offsets[row] : whole.offsets[row + 1]])


def test_batches_fill_the_token_budget_longest_first():
    lengths = np.random.default_rng(1).integers(3, 60, size=500)
    batches = label.plan_batches(lengths, batch_tokens=512)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(500))
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True)
    for b in batches:
        assert lengths[b].max() == lengths[b[0]]
        assert len(b) * lengths[b[0]] <= 512
        assert len(b) == 1 or (len(b) + 1) * lengths[b[0]] > 512 or b is batches[-1]
    chunks = label.plan_chunks([len(b) for b in batches], chunk_rows=64)
    assert [i for c in chunks for i in c] == list(range(len(batches)))
    assert all(sum(len(batches[i]) for i in c) >= 64 for c in chunks[:-1])


# --------------------------------------------------------------------------- processes and resume


def test_two_process_merge_is_byte_identical_to_one_process(project):
    # fp32 CPU results also depend on the intra-op thread count (GEMM blocking), and torchrun
    # gives each rank one thread: compare with a single process on one thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        label.main("sst2", PARAMS)
    finally:
        torch.set_num_threads(threads)
    single = paths.logits("sst2").read_bytes()
    paths.logits("sst2").unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "pipeline", "label", "--task", "sst2"],
        check=True, env=env, capture_output=True,
    )
    assert paths.logits("sst2").read_bytes() == single


def test_resume_skips_finished_chunks_and_gives_the_same_file(project, count_infer):
    label.main("sst2", PARAMS)
    chunks = count_infer["n"]
    assert chunks >= 3
    clean = paths.logits("sst2").read_bytes()
    paths.logits("sst2").unlink()

    count_infer.update(n=0, fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        label.main("sst2", PARAMS)
    assert not paths.logits("sst2").exists()
    assert len(list(paths.label_scratch("sst2").glob("*/chunk-*.npy"))) == 1

    count_infer.update(n=0, fail_at=None)
    label.main("sst2", PARAMS)
    assert count_infer["n"] == chunks - 1
    assert paths.logits("sst2").read_bytes() == clean
    assert not paths.label_scratch("sst2").exists()


def test_scratch_from_another_corpus_is_never_reused(project, count_infer):
    count_infer.update(fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        label.main("sst2", PARAMS)
    corpus = pq.read_table(paths.augmented("sst2"))
    write_table(corpus.slice(1), paths.augmented("sst2"))  # a changed corpus
    count_infer.update(n=0, fail_at=None)
    label.main("sst2", PARAMS)
    recomputed = count_infer["n"]
    check_logits_match(paths.logits("sst2"), paths.augmented("sst2"), get_task("sst2"))
    paths.logits("sst2").unlink()
    count_infer.update(n=0)
    label.main("sst2", PARAMS)
    assert recomputed == count_infer["n"]  # every chunk, as in a run from nothing


def test_ranks_seeing_different_inputs_are_refused():
    seen = {"corpus_sha256": "a", "teacher_sha256": "t"}
    label.refuse_divergent_ranks([seen, dict(seen)])
    with pytest.raises(PipelineError, match="rank 1 sees a different corpus_sha256"):
        label.refuse_divergent_ranks([seen, {**seen, "corpus_sha256": "b"}])


# --------------------------------------------------------------------------- metadata and refusals


def test_metadata_names_teacher_corpus_and_params(project):
    label.main("mnli", PARAMS)
    out = paths.logits("mnli")
    assert pq.read_schema(out).remove_metadata() == logits_schema(3)
    meta = read_metadata(out)
    assert set(meta) == {"task", "num_labels", "teacher_path", "teacher_sha256", "corpus_path",
                         "corpus_sha256", "rows", "params", "dtype", "device"}
    assert meta["teacher_path"] == str(paths.teacher_dir("mnli"))
    assert meta["teacher_sha256"] == dir_sha256(paths.teacher_dir("mnli"))
    assert meta["corpus_sha256"] == file_sha256(paths.augmented("mnli"))
    assert meta["rows"] == pq.read_metadata(paths.augmented("mnli")).num_rows
    assert meta["params"] == LABEL_PARAMS
    assert (meta["dtype"], meta["device"]) == ("float32", "cpu")
    assert check_logits_match(out, paths.augmented("mnli"), get_task("mnli")) == meta


def test_consumers_refuse_logits_of_another_corpus_or_task(project):
    label.main("sst2", PARAMS)
    logits, corpus = paths.logits("sst2"), paths.augmented("sst2")
    with pytest.raises(PipelineError, match="not mnli with 3"):
        check_logits_match(logits, corpus, get_task("mnli"))
    write_table(pq.read_table(corpus).slice(1), corpus)
    with pytest.raises(PipelineError, match="corpus hash differs"):
        check_logits_match(logits, corpus, get_task("sst2"))
    logits.unlink()
    with pytest.raises(PipelineError, match="dvc repro label@sst2"):
        check_logits_match(logits, corpus, get_task("sst2"))


def test_teacher_with_another_label_count_is_refused(project, tiny_bert_factory):
    shutil.rmtree(paths.teacher_dir("sst2"))
    shutil.copytree(tiny_bert_factory(3), paths.teacher_dir("sst2"))
    with pytest.raises(PipelineError, match="3 labels but task sst2 has 2"):
        label.main("sst2", PARAMS)
    assert not paths.logits("sst2").exists() and not Path(paths.SCRATCH).exists()


def test_missing_inputs_are_refused(project):
    shutil.rmtree(paths.teacher_dir("mnli"))
    with pytest.raises(PipelineError, match="^models/teacher/mnli: teacher directory not found; re-make it: dvc repro teacher@mnli$"):
        label.main("mnli", PARAMS)
    paths.augmented("sst2").unlink()
    with pytest.raises(PipelineError, match="augmented/sst2.parquet: Parquet file not found; re-make it: dvc repro augment@sst2"):
        label.main("sst2", PARAMS)
