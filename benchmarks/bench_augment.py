"""Augmentation throughput on full SST-2 x n_iter: phases, workers, yield, end-to-end wall time.

    python benchmarks/bench_augment.py [--task sst2] [--glue-dir DIR]

Prepares the task's training split into a temporary project directory, then
1. times Treebank tokenisation alone in one process (for scale; the stage tokenises while tagging),
2. runs the stage's core (`augment_to_parquet`) with one worker and with all cores, printing the
   time of each phase (tokenise+tag+encode, generate+dedup, Parquet write), candidates
   generated per second and the yield after dedup, and checks the two files are byte-identical,
3. runs `python -m pipeline augment --task T` end to end (interpreter start and imports
   included): the figure the DESIGN.md target (under 40 s on 2 cores for SST-2) is about.
The load average is printed before and after: on a shared machine the figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import augment, paths  # noqa: E402
from pipeline.io import SPLIT_SCHEMA, read_table, read_yaml  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.prepare import main as prepare_main  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402
from pipeline.text import pos_tagger, tagger_identity, word_tokenize  # noqa: E402


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "glue")))
    args = parser.parse_args()
    os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "nltk_data"))
    task = get_task(args.task)
    print(load())

    with tempfile.TemporaryDirectory(prefix="bench-augment-") as tmp:
        project = Path(tmp)
        params_file = project / "params.yaml"
        params = read_yaml(ROOT / "params.yaml")
        params["data"]["glue_dir"] = args.glue_dir
        params_file.write_text(yaml.safe_dump(params))
        os.chdir(project)
        prepare_main(task.name, params_file)
        train = read_table(paths.prepared_split(task.name, "train"), SPLIT_SCHEMA)
        augment_params = load_params(params_file).augment.for_task(task.name)
        provenance = {"tagger": tagger_identity()}

        columns = ["text_a", "text_b"] if task.is_pair else ["text_a"]
        texts = list(dict.fromkeys(text for column in columns for text in train[column].to_pylist()))
        started = time.perf_counter()
        for text in texts:
            word_tokenize(text)
        print(f"{task.name}: {train.num_rows} training rows, {len(texts)} distinct texts, n_iter {augment_params.n_iter}")
        print(f"tokenise alone, 1 process: {time.perf_counter() - started:.1f} s")

        outputs = []
        for workers in sorted({1, augment.default_workers()}):
            pos_tagger.cache_clear()  # every run starts with a cold tagger memo, as the stage does
            out = project / f"augmented-{workers}.parquet"
            started = time.perf_counter()
            report = augment.augment_to_parquet(train, task, augment_params, workers, out, provenance)
            wall = time.perf_counter() - started
            phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in report.seconds.items())
            print(
                f"workers={workers}: {phases}; wall {wall:.1f} s; "
                f"{report.candidates / report.seconds['generate']:,.0f} candidates/s generated+deduplicated; "
                f"{report.candidates / wall:,.0f} candidates/s overall"
            )
            print(
                f"  yield: {report.candidates:,} candidates -> {report.synthetic:,} synthetic "
                f"({report.synthetic / report.candidates:.1%}); {report.originals + report.synthetic:,} rows "
                f"with the originals; {out.stat().st_size / 1e6:.1f} MB"
            )
            outputs.append(out.read_bytes())
        print(f"byte-identical across worker counts: {all(o == outputs[0] for o in outputs)}")

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        stage = subprocess.run(
            [sys.executable, "-m", "pipeline", "augment", "--task", task.name, "--params", str(params_file)],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        if stage.returncode:
            sys.exit(stage.stderr)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        print(f"end to end, `python -m pipeline augment --task {task.name}` (all cores): {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU (all its processes; wall on idle cores is about CPU / cores)")
        os.chdir(ROOT)
    print(load())


if __name__ == "__main__":
    main()
