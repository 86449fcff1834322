"""Label throughput: the `label` stage's path vs a naive HF loop, same rows, teacher and device.

    python benchmarks/bench_label.py                      # CPU, packaged MiniLM, 2000 rows
    python benchmarks/bench_label.py --device cuda --model bert-base --precision bf16 \\
        --rows 200000 --peak-tflops 989                   # H100 SXM dense bf16 peak

(a) naive: fixed batches of 32 rows padded to 128 tokens, fp32, in corpus order;
(b) stage: `pipeline.label.label_texts` with params.yaml's `label` section (length-sorted
    token-budget batches, dynamic padding, SDPA, autocast on GPU, background collation).
Both are timed from texts to float32 logits on the host (tokenisation included), after a
warm-up, and must agree (max |difference| is printed).

Rows: N rows sampled from `data/augmented/sst2.parquet` when it exists (the real transfer
set); otherwise N/2 normalised SST-2 training sentences plus a masked copy of each (every
token masked with p = 0.1, seeded). That fallback keeps full sentence lengths, while the
real transfer set is shorter (n-gram sampling), so it understates the stage's advantage.

Teacher: the packaged MiniLM (6 layers, 384 wide) with a fresh 2-label head, or `bert-base`
(random init, 12 layers, 768 wide; throughput does not depend on the weights).
TFLOP/s counts useful work only: 2 x encoder parameters x real tokens, plus attention
(QK^T and AV: 4 x layers x hidden x length^2 per row), plus pooler and head once per row.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.bert import PACKAGED_TEACHER, resolve_checkpoint  # noqa: E402
from pipeline.io import parse_glue_tsv  # noqa: E402
from pipeline.label import encode, label_texts, plan_batches, prepare_model  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pipeline.text import MASK_TOKEN, normalize  # noqa: E402

NAIVE_BATCH = 32
NAIVE_LENGTH = 128
MASK_P = 0.1
WARMUP_ROWS = 64


def load_rows(n: int, seed: int, glue_dir: Path | None) -> tuple[list[str], str]:
    corpus = ROOT / paths.augmented("sst2")
    rng = np.random.default_rng(seed)
    if corpus.is_file():
        texts = pq.read_table(corpus, columns=["text_a"]).column("text_a").to_pylist()
        pick = np.sort(rng.choice(len(texts), size=min(n, len(texts)), replace=False))
        return [texts[i] for i in pick], f"{corpus} (transfer set)"
    if glue_dir is None:
        raise SystemExit("no data/augmented/sst2.parquet: give --glue-dir or set GLUE_DIR")
    task = get_task("sst2")
    source = glue_dir / task.source_dir / "train.tsv"
    parsed = parse_glue_tsv(source.read_text(encoding="utf-8"), task, task.train_split, str(source))
    pick = np.sort(rng.choice(parsed.rows, size=min(n // 2, parsed.rows), replace=False))
    originals = [normalize(parsed.text_a[i]) for i in pick]
    coin = random.Random(seed)
    variants = [
        " ".join(MASK_TOKEN if coin.random() < MASK_P else token for token in text.split())
        for text in originals
    ]
    return originals + variants, f"{source} (originals + masked copies)"


def load_model(name: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    torch.manual_seed(0)
    packaged = resolve_checkpoint(PACKAGED_TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(packaged)
    if name == "packaged":
        model = AutoModelForSequenceClassification.from_pretrained(packaged, num_labels=2)
    else:  # bert-base sizes, random weights
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2)
        model = AutoModelForSequenceClassification.from_config(config)
    return model, tokenizer


def naive(model, tokenizer, texts: list[str], device: torch.device) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), NAIVE_BATCH):
            enc = tokenizer(
                texts[start : start + NAIVE_BATCH], padding="max_length", truncation=True,
                max_length=NAIVE_LENGTH, return_tensors="pt",
            ).to(device)
            out.append(model(**enc).logits.float().cpu().numpy())
    return np.concatenate(out)


def useful_flops(model, lengths: np.ndarray) -> float:
    config = model.config
    encoder = sum(p.numel() for p in model.bert.encoder.parameters())
    head = sum(p.numel() for p in model.bert.pooler.parameters()) + sum(
        p.numel() for p in model.classifier.parameters()
    )
    squares = float((lengths.astype(np.float64) ** 2).sum())
    attention = 4 * config.num_hidden_layers * config.hidden_size * squares
    return 2 * encoder * float(lengths.sum()) + attention + 2 * head * len(lengths)


def timed(fn) -> tuple[np.ndarray, float, float]:
    """fn(), its wall seconds and this process's CPU seconds (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["packaged", "bert-base"], default="packaged")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None,
                        help="stage path precision (default: params.yaml label.precision)")
    parser.add_argument("--batch-tokens", type=int, default=None, help="default: params.yaml")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for the dtype used")
    parser.add_argument("--glue-dir", type=Path, default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    label = load_params(ROOT / "params.yaml").label
    chosen = {"precision": args.precision, "batch_tokens": args.batch_tokens}
    label = label.model_copy(update={k: v for k, v in chosen.items() if v is not None})
    texts, source = load_rows(args.rows, args.seed, args.glue_dir)
    model, tokenizer = load_model(args.model)
    model = prepare_model(model, device)
    lengths = encode(tokenizer, texts, None, label.max_length).lengths
    name = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"rows {len(texts)} from {source}; "
          f"mean {lengths.mean():.1f} word pieces (max {lengths.max()})")
    print(f"teacher {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
          f"device {name}, torch threads {torch.get_num_threads()}, load average {load}")
    print(f"stage params: {label.model_dump()}")

    naive(model, tokenizer, texts[:WARMUP_ROWS], device)
    label_texts(model, tokenizer, texts[:WARMUP_ROWS], None, label, device)
    base, base_s, base_cpu = timed(lambda: naive(model, tokenizer, texts, device))
    fast, fast_s, fast_cpu = timed(lambda: label_texts(model, tokenizer, texts, None, label, device))

    flops = useful_flops(model, lengths)
    on_cpu = device.type == "cpu"  # CPU time is a steadier measure there; on GPU it is only the host's
    for what, seconds, cpu_seconds, padded in (
        (f"naive (batch {NAIVE_BATCH}, pad {NAIVE_LENGTH}, fp32)", base_s, base_cpu,
         len(texts) * NAIVE_LENGTH),
        (f"stage (budget {label.batch_tokens} tokens, {label.precision})", fast_s, fast_cpu,
         sum(len(b) * lengths[b[0]] for b in plan_batches(lengths, label.batch_tokens))),
    ):
        tflops = flops / seconds / 1e12
        peak = f" = {100 * tflops / args.peak_tflops:.1f}% of peak" if args.peak_tflops else ""
        cpu_rate = f"; {len(texts) / cpu_seconds:.1f} rows per CPU-s" if on_cpu else ""
        print(f"{what:<42} {len(texts) / seconds:9.1f} rows/s ({seconds:.1f} s{cpu_rate}), "
              f"{tflops:.3f} useful TFLOP/s{peak}, padded/real tokens {padded / lengths.sum():.2f}")
    cpu_ratio = f", {base_cpu / fast_cpu:.1f}x CPU time" if on_cpu else ""
    print(f"speed-up {base_s / fast_s:.1f}x wall{cpu_ratio}; "
          f"max |logit difference| {np.abs(base - fast).max():.2e}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
