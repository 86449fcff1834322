"""How each stage's time and memory grow with the transfer set, up to the paper's ~4 M rows.

    python benchmarks/bench_scale.py                                  # 250k, 1 M, 4 M rows
    python benchmarks/bench_scale.py --rows 250000 --workdir /var/tmp/scale --out benchmarks/results/scale.md

For each size it builds a project of its own under --workdir: an MNLI-shaped pair task in the
GLUE layout whose training pairs are real MNLI sentences (`../shared/glue/MNLI`, else the
shipped sample), recombined (premise i with the hypothesis of a shuffled row) into as many
distinct pairs as the size needs, and the real dev_matched rows. With the paper's pair
setting `augment.n_iter: 10`, N training pairs give about 11 N transfer rows (pairs are long
enough that dedup rarely removes one). Then it runs the pipeline's own commands there, each
in its own process, exactly as dvc.yaml does:

    configure, prepare, augment, label, student (distilled and baseline), export, evaluate

and records per stage: wall time, time per transfer row, peak RSS (the sum over the stage's
process tree, sampled every 50 ms: augment's workers count), and the size of its outputs.

What is synthetic, and why:
- the teacher is a tiny randomly initialised BERT (2 layers, 64 wide, the real uncased
  WordPiece vocabulary) saved as a checkpoint directory: on a CPU the pipeline's cost
  around the model (reading, tokenising, batching, scratch chunks, writing) is what grows
  with the rows; the real teacher's per-row cost is measured beside it on a sample
  (`--teacher-rows` rows of the smallest transfer set, the packaged 6-layer MiniLM);
- the students train a bounded number of batches (`--student-batches`): loading, joining
  logits, the vocabulary, encoding and batching grow with the rows and are all done; the
  steady-state training speed (rows/s) is measured over those batches and does not;
- evaluate scores the real dev_matched and times the models on `evaluate.throughput_rows`
  training pairs, both independent of the transfer set: it is here to show it stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.bundled import SAMPLE_GLUE  # noqa: E402
from pipeline.io import parse_glue_tsv  # noqa: E402
from pipeline.tasks import get_task  # noqa: E402

TASK = "mnli"
N_ITER = 10  # the paper's for pairs: transfer rows ~ 11 x training pairs
ROWS_PER_PAIR = 11
SIZES = (250_000, 1_000_000, 4_000_000)
SAMPLE_S = 0.05
NOTES_MARKER = "<!-- notes: written by hand, kept when the tables above are rewritten -->\n"


# --------------------------------------------------------------------------- data


def source_rows(glue_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """Real MNLI training premises, hypotheses and gold labels."""
    task = get_task(TASK)
    path = glue_dir / task.source_dir / task.train_split.file
    table = parse_glue_tsv(path.read_text(encoding="utf-8"), task, task.train_split, str(path)).to_table()
    names = task.label_names
    return (
        table.column("text_a").to_pylist(),
        table.column("text_b").to_pylist(),
        [names[i] for i in table.column("label").to_pylist()],
    )


def write_train(path: Path, pairs: int, rows: tuple[list[str], list[str], list[str]], seed: int) -> None:
    """`pairs` distinct training pairs in MNLI's reduced TSV layout: the real rows first, then
    premise i with hypothesis perm(i) for fresh permutations (labels drawn at random)."""
    premise, hypothesis, label = rows
    rng = np.random.default_rng(seed)
    names = sorted(set(label))
    n = len(premise)
    with path.open("w", encoding="utf-8") as out:
        out.write("index\tsentence1\tsentence2\tgold_label\n")
        written, block = 0, 0
        while written < pairs:
            take = min(n, pairs - written)
            if block == 0:
                order, labels = np.arange(take), label[:take]
            else:
                order = rng.permutation(n)[:take]
                labels = [names[i] for i in rng.integers(len(names), size=take)]
            for i in range(take):
                out.write(f"{written + i}\t{premise[i]}\t{hypothesis[order[i]]}\t{labels[i]}\n")
            written += take
            block += 1


def params_yaml(glue_dir: Path, args: argparse.Namespace) -> str:
    return f"""tasks: [{TASK}]
glue: [{TASK}]
datasets: {{}}
data:
  glue_dir: {glue_dir}
teacher:
  model: {args.workdir / 'tiny-teacher'}
augment:
  n_iter: {N_ITER}
label:
  precision: auto
student:
  epochs: 1
  baseline_epochs: 1
evaluate:
  throughput_rows: {args.eval_rows}
  latency_repeats: 5
  warmup_batches: 1
"""


def tiny_teacher(directory: Path) -> None:
    """A 2-layer, 64-wide BERT with the packaged MiniLM's uncased WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from pipeline.bert import PACKAGED_TEACHER, resolve_checkpoint

    if (directory / "config.json").is_file():
        return
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(resolve_checkpoint(PACKAGED_TEACHER))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128, num_labels=get_task(TASK).num_labels)
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def place_teacher(project: Path, source: Path) -> None:
    """The teacher stage's output, without training it: the tiny checkpoint and the training
    record evaluate reads (one epoch, scored 0: the teacher is not what is measured here)."""
    import shutil

    out = project / "models" / "teacher" / TASK
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    record = {"best_epoch": 1, "epochs": [{"epoch": 1, "train_loss": 0.0, "metrics": {}}],
              "params": {"lr": 0.0, "epochs": 1, "batch_size": 32}, "dtype": "float32",
              "train_rows": 0, "checkpoint": {"name": "tiny random BERT (bench_scale)"}}
    (out / "training.json").write_text(json.dumps(record))


# --------------------------------------------------------------------------- measuring


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_stage(name: str, cmd: list[str], cwd: Path, log: Path) -> dict[str, float]:
    """Run one stage command; its wall time and the peak RSS of its process tree."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "5"}
    started = time.perf_counter()
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        watched, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.Error:
                pass
            time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}); see {log}")
    return {"wall_s": seconds, "peak_rss_mib": peak / 2**20}


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def student_probe(task: str, variant: str, batches: int, out: Path) -> None:
    """The student stage's main, training `batches` batches: its data path is the stage's own
    (read, join, vocabulary, encode, batch), the loop is cut short and timed after a warm-up."""
    import itertools

    from pipeline import student

    timing: dict[str, float] = {"launched": time.perf_counter()}
    original = student.length_batches

    def bounded(*a, **kw):
        size = 0
        timing["first_batch"] = time.perf_counter()
        for i, rows in enumerate(itertools.islice(original(*a, **kw), batches)):
            if i == 10:
                timing["start"], size = time.perf_counter(), 0
            size += len(rows)
            yield rows
        timing["rows"], timing["stop"] = size, time.perf_counter()

    student.length_batches = bounded
    student.main(task, variant, Path("params.yaml"))
    rate = timing["rows"] / (timing["stop"] - timing["start"])
    # read, join logits, vocabulary, vectors, encode, batch plan: all that grows with the rows
    data_path = timing["first_batch"] - timing["launched"]
    out.write_text(json.dumps({"train_rows_per_s": rate, "data_path_s": data_path}))


def real_teacher_rate(corpus: Path, rows: int) -> dict[str, float]:
    """Label rows/s of the packaged MiniLM (6 layers, 384 wide) on a sample of a transfer set,
    through `pipeline.label.label_texts` with this project's label params (fp32 on CPU)."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.bert import PACKAGED_TEACHER, resolve_checkpoint
    from pipeline.label import label_texts
    from pipeline.params import LabelParams

    table = pq.read_table(corpus, columns=["text_a", "text_b"]).slice(0, rows)
    path = resolve_checkpoint(PACKAGED_TEACHER)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=get_task(TASK).num_labels).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    started = time.perf_counter()
    label_texts(model, tokenizer, table.column("text_a").to_pylist(), table.column("text_b").to_pylist(),
                LabelParams(precision="auto"), torch.device("cpu"))
    seconds = time.perf_counter() - started
    return {"rows": table.num_rows, "wall_s": seconds, "rows_per_s": table.num_rows / seconds}


# --------------------------------------------------------------------------- one size


def stages(args: argparse.Namespace) -> list[tuple[str, list[str], list[str]]]:
    """(name, command, outputs) in DAG order."""
    py = [sys.executable, "-m", "pipeline"]
    probe = [sys.executable, str(Path(__file__).resolve()), "--student-probe"]
    steps = str(args.student_batches)
    return [
        ("configure", [*py, "configure", "--task", TASK], [f"data/params/{TASK}"]),
        ("prepare", [*py, "prepare", "--task", TASK], [f"data/glue/{TASK}"]),
        ("augment", [*py, "augment", "--task", TASK], [f"data/augmented/{TASK}.parquet"]),
        ("label", [*py, "label", "--task", TASK], [f"data/logits/{TASK}.parquet"]),
        ("student distilled", [*probe, "distilled", steps], [f"models/student/{TASK}/distilled"]),
        ("student baseline", [*probe, "baseline", steps], [f"models/student/{TASK}/baseline"]),
        ("export distilled", [*py, "export", "--task", TASK, "--variant", "distilled"], [f"models/export/{TASK}/distilled"]),
        ("evaluate", [*py, "evaluate", "--task", TASK], [f"metrics/evaluate/{TASK}.json"]),
    ]


def measure_size(target: int, args: argparse.Namespace, rows: tuple[list[str], list[str], list[str]]) -> dict:
    import shutil

    project = args.workdir / f"rows-{target}"
    glue = project / "glue" / get_task(TASK).source_dir
    glue.mkdir(parents=True, exist_ok=True)
    pairs = max(target // ROWS_PER_PAIR, 1)
    if not args.only:
        write_train(glue / "train.tsv", pairs, rows, seed=0)
    shutil.copy(args.glue_dir / get_task(TASK).source_dir / "dev_matched.tsv", glue / "dev_matched.tsv")
    (project / "params.yaml").write_text(params_yaml(project / "glue", args))
    place_teacher(project, args.workdir / "tiny-teacher")
    log = project / "bench.log"
    saved = project / "results.json"
    results: dict = {"target_rows": target, "train_pairs": pairs, "stages": {}}
    if args.only:
        results = json.loads(saved.read_text())
    else:
        log.write_text("")
    for name, cmd, outs in stages(args):
        if args.only and name not in args.only:
            continue
        if name == "export distilled":  # evaluate needs the baseline's export too
            run_stage("export baseline", [*cmd[:-1], "baseline"], project, log)
        if name.startswith("student"):
            cmd = [*cmd[:3], TASK, cmd[3], cmd[4], str(project / f"{name.replace(' ', '-')}.json")]
        measured = run_stage(name, cmd, project, log)
        measured["out_bytes"] = sum(size_of(project / o) for o in outs)
        measured["bench_command"] = args.command
        if name.startswith("student"):
            measured |= json.loads((project / f"{name.replace(' ', '-')}.json").read_text())
        results["stages"][name] = measured
        print(f"  {target:>9,} {name:<18} {measured['wall_s']:8.1f} s  {measured['peak_rss_mib']:8.0f} MiB", flush=True)
    import pyarrow.parquet as pq

    results["transfer_rows"] = pq.ParquetFile(project / f"data/augmented/{TASK}.parquet").metadata.num_rows
    saved.write_text(json.dumps(results, indent=2) + "\n")
    return results


# --------------------------------------------------------------------------- report


def augment_phases(project: Path) -> dict[str, float]:
    """The phase timings augment logged on its last run in `project` (tag, generate, write)."""
    done = [line for line in (project / "bench.log").read_text().splitlines() if "done augment@" in line][-1]
    return {k: float(v) for k, v in re.findall(r"(\w+_s)=([\d.]+)", done) if k != "wall_s"}


def write_report(results: list[dict], teacher: dict | None, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results[0]["stages"])
    lines = [
        "# Scale: time and memory per stage, 250k to 4 M transfer rows",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; CPU only. The figures below come from "
        "these commands (a later `--only STAGE` run replaces that stage's figures):",
        "",
        *sorted({f"    {m['bench_command']}" for r in results for m in r["stages"].values()}
                | ({f"    {teacher['bench_command']}"} if teacher else set())),
        "",
        "Per stage and size: wall time, microseconds per transfer row, peak RSS of the stage's "
        "process tree, output size. Time per row at the largest size over the smallest "
        "(`growth`): 1.0 is linear; the target is at most 1.3.",
        "",
    ]
    sizes = [r["transfer_rows"] for r in results]
    header = "| stage | " + " | ".join(f"{s:,} rows: s / us per row / MiB / out MB" for s in sizes) + " | growth |"
    lines += [header, "|---|" + "---|" * len(sizes) + "---|"]
    for name in names:
        cells = []
        for r in results:
            m = r["stages"][name]
            cells.append(f"{m['wall_s']:.1f} / {1e6 * m['wall_s'] / r['transfer_rows']:.1f} / "
                         f"{m['peak_rss_mib']:.0f} / {m['out_bytes'] / 1e6:.1f}")
        first, last = results[0], results[-1]
        growth = (last["stages"][name]["wall_s"] / last["transfer_rows"]) / (first["stages"][name]["wall_s"] / first["transfer_rows"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {growth:.2f} |")
    lines += ["", "What grows with the rows inside the stages whose totals include fixed work:", "",
              "| | " + " | ".join(f"{s:,} rows" for s in sizes) + " | growth |", "|---|" + "---|" * len(sizes) + "---|"]
    phases = [augment_phases(args.workdir / f"rows-{r['target_rows']}") for r in results]
    for phase in ("tokenise_tag_s", "generate_s", "write_s"):
        per_row = [1e6 * p[phase] / r["transfer_rows"] for p, r in zip(phases, results)]
        lines.append(f"| augment {phase.removesuffix('_s')}: s (us per row) | "
                     + " | ".join(f"{p[phase]:.1f} ({u:.1f})" for p, u in zip(phases, per_row))
                     + f" | {per_row[-1] / per_row[0]:.2f} |")
    for name in (n for n in names if n.startswith("student")):
        if not all("data_path_s" in r["stages"][name] for r in results):
            continue
        per_row = [1e6 * r["stages"][name]["data_path_s"] / r["transfer_rows"] for r in results]
        lines.append(f"| {name}: data path to the first batch, s (us per row) | "
                     + " | ".join(f"{r['stages'][name]['data_path_s']:.1f} ({u:.1f})" for r, u in zip(results, per_row))
                     + f" | {per_row[-1] / per_row[0]:.2f} |")
        lines.append(f"| {name}: steady-state training, rows/s (one thread) | "
                     + " | ".join(f"{r['stages'][name]['train_rows_per_s']:.0f}" for r in results) + " | |")
    if teacher:
        lines += ["", f"Real teacher (packaged MiniLM, 6 layers, 384 wide, fp32) through the label stage's "
                      f"batching on {teacher['rows']:,} transfer rows: {teacher['rows_per_s']:.0f} rows/s "
                      f"({teacher['wall_s']:.0f} s); at that rate {sizes[-1]:,} rows take "
                      f"{sizes[-1] / teacher['rows_per_s'] / 3600:.1f} h on this machine."]
    figure = args.out.with_suffix(".png")
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in names:
        ax_t.plot(sizes, [r["stages"][name]["wall_s"] for r in results], marker="o", label=name)
        ax_m.plot(sizes, [r["stages"][name]["peak_rss_mib"] / 1024 for r in results], marker="o", label=name)
    for ax, label in ((ax_t, "wall time (s)"), (ax_m, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes, [f"{s / 1e6:.2f} M" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("transfer rows")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    lines += ["", f"![time and memory against rows]({figure.name})", ""]
    args.out.with_suffix(".json").write_text(json.dumps({"results": results, "teacher": teacher}, indent=2) + "\n")
    # The reading of the figures is written by hand below this marker and kept across runs.
    notes = args.out.read_text().partition(NOTES_MARKER)[2] if args.out.is_file() else ""
    args.out.write_text("\n".join(lines) + "\n" + NOTES_MARKER + (notes or "\n"))
    print(f"wrote {args.out}, {figure}, {args.out.with_suffix('.json')}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--student-probe":
        task, variant, batches, out = sys.argv[2:6]
        student_probe(task, variant, int(batches), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES), help="transfer-set sizes to build")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/bench-scale"))
    parser.add_argument("--glue-dir", type=Path, default=None, help="GLUE layout with MNLI (default: ../shared/glue, else the sample)")
    parser.add_argument("--student-batches", type=int, default=300)
    parser.add_argument("--eval-rows", type=int, default=2048, help="evaluate.throughput_rows")
    parser.add_argument("--teacher-rows", type=int, default=2000, help="rows for the real teacher's rate (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    parser.add_argument("--only", nargs="+", default=None, metavar="STAGE",
                        help="rerun only these stages (e.g. label 'student distilled') of sizes already built in --workdir")
    args = parser.parse_args()
    shared = ROOT.parent / "shared" / "glue"
    args.glue_dir = args.glue_dir or (shared if (shared / "MNLI" / "train.tsv").is_file() else SAMPLE_GLUE)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.command = "python benchmarks/bench_scale.py " + shlex.join(sys.argv[1:])
    tiny_teacher(args.workdir / "tiny-teacher")
    rows = source_rows(args.glue_dir)
    print(f"{len(rows[0]):,} real MNLI training pairs from {args.glue_dir}")
    for target in sorted(args.rows):
        measure_size(target, args, rows)
    built = sorted(args.workdir.glob("rows-*/results.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    results = [json.loads(p.read_text()) for p in built]
    teacher_file = args.workdir / "teacher.json"
    if args.teacher_rows and not args.only:
        corpus = args.workdir / f"rows-{min(args.rows)}" / "data" / "augmented" / f"{TASK}.parquet"
        teacher = real_teacher_rate(corpus, args.teacher_rows) | {"bench_command": args.command}
        teacher_file.write_text(json.dumps(teacher) + "\n")
    teacher = json.loads(teacher_file.read_text()) if teacher_file.is_file() else None
    write_report(results, teacher, args)


if __name__ == "__main__":
    main()
