"""`augment`: each rule exactly, their statistics, dedup, pairs, determinism, the output file."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import nltk
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import augment, paths
from pipeline.augment import (
    BOTH,
    FIRST_ONLY,
    SECOND_ONLY,
    Corpus,
    PosPool,
    encode_corpus,
    generate_candidates,
    generate_chunk,
    join_windows,
    ngram_windows,
    perturb_tokens,
)
from pipeline.errors import PipelineError
from pipeline.io import AUGMENTED_SCHEMA, SPLIT_SCHEMA, file_sha256, read_metadata, read_table
from pipeline.params import AugmentParams
from pipeline.prepare import main as prepare_main
from pipeline.tasks import get_task
from pipeline.text import MASK_TOKEN, PosTagger, normalize, tagger_identity, word_tokenize
from project import configured

RULES = AugmentParams()  # the paper's p_mask = p_pos = 0.1, p_ng = 0.25, n in 1..5
REAL_ROWS = 300


class ScriptedRng:
    """Stands in for `np.random.Generator`: returns prescribed draws, records integer bounds."""

    def __init__(self, random: Sequence[Sequence[float]] = (), integers: Sequence[Sequence[int]] = ()) -> None:
        self._random = [np.asarray(d, dtype=float) for d in random]
        self._integers = [np.asarray(d, dtype=np.int64) for d in integers]
        self.integer_highs: list[list[int]] = []

    def random(self, size: int) -> np.ndarray:
        draws = self._random.pop(0)
        assert draws.shape == (size,)
        return draws

    def integers(self, low: int, high, size: int | None = None) -> np.ndarray:
        high = np.broadcast_to(high, (size,) if size is not None else np.shape(high))
        self.integer_highs.append(high.tolist())
        draws = self._integers.pop(0)
        assert draws.shape == high.shape and np.all(draws >= low) and np.all(draws < high)
        return draws


def toy_corpus(*columns: list[list[tuple[str, str]]]) -> Corpus:
    """A corpus from hand-tagged (word, tag) rows, one list per text column; no tagger runs."""
    keys = [[f"{c}:{i}" for i in range(len(column))] for c, column in enumerate(columns)]
    tagged = {
        key: ([w for w, _ in row], [t for _, t in row])
        for column_keys, column in zip(keys, columns)
        for key, row in zip(column_keys, column)
    }
    return encode_corpus(keys, tagged)


def tagged_row(sentence: str, tags: str) -> list[tuple[str, str]]:
    return list(zip(sentence.split(), tags.split(), strict=True))


CAT = tagged_row("the cat sat on the mat", "DT NN VBD IN DT NN")
DOG = tagged_row("a dog sat by a log", "DT NN VBD IN DT NN")


def words(corpus: Corpus, text: str) -> np.ndarray:
    ids = {w: i for i, w in enumerate(corpus.vocab.tolist())}
    return np.array([ids[w] for w in text.split()], dtype=np.int64)


def tags(corpus: Corpus, names: str) -> np.ndarray:
    return np.array([corpus.tag_names.index(t) for t in names.split()], dtype=np.int64)


def decode(corpus: Corpus, ids: np.ndarray) -> str:
    return " ".join(corpus.vocab[ids].tolist())


# --------------------------------------------------------------------------- each rule, exactly


def test_token_rule_masks_replaces_from_the_tag_pool_or_keeps():
    corpus = toy_corpus([CAT, DOG])
    # draws: < p_mask masks; [p_mask, p_mask + p_pos) replaces (both bounds exact); else keeps
    rng = ScriptedRng(random=[[0.05, 0.15, 0.5, 0.1, 0.2, 0.99]], integers=[[2, 1]])
    out = perturb_tokens(
        words(corpus, "the cat sat on the mat"), tags(corpus, "DT NN VBD IN DT NN"),
        corpus.pool, rng, p_mask=0.1, p_pos=0.1, mask_id=corpus.mask_id,
    )
    # the NN pool is every NN occurrence: cat, mat, dog, log; the IN pool: on, by
    assert rng.integer_highs == [[4, 2]]
    assert decode(corpus, out) == f"{MASK_TOKEN} dog sat by the mat"


def test_pool_keeps_every_occurrence_of_each_tag():
    corpus = toy_corpus([CAT, DOG, tagged_row("the cat", "DT NN")])
    nn = corpus.tag_names.index("NN")
    block = corpus.pool.words[corpus.pool.starts[nn] : corpus.pool.starts[nn] + corpus.pool.sizes[nn]]
    assert corpus.vocab[block].tolist() == ["cat", "mat", "dog", "log", "cat"]


def test_ngram_rule_keeps_one_window_over_every_valid_start():
    lengths = np.array([6, 6, 3, 6, 5])
    rng = ScriptedRng(
        random=[[0.1, 0.3, 0.1, 0.2, 0.0]],  # n-gram coins against p_ng = 0.25
        integers=[[2, 3, 5, 1, 5], [4, 0, 0, 5, 0]],  # n, then the start
    )
    starts, stops = ngram_windows(lengths, rng, p_ng=0.25, ngram_max=5)
    assert rng.integer_highs == [[6] * 5, [5, 4, 1, 6, 1]]  # start in [0, len - n], last included
    assert starts.tolist() == [4, 0, 0, 5, 0]
    # 1: the final bigram; 2: coin lost, whole; 3: len <= n, whole; 4: the last unigram; 5: len == n
    assert stops.tolist() == [6, 6, 3, 6, 5]


def test_join_windows_cuts_each_sentence_and_joins_with_spaces():
    corpus = toy_corpus([CAT, DOG])
    ids = np.concatenate([words(corpus, "the cat sat on the mat"), words(corpus, "a dog sat by a log")])
    texts = join_windows(corpus.vocab, ids, np.array([6, 6]), np.array([4, 0]), np.array([6, 6]))
    assert texts == ["the mat", "a dog sat by a log"]


def test_candidates_of_one_row_follow_the_documented_draw_order():
    corpus = toy_corpus([CAT, DOG])
    rng = ScriptedRng(
        random=[
            [0.5] * 6 + [0.05] + [0.5] * 5,  # tokens of two copies of row 0: one mask
            [0.1, 0.9],  # n-gram coins: the first copy keeps a window
        ],
        integers=[[], [3, 1], [2, 0]],  # no pool draws; n; starts
    )
    out = generate_candidates(corpus, np.array([0, 0]), RULES, rng)
    assert out.positions.tolist() == [0, 0]
    assert out.text_a == ["sat on the", f"{MASK_TOKEN} cat sat on the mat"]
    assert out.text_b is None


def test_pair_modes_perturb_first_second_or_both():
    corpus = toy_corpus([CAT, DOG], [DOG, CAT])
    masks = AugmentParams(p_mask=1.0, p_pos=0.0, p_ng=0.0)
    rng = ScriptedRng(
        random=[[0.0] * 12, [0.9, 0.9], [0.0] * 12, [0.9, 0.9]],  # side a, coins, side b, coins
        integers=[[FIRST_ONLY, SECOND_ONLY, BOTH], [], [1, 1], [0, 0], [], [1, 1], [0, 0]],
    )
    out = generate_candidates(corpus, np.array([0, 1, 1]), masks, rng)
    six_masks = " ".join([MASK_TOKEN] * 6)
    assert out.text_a == [six_masks, "a dog sat by a log", six_masks]
    assert out.text_b == ["a dog sat by a log", six_masks, six_masks]


def test_a_pair_with_an_empty_side_is_never_emitted():
    corpus = toy_corpus([CAT, DOG], [[], CAT])
    out = generate_candidates(corpus, np.repeat([0, 1], 50), RULES, np.random.default_rng(0))
    assert set(out.positions.tolist()) == {1}
    assert all(a and b for a, b in zip(out.text_a, out.text_b))


def test_seeded_stream_is_pinned():
    """Pins the random stream: teammates' caches match only if a seed keeps meaning the same rows."""
    corpus = toy_corpus([CAT, DOG])
    generated, out = generate_chunk((corpus, AugmentParams(n_iter=3)), (7, 0, 2))
    assert generated == 6
    assert out.text_a == [
        "the [MASK] sat on the [MASK]",
        "[MASK] cat sat on the mat",
        "cat sat on",
        "sat by a",
        "a dog sat by the log",
        "a dog sat by a",
    ]


# --------------------------------------------------------------------------- statistics


def test_token_rule_rates_and_replacement_pool():
    """Mask rate ~ p_mask, replacement rate ~ p_pos, replacements from the token's tag, by frequency."""
    corpus = toy_corpus([CAT, DOG])
    pool_words = words(corpus, "dog dog dog log on")  # injected pool: NN dog:log = 3:1, IN on
    nn, dt_in = corpus.tag_names.index("NN"), corpus.tag_names.index("IN")
    pool_tags = np.array([nn, nn, nn, nn, dt_in])
    pool = PosPool.from_occurrences(pool_words, pool_tags, len(corpus.tag_names))
    n = 200_000
    token_words = np.tile(words(corpus, "cat by"), n // 2)  # never in the pool: every replacement shows
    token_tags = np.tile([nn, dt_in], n // 2)
    out = perturb_tokens(token_words, token_tags, pool, np.random.default_rng(1), 0.1, 0.1, corpus.mask_id)
    masked = out == corpus.mask_id
    replaced = (out != token_words) & ~masked
    assert abs(masked.mean() - 0.1) < 0.004
    assert abs(replaced.mean() - 0.1) < 0.004
    replaced_nn = out[replaced & (token_tags == nn)]
    assert set(corpus.vocab[replaced_nn]) == {"dog", "log"}
    assert set(corpus.vocab[out[replaced & (token_tags == dt_in)]]) == {"on"}
    assert abs((corpus.vocab[replaced_nn] == "dog").mean() - 0.75) < 0.015


def test_ngram_rate_n_and_start_are_uniform():
    n_sent, length = 100_000, 12
    starts, stops = ngram_windows(np.full(n_sent, length), np.random.default_rng(2), 0.25, 5)
    cut = (stops - starts) < length
    assert abs(cut.mean() - 0.25) < 0.006
    n = (stops - starts)[cut]
    for value in range(1, 6):
        assert abs((n == value).mean() - 0.2) < 0.012
    assert set(np.unique(n)) == {1, 2, 3, 4, 5}
    bigram_starts = starts[cut][n == 2]
    assert set(np.unique(bigram_starts)) == set(range(length - 1))  # the final bigram included
    assert np.bincount(bigram_starts).min() > 0.7 * len(bigram_starts) / (length - 1)


def test_real_pool_replacements_carry_the_tokens_tag(prepared):
    """On real SST-2 rows and tags: every replaced word occurs in the pool under the token's tag."""
    train = read_table(prepared / paths.prepared_split("sst2", "train"), SPLIT_SCHEMA)
    corpus = augment.build_corpus(train, get_task("sst2"), workers=1)
    side, pool = corpus.sides[0], corpus.pool
    out = perturb_tokens(side.words, side.tags, pool, np.random.default_rng(3), 0.0, 1.0, corpus.mask_id)
    pairs_in_pool = {
        (int(w), t) for t in range(len(corpus.tag_names))
        for w in pool.words[pool.starts[t] : pool.starts[t] + pool.sizes[t]]
    }
    assert (out != side.words).any()
    assert all((int(w), int(t)) in pairs_in_pool for w, t in zip(out, side.tags))


def test_pair_modes_hit_a_third_each():
    corpus = toy_corpus([CAT, DOG], [DOG, CAT])
    masks = AugmentParams(p_mask=1.0, p_pos=0.0, p_ng=0.0)
    out = generate_candidates(corpus, np.zeros(30_000, dtype=np.int64), masks, np.random.default_rng(4))
    a_masked = np.array([t.startswith(MASK_TOKEN) for t in out.text_a])
    b_masked = np.array([t.startswith(MASK_TOKEN) for t in out.text_b])
    for share in (a_masked & ~b_masked, ~a_masked & b_masked, a_masked & b_masked):
        assert abs(share.mean() - 1 / 3) < 0.012
    assert not (~a_masked & ~b_masked).any()


# --------------------------------------------------------------------------- tagging


def test_memoised_tagger_matches_nltk_pos_tag(sample_glue_dir):
    sst2 = (sample_glue_dir / "SST-2" / "train.tsv").read_text().splitlines()[1:]
    mnli = (sample_glue_dir / "MNLI" / "train.tsv").read_text().splitlines()[1:]
    texts = [line.split("\t")[0] for line in sst2] + [t for line in mnli for t in line.split("\t")[1:3]]
    tagger = PosTagger()
    for text in texts:
        tokens = word_tokenize(text)
        assert tagger.tag(tokens) == [tag for _, tag in nltk.pos_tag(tokens)], text


def test_missing_tagger_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(PipelineError, match="NLTK_DATA.*python -m nltk.downloader averaged_perceptron_tagger_eng"):
        tagger_identity()


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_glue_dir) -> Path:
    """A project dir holding the first REAL_ROWS training rows of SST-2 and MNLI, prepared."""
    root = tmp_path_factory.mktemp("prepared")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({
        "tasks": ["sst2", "mnli"],
        "data": {"glue_dir": str(sample_glue_dir), "max_train_rows": REAL_ROWS, "max_eval_rows": 10},
    }))
    configured(params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for task in ("sst2", "mnli"):
            prepare_main(task, params)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch, prepared) -> Path:
    shutil.copytree(prepared / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(directory: Path, **augment_values) -> Path:
    """The committed augment values (the paper's rules; 10 rounds for pairs), some changed.

    Spelled out, not read from the checkout's params.yaml, which an experiment (`dvc exp run
    -S ...`, the smoke run of the README included) leaves edited.
    """
    params = {"tasks": ["sst2", "mnli"], "augment": {"mnli": {"n_iter": 10}, **augment_values}}
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return configured(path)


def run(task: str, params: Path, workers: int) -> Path:
    augment.main(task, params, workers)
    return paths.augmented(task)


@pytest.mark.parametrize("task", ["sst2", "mnli"])
def test_output_is_byte_identical_across_worker_counts(workdir, monkeypatch, task):
    monkeypatch.setattr(augment, "CHUNK_ROWS", 64)  # several chunks, shared by the workers
    params = write_params(workdir)
    one = run(task, params, workers=1).read_bytes()
    two = run(task, params, workers=2).read_bytes()
    assert one == two
    other_seed = run(task, write_params(workdir, seed=1), workers=2).read_bytes()
    assert other_seed != one


@pytest.mark.parametrize("task", ["sst2", "mnli"])
def test_output_file_contract_dedup_and_metadata(workdir, monkeypatch, task):
    monkeypatch.setattr(augment, "CHUNK_ROWS", 64)
    out = run(task, write_params(workdir), workers=2)
    train_path = paths.prepared_split(task, "train")
    train = read_table(train_path, SPLIT_SCHEMA).to_pylist()
    table = read_table(out, AUGMENTED_SCHEMA)
    assert table.schema.remove_metadata() == AUGMENTED_SCHEMA
    rows = table.to_pylist()
    originals, synthetic = rows[: len(train)], rows[len(train) :]
    assert [r["idx"] for r in rows] == list(range(len(rows)))
    for row, source in zip(originals, train):
        assert row["is_original"] and row["source_idx"] == source["idx"] and row["label"] == source["label"]
        assert row["text_a"] == normalize(source["text_a"])
        assert row["text_b"] == (None if task == "sst2" else normalize(source["text_b"]))
    assert synthetic and not any(r["is_original"] for r in synthetic)
    assert all(r["label"] == -1 for r in synthetic)
    assert {r["source_idx"] for r in synthetic} <= {r["idx"] for r in train}
    keys = [(r["text_a"], r["text_b"]) for r in synthetic]
    assert len(set(keys)) == len(keys)  # no synthetic row repeats another
    assert not set(keys) & {(r["text_a"], r["text_b"]) for r in originals}
    if task == "mnli":
        assert all(a and b for a, b in keys)
    assert pq.ParquetFile(out).metadata.num_row_groups > 2  # streamed: originals, then per chunk

    meta = read_metadata(out)
    n_iter = 20 if task == "sst2" else 10
    assert meta["params"] == AugmentParams(n_iter=n_iter).model_dump()
    assert meta["seed"] == 0 and meta["task"] == task
    assert meta["tagger"] == tagger_identity()
    assert meta["input"] == {"path": str(train_path), "sha256": file_sha256(train_path), "rows": len(train)}
    assert meta["counts"] == {
        "originals": len(train), "candidates": len(train) * n_iter, "synthetic": len(synthetic)
    }


@pytest.mark.parametrize("task", ["sst2", "mnli"])
def test_chunked_parallel_dedup_equals_one_sequential_pass(workdir, monkeypatch, task):
    """Chunks deduplicated locally in workers, then globally in order == the paper's plain loop."""
    monkeypatch.setattr(augment, "CHUNK_ROWS", 32)
    params = AugmentParams(n_iter=10, seed=5)
    out = run(task, write_params(workdir, **params.model_dump()), workers=2)
    train = read_table(paths.prepared_split(task, "train"), SPLIT_SCHEMA)
    corpus = augment.build_corpus(train, get_task(task), workers=1)
    seen = {(r["text_a"], r["text_b"]) for r in augment.originals_table(train, corpus).to_pylist()}
    expected = []
    for chunk_id, first in enumerate(range(0, corpus.rows, 32)):
        positions = np.repeat(np.arange(first, min(first + 32, corpus.rows)), params.n_iter)
        rng = augment.chunk_rng(params.seed, chunk_id)
        candidates = generate_candidates(corpus, positions, params, rng)
        text_b = candidates.text_b or [None] * len(candidates.text_a)
        for position, a, b in zip(candidates.positions.tolist(), candidates.text_a, text_b):
            if (a, b) not in seen:
                seen.add((a, b))
                expected.append((train["idx"][position].as_py(), a, b))
    synthetic = read_table(out, AUGMENTED_SCHEMA).to_pylist()[train.num_rows :]
    assert [(r["source_idx"], r["text_a"], r["text_b"]) for r in synthetic] == expected


def test_zero_probabilities_yield_no_synthetic_rows(workdir):
    out = run("mnli", write_params(workdir, p_mask=0.0, p_pos=0.0, p_ng=0.0), workers=1)
    table = read_table(out, AUGMENTED_SCHEMA)
    assert table.num_rows == REAL_ROWS
    assert all(table["is_original"].to_pylist())
    assert read_metadata(out)["counts"]["synthetic"] == 0


@pytest.mark.parametrize(
    ("augment_values", "message"),
    [
        ({"p_mask": 0.7, "p_pos": 0.4}, "p_mask \\+ p_pos must be at most 1"),
        ({"p_ng": -0.1}, "augment.p_ng"),
        ({"sst2": {"n_iter": -1}}, "augment.sst2.n_iter"),
    ],
)
def test_bad_params_fail_before_any_work(tmp_path, monkeypatch, augment_values, message):
    monkeypatch.chdir(tmp_path)  # no prepared data here: the params error must come first
    with pytest.raises(PipelineError, match=message):
        augment.main("sst2", write_params(tmp_path, **augment_values), workers=1)


def test_empty_training_split_and_bad_workers_fail_clearly(workdir):
    params = write_params(workdir)
    with pytest.raises(PipelineError, match="--workers must be at least 1"):
        augment.main("sst2", params, workers=0)
    train_path = paths.prepared_split("sst2", "train")
    pq.write_table(SPLIT_SCHEMA.empty_table(), train_path)
    with pytest.raises(PipelineError, match="empty training split"):
        augment.main("sst2", params, workers=1)
    assert not paths.augmented("sst2").exists()


def test_missing_tagger_stops_the_stage_before_any_output(workdir, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(workdir)])
    with pytest.raises(PipelineError, match="NLTK_DATA"):
        augment.main("sst2", write_params(workdir), workers=1)
    assert not paths.augmented("sst2").exists()
