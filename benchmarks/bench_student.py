"""Student training throughput: examples/s of the distilled SST-2 BiLSTM, and the epoch time it implies.

    python benchmarks/bench_student.py                       # CPU, 1 and 2 threads, 20000 rows
    python benchmarks/bench_student.py --device cuda --rows 200000

Runs one epoch of the student stage's own training loop (`pipeline.student.train_epochs`:
length-bucketed batches, packed BiLSTM, the distillation loss, AdaDelta) with params.yaml's
`student` section for sst2 (batch 50, H 150, F 200, packaged GloVe 50-d multichannel
embeddings unless params say otherwise), after a short untimed warm-up, and prints
examples/s, tokens/s and the estimated time of one epoch over 1M rows (the size of the
SST-2 transfer set at n_iter 20).

Rows: N rows sampled from `data/augmented/sst2.parquet` when it exists (the real transfer
set); otherwise normalised SST-2 training sentences, three quarters of them perturbed the way
augmentation does (10% of tokens masked, and with p = 0.25 only a random 1-5-gram kept), so
lengths resemble the transfer set's. Teacher logits are random (speed does not depend on them).
The load average is printed before and after: on a shared machine the figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.io import read_table  # noqa: E402
from pipeline.models import StudentConfig, build_model  # noqa: E402
from pipeline.models.embeddings import load_vectors  # noqa: E402
from pipeline.models.vocab import Vocab  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.student import LabelledTexts, train_epochs  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pipeline.text import MASK_TOKEN, normalize  # noqa: E402

TRANSFER_SET_ROWS = 1_000_000
WARMUP_ROWS = 1000


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def transfer_rows(rows: int, glue_dir: Path, rng: np.random.Generator) -> tuple[list[str], str]:
    """`rows` texts of the SST-2 transfer set, real when it exists, else lookalikes."""
    corpus_path = paths.augmented("sst2")
    if corpus_path.is_file():
        texts = read_table(corpus_path).column("text_a").to_pylist()
        chosen = rng.choice(len(texts), rows, replace=len(texts) < rows)
        return [texts[i] for i in chosen], str(corpus_path)
    lines = (glue_dir / "SST-2" / "train.tsv").read_text().split("\n")[1:]
    sentences = [normalize(line.split("\t")[0]) for line in lines if line]
    out = []
    for i in rng.choice(len(sentences), rows):
        tokens = sentences[i].split()
        if rng.random() < 0.75:  # a synthetic row
            tokens = [MASK_TOKEN if rng.random() < 0.1 else t for t in tokens]
            n = int(rng.integers(1, 6))
            if rng.random() < 0.25 and len(tokens) > n:
                start = int(rng.integers(0, len(tokens) - n + 1))
                tokens = tokens[start : start + n]
        out.append(" ".join(tokens))
    return out, "SST-2 train lookalikes (no data/augmented/sst2.parquet)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the timed epoch")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts to time, comma-separated")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    default_glue = Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared" / "glue"))
    parser.add_argument("--glue-dir", type=Path, default=default_glue)
    args = parser.parse_args()

    task = get_task("sst2")
    params = load_params(args.params).student.for_task("sst2")
    rng = np.random.default_rng(0)
    texts, source = transfer_rows(args.rows + WARMUP_ROWS, args.glue_dir, rng)
    logits = rng.normal(size=(len(texts), task.num_labels)).astype(np.float32)
    data = LabelledTexts(pa.array(texts), None, logits.argmax(axis=1), logits)
    head, tail = slice(None, WARMUP_ROWS), slice(WARMUP_ROWS, None)
    warmup = LabelledTexts(data.text_a[head], None, data.labels[head], logits[head])
    timed = LabelledTexts(data.text_a[tail], None, data.labels[tail], logits[tail])
    dev = LabelledTexts(data.text_a[:200], None, data.labels[:200])
    vocab, _ = Vocab.build(data.columns, params.mask_policy)
    vectors = load_vectors(params.vectors, vocab.words, params.random_dim, rng)
    tokens = sum(len(t.split()) for t in texts[WARMUP_ROWS:])
    device = torch.device(args.device)

    print(f"rows: {args.rows} timed ({tokens / args.rows:.1f} tokens/row) from {source}")
    dim = vectors.matrix.shape[1]
    print(f"model: vocab {len(vocab)}, vectors {params.vectors} ({dim}-d x 2 channels), "
          f"H {params.hidden_size}, F {params.fc_size}, batch {params.batch_size}, device {device}")
    print(f"torch {torch.__version__}; {load()}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    for threads in thread_counts if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        config = StudentConfig("sst2", task.label_names, False, len(vocab), dim,
                               params.hidden_size, params.fc_size, params.dropout, params.mask_policy)
        model = build_model(config)
        model.encoder.embedding.initialise(vectors.matrix)
        model.to(device)
        order = np.random.default_rng(0)
        train_epochs(model, task, warmup, dev, vocab, params, params.alpha, 1, device, order)
        started = time.perf_counter()
        curve, _ = train_epochs(model, task, timed, dev, vocab, params, params.alpha, 1, device, order)
        speed = curve[0]["examples_per_s"]
        wall = time.perf_counter() - started
        minutes = TRANSFER_SET_ROWS / speed / 60
        print(f"threads {threads}: {speed:,.0f} examples/s, {speed * tokens / args.rows:,.0f} tokens/s "
              f"(epoch incl. dev scoring {wall:.1f} s) -> 1M-row epoch ~ {minutes:.1f} min")
    print(load())


if __name__ == "__main__":
    main()
