"""The served student against the DESIGN.md §6 targets: batch-1 text -> label on one CPU thread.

    python benchmarks/bench_export.py          # models/{student,export}/sst2/distilled, models/teacher/sst2
    python benchmarks/bench_export.py --student S --export E --teacher T --repeats 500

Everything runs on one thread (torch and onnxruntime) and is timed with `pipeline.speed`, the
evaluate stage's protocol: warm-up calls untimed, then median and 90th percentile over
`--repeats` batch-1 calls cycling through the SST-2 dev sentences, split into `encode` and
the model call; throughput is batch 512 over the dev sentences (model call only, the
paper's Table 2 figure, and end to end), in data order: a padded ONNX LSTM batch costs its
longest row's steps while the PyTorch student packs its rows, so the dev set is also scored
whole with each model's `predict_logits`, which sorts rows by length first.

The export's `encode` starts from RAW text (Treebank tokenisation, lower-casing, ids): its
end-to-end figure is the whole text -> label path. The PyTorch student and the teacher are
given the canonical text (already Treebank-tokenised, as the evaluate stage gives it), so
their end-to-end figures leave that step out: the teacher/export ratio is conservative.

Also printed: dev accuracy of the PyTorch student and of the float32 and int8 exports (the
int8 target: within 0.5 points), and the sizes on disk. Dev sentences come from
`data/glue/sst2/dev.parquet` when prepared, else `$GLUE_DIR/SST-2/dev.tsv`. The load
average is printed before and after: on a shared machine the figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import paths  # noqa: E402
from pipeline.bert import load_teacher  # noqa: E402
from pipeline.evaluate import TeacherClassifier  # noqa: E402
from pipeline.speed import TimedExport  # noqa: E402
from pipeline.io import SPLIT_SCHEMA, parse_glue_tsv, read_table  # noqa: E402
from pipeline.models import load_student  # noqa: E402
from pipeline.serve import export_sizes, load_export  # noqa: E402
from pipeline.speed import measure_latency, measure_throughput  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pipeline.text import normalize  # noqa: E402

TASK = get_task("sst2")
BATCH = 512
WARMUP = 20  # untimed batch-1 calls (and warm-up batches at batch 512: 2)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def dev_rows(glue_dir: Path) -> tuple[list[str], np.ndarray, str]:
    """SST-2 dev sentences (raw text, as prepare keeps them) and labels."""
    prepared = ROOT / paths.prepared_split(TASK.name, "dev")
    if prepared.is_file():
        table = read_table(prepared, SPLIT_SCHEMA)
        return table.column("text_a").to_pylist(), table.column("label").to_numpy(), str(prepared)
    spec = TASK.split("dev")
    source = glue_dir / TASK.source_dir / spec.file
    parsed = parse_glue_tsv(source.read_text(encoding="utf-8"), TASK, spec, str(source))
    return parsed.text_a, np.array(parsed.label), str(source)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def latency(model, texts: list[str], repeats: int) -> dict[str, float]:
    return measure_latency(model, texts, None, repeats, WARMUP)


def line(name: str, timing: dict[str, float]) -> str:
    return (f"  {name:<14} e2e median {timing['latency_e2e_ms_median']:8.3f} ms  p90 "
            f"{timing['latency_e2e_ms_p90']:8.3f} ms | model median {timing['latency_model_ms_median']:8.3f} ms  "
            f"p90 {timing['latency_model_ms_p90']:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=ROOT / paths.student_dir("sst2", "distilled"))
    parser.add_argument("--export", type=Path, default=ROOT / paths.export_dir("sst2", "distilled"))
    parser.add_argument("--teacher", type=Path, default=ROOT / paths.teacher_dir("sst2"))
    parser.add_argument("--repeats", type=int, default=500, help="timed batch-1 calls per model")
    default_glue = Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared" / "glue"))
    parser.add_argument("--glue-dir", type=Path, default=default_glue)
    args = parser.parse_args()

    torch.set_num_threads(1)
    texts, labels, source = dev_rows(args.glue_dir)
    canonical = [normalize(t) for t in texts]
    student = load_student(args.student)
    fp32, int8 = load_export(args.export, threads=1), load_export(args.export, int8=True, threads=1)
    teacher = TeacherClassifier(*load_teacher(args.teacher, TASK), max_length=128)
    print(f"{len(texts)} SST-2 dev sentences from {source}; 1 thread; torch {torch.__version__}")
    print(load())

    print(f"batch-1 latency ({args.repeats} calls after {WARMUP} warm-up):")
    timings = {
        "export fp32": latency(TimedExport(fp32), texts, args.repeats),
        "export int8": latency(TimedExport(int8), texts, args.repeats),
        "student torch": latency(student, canonical, args.repeats),
        "teacher": latency(teacher, canonical, args.repeats),
    }
    for name, timing in timings.items():
        print(line(name, timing))
    teacher_ms = timings["teacher"]["latency_e2e_ms_median"]
    for name in ("export fp32", "export int8"):
        export_ms = timings[name]["latency_e2e_ms_median"]
        print(f"  teacher / {name} (e2e medians): {teacher_ms / export_ms:.1f}x")

    print(f"batch-{BATCH} throughput over the dev sentences (rows/s):")
    for name, model, rows in (("export fp32", TimedExport(fp32), texts), ("export int8", TimedExport(int8), texts),
                              ("student torch", student, canonical)):
        speed = measure_throughput(model, rows, None, BATCH, warmup_batches=2)
        print(f"  {name:<14} model {speed['throughput_model_rows_per_s']:10,.0f}   "
              f"e2e {speed['throughput_e2e_rows_per_s']:10,.0f}")

    print(f"dev set scored whole (predict_logits: length-sorted batches of {BATCH}, e2e, best of 3):")
    scorers = {
        "export fp32": lambda: fp32.predict_logits(texts, batch_size=BATCH),
        "export int8": lambda: int8.predict_logits(texts, batch_size=BATCH),
        "student torch": lambda: student.predict_logits(canonical, batch_size=BATCH),
    }
    correct, predictions = {}, {}
    for name, score in scorers.items():
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            predictions[name] = score().argmax(axis=1)
            seconds.append(time.perf_counter() - started)
        rows_per_s = len(texts) / min(seconds)
        correct[name] = 100 * np.mean(predictions[name] == labels)
        print(f"  {name:<14} {rows_per_s:10,.0f} rows/s   accuracy {correct[name]:.2f}")
    same = 100 * np.mean(predictions["export int8"] == predictions["export fp32"])
    print(f"  int8 - fp32: {correct['export int8'] - correct['export fp32']:+.2f} points ({same:.1f}% same predictions)")
    sizes = export_sizes(args.export)
    print(f"size on disk: model.onnx {sizes['model.onnx'] / 1e6:.1f} MB, model.int8.onnx "
          f"{sizes['model.int8.onnx'] / 1e6:.1f} MB ({sizes['model.int8.onnx'] / sizes['model.onnx']:.2f}x), "
          f"export dir {dir_bytes(args.export) / 1e6:.1f} MB, student dir {dir_bytes(args.student) / 1e6:.1f} MB, "
          f"teacher dir {dir_bytes(args.teacher) / 1e6:.1f} MB")
    print(load())


if __name__ == "__main__":
    main()
