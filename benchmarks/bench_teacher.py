"""Teacher training throughput on real SST-2 rows: length-grouped dynamic padding vs fixed padding.

    python -m benchmarks.bench_teacher [--steps 30] [--sample 4096] [--precision auto]

Trains the teacher of params.yaml (`teacher.model`, by default the packaged MiniLM) for `--steps`
optimiser steps of `teacher.batch_size` rows in each mode, on one device, in one run:

    grouped  length-grouped batches, each padded to its longest row (what the stage does)
    random   random batches, each padded to its longest row
    fixed    random batches, every one padded to `teacher.max_length` (the naive loop)

and prints examples/s and padded width per mode, then the wall time `teacher.epochs` epochs over
the full SST-2 training split would take at the grouped rate. The first two steps of each mode
(the longest batch among them) are warm-up and not timed. Rows are a seeded sample of the
training split, normalised and tokenised as the stage does.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import teacher
from pipeline.device import autocast_dtype, pick_device
from pipeline.io import parse_glue_tsv
from pipeline.params import load_params
from pipeline.tasks import get_task

WARMUP_STEPS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimiser steps per mode")
    parser.add_argument("--sample", type=int, default=4096, help="training rows sampled (seeded)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    glue_dir = Path(os.environ.get("GLUE_DIR", "../shared/glue"))
    parser.add_argument("--glue-dir", type=Path, default=glue_dir, help="GLUE root ($GLUE_DIR)")
    args = parser.parse_args()

    task = get_task("sst2")
    params = load_params(args.params).teacher.for_task(task.name)
    device = pick_device()
    dtype = autocast_dtype(args.precision or params.precision, device)
    threads = teacher.set_cpu_threads()

    path = args.glue_dir / task.source_dir / task.train_split.file
    full = parse_glue_tsv(path.read_text(), task, task.train_split, str(path)).to_table()
    size = min(args.sample, full.num_rows)
    sample = np.sort(np.random.default_rng(0).choice(full.num_rows, size, replace=False))
    checkpoint = teacher.check_checkpoint(params.model, task)
    torch.manual_seed(params.seed)
    model, tokenizer = teacher.load_checkpoint(checkpoint)
    data = teacher.encode(tokenizer, task, full.take(sample), params.max_length)
    model.to(device).train()
    optimizer, scheduler = teacher.make_optimizer(model, params, total_steps=10**6)
    trainer = teacher.Trainer(
        model, optimizer, scheduler, device, dtype, params.max_grad_norm, params.micro_batch_size
    )

    gpu = "" if device.type == "cpu" else ", " + torch.cuda.get_device_name(device)
    print(
        f"model {params.model} | device {device} ({threads} threads of {os.cpu_count()} cpus{gpu}) | "
        f"dtype {dtype or 'fp32'} | batch {params.batch_size} | {len(data)} sampled SST-2 rows, "
        f"mean {data.lengths.mean():.1f} word pieces | load average {_load()}"
    )
    print(f"{'mode':<8} {'steps':>5} {'ex/s':>8} {'padded width':>13}")
    rates = {}
    needed = WARMUP_STEPS + args.steps
    rng = np.random.default_rng(params.seed)
    for mode, group, pad_to in (
        ("grouped", params.length_group_batches, None),
        ("random", 1, None),
        ("fixed", 1, params.max_length),
    ):
        batches = teacher.length_grouped_batches(data.lengths, params.batch_size, group, rng)
        if len(batches) < needed:
            parser.error(f"--sample {args.sample} gives {len(batches)} batches; need {needed}")
        for batch in batches[:WARMUP_STEPS]:
            trainer.step(data, batch, pad_to)
        timed = batches[WARMUP_STEPS:needed]
        _sync(device)
        started = time.perf_counter()
        for batch in timed:
            trainer.step(data, batch, pad_to)
        _sync(device)
        seconds = time.perf_counter() - started
        rows = sum(len(b) for b in timed)
        width = np.mean([pad_to or data.lengths[b].max() for b in timed])
        rates[mode] = rows / seconds
        print(f"{mode:<8} {len(timed):>5} {rates[mode]:>8.1f} {width:>13.1f}")

    epoch_rows = full.num_rows
    hours = params.epochs * epoch_rows / rates["grouped"] / 3600
    print(
        f"grouped is {rates['grouped'] / rates['fixed']:.1f}x fixed-{params.max_length} padding and "
        f"{rates['grouped'] / rates['random']:.1f}x random batches | estimated {params.epochs} epochs "
        f"over {epoch_rows:,} SST-2 rows here: {hours:.1f} h (training only) | load average {_load()}"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
