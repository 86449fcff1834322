"""`prepare`: GLUE TSV readers on the real data, malformed rows, MNLI layout, download, CLI."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io import SPLIT_SCHEMA, file_sha256, glue_tsv_rows, read_metadata
from pipeline.prepare import main as prepare_main
from pipeline.params import parse_params
from pipeline.prepare import prepare_split
from pipeline.tasks import TASKS, get_task
from project import configured

ROOT = Path(__file__).resolve().parents[1]

MNLI_TRAIN_HEADER = (
    "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
    "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label"
).split()
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def _mnli_row(i: int, a: str, b: str, gold: str, dev: bool) -> str:
    parse_a, parse_b = f"( ( {a} ) )", f"( ( {b} ) )"
    votes = [gold] * (5 if dev else 1)
    fields = [str(i), str(1000 + i), f"{1000 + i}e", "fiction", parse_a, parse_b,
              f"(ROOT {parse_a})", f"(ROOT {parse_b})", a, b, *votes, gold]
    return "\t".join(fields)


def write_mnli_fixture(root: Path) -> Path:
    """A small MNLI directory in the exact GLUE layout (12 columns train, 16 dev)."""
    mnli = root / "MNLI"
    mnli.mkdir(parents=True)
    rows = [
        ("The cat sat on the mat.", "A cat is sitting.", "entailment"),
        ("He never said \"yes\".", "He agreed loudly.", "contradiction"),
        ("Prices rose in May.", "Inflation was high all year.", "neutral"),
        ("She plays the violin.", "She is a musician.", "entailment"),
    ]
    train = [_mnli_row(i, *r, dev=False) for i, r in enumerate(rows)]
    (mnli / "train.tsv").write_text("\t".join(MNLI_TRAIN_HEADER) + "\n" + "\n".join(train) + "\n")
    for name in ("dev_matched", "dev_mismatched"):
        dev = [_mnli_row(i, *r, dev=True) for i, r in enumerate(rows[:3])]
        (mnli / f"{name}.tsv").write_text("\t".join(MNLI_DEV_HEADER) + "\n" + "\n".join(dev) + "\n")
    return root


def write_params(directory: Path, tasks: list[str], *, configure: bool = True, **data) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks, "data": data}))
    return configured(path) if configure else path


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("task", "counts"),
    [("sst2", {"train": 67349, "dev": 872, "test": 1821}), ("qqp", {"train": 19999, "dev": 3497})],
)
def test_real_glue_row_counts(workdir, glue_dir, task, counts):
    prepare_main(task, write_params(workdir, [task], glue_dir=str(glue_dir)))
    written = {p.stem: pq.read_table(p) for p in sorted(paths.prepared_dir(task).glob("*.parquet"))}
    assert {k: t.num_rows for k, t in written.items()} == counts
    for table in written.values():
        assert table.schema.equals(SPLIT_SCHEMA, check_metadata=False)


def test_sst2_rows_are_exact(workdir, glue_dir):
    prepare_main("sst2", write_params(workdir, ["sst2"], glue_dir=str(glue_dir)))
    train = pq.read_table(paths.prepared_split("sst2", "train")).to_pylist()
    assert train[0] == {"idx": 0, "text_a": "hide new secretions from the parental units",
                        "text_b": None, "label": 0}
    assert sum(r["label"] for r in train) == 37569  # SOURCES.md: 37569 positives
    test = pq.read_table(paths.prepared_split("sst2", "test")).column("label").to_pylist()
    assert set(test) == {-1}


def test_qqp_malformed_first_row_is_reported_and_skipped(workdir, glue_dir, caplog):
    prepare_main("qqp", write_params(workdir, ["qqp"], glue_dir=str(glue_dir)))
    train = pq.read_table(paths.prepared_split("qqp", "train"))
    assert train.column("idx")[0].as_py() == 1  # data row 0 (file line 2) was skipped
    assert "skipped 1 malformed row(s): line 2: 5 fields, header has 6" in caplog.text
    meta = read_metadata(paths.prepared_split("qqp", "train"))
    assert (meta["source_rows"], meta["skipped_rows"]) == (20000, 1)


def test_quotes_are_kept_literally(workdir, glue_dir):
    """GLUE text holds literal quotes; csv-style quoting would alter 421 QQP questions."""
    prepare_main("qqp", write_params(workdir, ["qqp"], glue_dir=str(glue_dir)))
    questions = pq.read_table(paths.prepared_split("qqp", "train")).column("text_a").to_pylist()
    raw = (glue_dir / "QQP" / "train.tsv").read_text().split("\n")[2:]  # header + malformed row
    expected = [line.split("\t")[3].strip() for line in raw if line]
    assert questions == expected
    assert sum('"' in q for q in questions) > 100


def test_outputs_are_byte_identical_across_runs(workdir, sample_glue_dir):
    params = write_params(workdir, ["mnli"], glue_dir=str(sample_glue_dir))
    prepare_main("mnli", params)
    first = {p.name: p.read_bytes() for p in paths.prepared_dir("mnli").iterdir()}
    prepare_main("mnli", params)
    assert {p.name: p.read_bytes() for p in paths.prepared_dir("mnli").iterdir()} == first


def test_glue_dir_env_is_used_when_param_is_null(workdir, sample_glue_dir, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(sample_glue_dir))
    prepare_main("sst2", write_params(workdir, ["sst2"], max_train_rows=10, max_eval_rows=5))
    assert pq.read_table(paths.prepared_split("sst2", "train")).num_rows == 10
    assert pq.read_table(paths.prepared_split("sst2", "dev")).num_rows == 5


# --------------------------------------------------------------------------- MNLI layout


def test_mnli_fixture_in_glue_layout(workdir):
    root = write_mnli_fixture(workdir / "glue")
    prepare_main("mnli", write_params(workdir, ["mnli"], glue_dir=str(root)))
    out = paths.prepared_dir("mnli")
    assert sorted(p.name for p in out.iterdir()) == [
        "dev_matched.parquet", "dev_mismatched.parquet", "train.parquet"]
    train = pq.read_table(out / "train.parquet").to_pylist()
    assert [r["label"] for r in train] == [0, 2, 1, 0]
    assert train[1]["text_a"] == 'He never said "yes".'
    assert train[1]["text_b"] == "He agreed loudly."
    assert pq.read_table(out / "dev_mismatched.parquet").num_rows == 3


# --------------------------------------------------------------------------- bad input


SST2 = get_task("sst2")


def prepare_tsv(text: str, max_bad_fraction: float):
    """prepare_split over a GLUE SST-2 train TSV held in memory."""
    rows = glue_tsv_rows(text, SST2, "x.tsv")
    return prepare_split(rows, SST2, SST2.train_split, "x.tsv", None, max_bad_fraction)


def test_malformed_rows_are_counted_and_skipped():
    tsv = "sentence\tlabel\ngood film\t1\ntoo\tmany\tfields\nbad label\t7\n\t0\nfine\t0\n"
    result = prepare_tsv(tsv, max_bad_fraction=0.8)
    assert result.table.column("idx").to_pylist() == [0, 4]
    assert [n for n, _ in result.bad_lines] == [3, 4, 5]
    assert "label '7' not in" in result.bad_lines[1][1]
    assert result.bad_lines[2][1] == "empty text"


def test_too_many_malformed_rows_fail():
    tsv = "sentence\tlabel\ngood\t1\nbad\n"
    with pytest.raises(PipelineError, match=r"1 of 2 rows malformed .*max_bad_fraction=0.1.*line 3"):
        prepare_tsv(tsv, max_bad_fraction=0.1)


def test_wrong_header_fails():
    with pytest.raises(
        PipelineError,
        match=r"^x.tsv: no column 'label' \(columns found: sentence, score\); is this the GLUE SST-2 train file\?$",
    ):
        prepare_tsv("sentence\tscore\nok\t1\n", 0.1)


def test_empty_split_fails():
    with pytest.raises(PipelineError, match="empty file"):
        prepare_tsv("", 0.1)
    with pytest.raises(PipelineError, match="x.tsv: empty split \\(no data rows\\)"):
        prepare_tsv("sentence\tlabel\n", 0.1)
    with pytest.raises(PipelineError, match="no usable rows"):
        prepare_tsv("sentence\tlabel\n\t1\n", 1.0)


def test_a_bad_split_leaves_earlier_outputs_untouched(workdir):
    root = workdir / "glue" / "SST-2"
    root.mkdir(parents=True)
    (root / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (root / "dev.tsv").write_text("sentence\tlabel\ngreat\t1\n")
    params = write_params(workdir, ["sst2"], glue_dir=str(workdir / "glue"))
    prepare_main("sst2", params)
    before = {p.name: p.read_bytes() for p in paths.prepared_dir("sst2").iterdir()}
    (root / "train.tsv").write_text("sentence\tlabel\nchanged\t1\nbad\t0\n")
    (root / "dev.tsv").write_text("sentence\tscore\ngreat\t1\n")  # wrong header
    with pytest.raises(PipelineError, match="no column 'label'"):
        prepare_main("sst2", params)
    assert {p.name: p.read_bytes() for p in paths.prepared_dir("sst2").iterdir()} == before
    assert sorted(p.name for p in paths.prepared_dir("sst2").parent.iterdir()) == ["sst2"]


def test_missing_file_fails(workdir):
    (workdir / "glue" / "SST-2").mkdir(parents=True)
    with pytest.raises(PipelineError, match=r"train.tsv: GLUE file not found \(expected the GLUE SST-2 layout\)"):
        prepare_main("sst2", write_params(workdir, ["sst2"], glue_dir=str(workdir / "glue")))
    assert not paths.prepared_dir("sst2").exists()


def write_sst2_dir(root: Path, glue_dir: Path, train_rows: int) -> Path:
    """SST-2 in the GLUE layout, as bytes: the first `train_rows` real training rows, and dev."""
    (root / "SST-2").mkdir(parents=True)
    for name, rows in (("train.tsv", train_rows), ("dev.tsv", 50)):
        lines = (glue_dir / "SST-2" / name).read_bytes().split(b"\n")[: rows + 1]
        (root / "SST-2" / name).write_bytes(b"\n".join(lines) + b"\n")
    return root


def test_a_byte_order_mark_is_not_part_of_the_header(workdir, sample_glue_dir):
    """The official MRPC TSVs start with a UTF-8 BOM; the header must still read `sentence`."""
    root = write_sst2_dir(workdir / "glue", sample_glue_dir, train_rows=20)
    train = root / "SST-2" / "train.tsv"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    prepare_main("sst2", write_params(workdir, ["sst2"], glue_dir=str(root)))
    assert pq.read_table(paths.prepared_split("sst2", "train")).num_rows == 20


def test_a_multi_megabyte_row_is_skipped_with_its_line(workdir, sample_glue_dir, caplog):
    root = write_sst2_dir(workdir / "glue", sample_glue_dir, train_rows=400)
    train = root / "SST-2" / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    lines.insert(100, b"an endless film " * 500_000 + b"\t0")  # 8 MB, file line 101
    train.write_bytes(b"\n".join(lines))
    prepare_main("sst2", write_params(workdir, ["sst2"], glue_dir=str(root), max_bad_fraction=0.01))
    why = "line 101: 7,999,999 characters, over data.max_text_chars=10000"
    assert f"skipped 1 malformed row(s): {why}" in caplog.text
    texts = pq.read_table(paths.prepared_split("sst2", "train")).column("text_a").to_pylist()
    assert len(texts) == 400 and max(map(len, texts)) <= 10_000


def test_missing_glue_dir_fails(workdir):
    with pytest.raises(PipelineError, match="data.glue_dir=.*no such directory"):
        prepare_main("sst2", write_params(workdir, ["sst2"], glue_dir=str(workdir / "nope")))


# --------------------------------------------------------------------------- download


@dataclasses.dataclass(frozen=True)
class ArchiveServer:
    url: str
    requests: list[str]  # paths asked for, in order


@pytest.fixture
def glue_server(tmp_path, sample_glue_dir, monkeypatch):
    """GLUE-style archives on 127.0.0.1, standing in for `data.download_url`.

    SST-2.zip holds real rows and, for the test, is registered as the official archive (its
    sha256 in the task table); QQP-clean.zip is not the official archive; MNLI.zip is absent.
    """
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "SST-2.zip", "w") as zf:
        for name in ("train.tsv", "dev.tsv"):
            lines = (sample_glue_dir / "SST-2" / name).read_text().split("\n")[:51]
            zf.writestr(f"SST-2/{name}", "\n".join(lines) + "\n")
    official = dataclasses.replace(TASKS["sst2"], archive_sha256=file_sha256(site / "SST-2.zip"))
    monkeypatch.setitem(TASKS, "sst2", official)
    (site / "QQP-clean.zip").write_text("a truncated or tampered download")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ArchiveServer(f"http://127.0.0.1:{server.server_address[1]}", requests)
    server.shutdown()


def test_download_fetches_verifies_and_caches_once(workdir, glue_server, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    cache = workdir / "cache"
    params = write_params(workdir, ["sst2"], download_url=glue_server.url, download_cache=str(cache))
    prepare_main("sst2", params)
    assert glue_server.requests == ["/SST-2.zip"]
    assert pq.read_table(paths.prepared_split("sst2", "train")).num_rows == 50
    assert sorted(p.name for p in cache.iterdir()) == ["SST-2"]  # unpacked; no archive, no debris
    shutil.rmtree(paths.prepared_dir("sst2"))
    prepare_main("sst2", params)  # the second run reads the cache: no request
    assert glue_server.requests == ["/SST-2.zip"]
    assert pq.read_table(paths.prepared_split("sst2", "dev")).num_rows == 50


def test_download_errors_are_one_line(workdir, glue_server, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    cache = workdir / "c"
    params = write_params(workdir, ["qqp"], download_url=glue_server.url, download_cache=str(cache))
    with pytest.raises(PipelineError, match="QQP-clean.zip: sha256 [0-9a-f]{64} is not that of the official"):
        prepare_main("qqp", params)
    assert list(cache.iterdir()) == []  # nothing kept from a download that failed its check
    params = write_params(workdir, ["mnli"], download_url=glue_server.url, download_cache=str(cache))
    with pytest.raises(PipelineError, match="cannot download .*MNLI.zip.*set GLUE_DIR"):
        prepare_main("mnli", params)


# --------------------------------------------------------------------------- CLI


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_help_lists_every_stage(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for stage in ("prepare", "teacher", "augment", "label", "student", "export", "evaluate", "report", "predict"):
        assert stage in result.stdout


@pytest.mark.parametrize(
    ("args", "setup", "message"),
    [
        (["prepare", "--task", "nope"], None, "error: unknown task 'nope'"),
        (["prepare", "--task", "sst2"], "no-params", "error: params.yaml: params file not found"),
        (["prepare", "--task", "sst2"], "bad-params", "error: params.yaml: data.max_bad_fraction"),
        (["prepare", "--task", "sst2"], "missing-file", "error: /"),
    ],
)
def test_cli_errors_are_one_line_with_exit_1(tmp_path, args, setup, message):
    if setup != "no-params":
        data = {"max_bad_fraction": 3} if setup == "bad-params" else {"glue_dir": str(tmp_path / "g")}
        (tmp_path / "g" / "SST-2").mkdir(parents=True)
        write_params(tmp_path, ["sst2"], configure=setup != "bad-params", **data)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line[:2].isdigit()]  # no log lines
    assert errors == [errors[0]] and errors[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "glue").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("yaml", "params.yaml line 2, column 1: expected ',' or ']', but got '<stream end>' (while parsing "
                 "a flow sequence from line 1, column 8); fix the YAML syntax"),
        ("latin1", "{sst2}/train.tsv line 4: not UTF-8 (byte 61: invalid continuation byte); "
                   "convert it, e.g. iconv -f latin1 -t utf-8"),
        ("directory", "{sst2}/dev.tsv: is a directory, not a GLUE file (expected the GLUE SST-2 layout)"),
    ],
)
def test_cli_bad_sources_are_one_line(tmp_path, case, message):
    sst2 = tmp_path / "g" / "SST-2"
    sst2.mkdir(parents=True)
    (sst2 / "train.tsv").write_bytes(
        b"sentence\tlabel\nit 's a charming journey \t1\na dull mess \t0\n"
        + ("caf\u00e9 society \t1\n".encode("latin-1" if case == "latin1" else "utf-8"))
    )
    if case == "directory":
        (sst2 / "dev.tsv").mkdir()
    else:
        (sst2 / "dev.tsv").write_text("sentence\tlabel\nfine \t1\n")
    write_params(tmp_path, ["sst2"], glue_dir=str(tmp_path / "g"))
    if case == "yaml":
        (tmp_path / "params.yaml").write_text("tasks: [sst2, qqp\n")
    result = run_cli("prepare", "--task", "sst2", cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if not line[:2].isdigit()]  # no log lines
    assert (result.returncode, errors) == (1, [f"error: {message.format(sst2=sst2)}"]), result.stderr
    assert not (tmp_path / "data" / "glue").exists()


# --------------------------------------------------------------------------- your own datasets

TICKETS = {
    "dir": "raw/tickets",
    "train": "train.csv",
    "dev": "dev.csv",
    "text": "body",
    "label": "queue",
    "labels": ["billing", "bug", "feature"],
}
TICKETS_TRAIN = 'id,body,queue\n1,"refund me, please",billing\n2,app crashes,bug\n3,add dark mode,feature\n'


def write_dataset(
    root: Path, files: dict[str, str | bytes], name: str = "tickets", data: dict | None = None, **declaration
) -> Path:
    """Raw files under root/raw/<name>/ and a params file declaring them; returns the params."""
    spec = {**TICKETS, "dir": f"raw/{name}", **declaration}
    for file, content in files.items():
        path = root / spec["dir"] / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump({"tasks": [name], "glue": [], "datasets": {name: spec}, "data": data or {}}))
    return configured(path)


def prepared_rows(task: str, split: str) -> list[dict]:
    return pq.read_table(paths.prepared_split(task, split)).to_pylist()


def test_a_csv_dataset_is_prepared_with_its_declared_classes(workdir):
    params = write_dataset(workdir, {"train.csv": TICKETS_TRAIN, "dev.csv": "id,body,queue\n9,it freezes,bug\n"})
    prepare_main("tickets", params)
    train = prepared_rows("tickets", "train")
    assert [(r["text_a"], r["label"]) for r in train] == [
        ("refund me, please", 0), ("app crashes", 1), ("add dark mode", 2)  # quoted comma kept
    ]
    assert prepared_rows("tickets", "dev") == [{"idx": 0, "text_a": "it freezes", "text_b": None, "label": 1}]
    meta = read_metadata(paths.prepared_split("tickets", "train"))
    assert meta["label_names"] == ["billing", "bug", "feature"]
    assert meta["source_file"] == "raw/tickets/train.csv"


def test_classes_are_inferred_from_train_in_a_stable_order(workdir):
    rows = [{"text": f"review {i}", "stars": stars} for i, stars in enumerate([10, 2, 10, 2])]
    pq.write_table(pa.Table.from_pylist(rows), workdir / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:2]), workdir / "dev.parquet")
    params = write_dataset(
        workdir,
        {f: (workdir / f).read_bytes() for f in ("train.parquet", "dev.parquet")},
        name="reviews", train="train.parquet", dev="dev.parquet", text="text", label="stars", labels="infer",
    )
    prepare_main("reviews", params)
    assert read_metadata(paths.prepared_split("reviews", "dev"))["label_names"] == ["2", "10"]  # numeric order
    assert [r["label"] for r in prepared_rows("reviews", "train")] == [1, 0, 1, 0]


def test_a_jsonl_pair_dataset_skips_bad_lines_and_reports_them(workdir, caplog):
    good = [json.dumps({"q1": f"question {i}", "q2": f"other {i}", "dup": i % 2}) for i in range(8)]
    lines = [*good[:4], "{not json", json.dumps({"q1": "one side", "q2": "", "dup": 1}), *good[4:]]
    params = write_dataset(
        workdir,
        {"train.jsonl": "\n".join(lines) + "\n", "dev.jsonl": "\n".join(good[:2]) + "\n"},
        name="pairs", train="train.jsonl", dev="dev.jsonl", text="q1", text_pair="q2", label="dup",
        labels=["0", "1"], data={"max_bad_fraction": 0.5},
    )
    prepare_main("pairs", params)
    assert [r["text_b"] for r in prepared_rows("pairs", "train")][:2] == ["other 0", "other 1"]
    assert "line 5: not JSON" in caplog.text and "line 6: empty text (second side)" in caplog.text


@pytest.mark.parametrize(
    ("files", "declaration", "message"),
    [
        (
            {"train.csv": "id,body,category\n1,x,bug\n", "dev.csv": "id,body,queue\n"},
            {},
            r"raw/tickets/train.csv: no column 'queue' \(columns found: id, body, category\); "
            r"fix the file or datasets.tickets.text/text_pair/label$",
        ),
        (
            {"train.csv": TICKETS_TRAIN + "4,wrong,biling\n" * 3, "dev.csv": "id,body,queue\n1,x,bug\n"},
            {},
            r"3 of 6 rows malformed .*line 5: label 'biling' not in \('billing', 'bug', 'feature'\)",
        ),
        (
            {"train.csv": "id,body,queue\n1,a,billing\n2,b,bug\n", "dev.csv": "id,body,queue\n1,x,bug\n"},
            {},
            r"train.csv: no training row of class\(es\) 'feature'; add rows of every class to train, or drop the class from datasets.tickets.labels$",
        ),
        (
            {"train.csv": TICKETS_TRAIN, "dev.csv": "id,body,queue\n"},
            {},
            r"dev.csv: empty split \(no data rows\)",
        ),
        (
            {"train.parquet": b"not parquet at all", "dev.csv": "id,body,queue\n1,x,bug\n"},
            {"train": "train.parquet"},
            r"train.parquet: not a readable Parquet file",
        ),
        (
            {"train.txt": TICKETS_TRAIN, "dev.csv": "id,body,queue\n1,x,bug\n"},
            {"train": "train.txt"},
            r"raw/tickets/train.txt: cannot tell its format from the extension; .*datasets.tickets.format",
        ),
        (
            {"train.csv": TICKETS_TRAIN},
            {},
            r"raw/tickets/dev.csv: data file not found \(datasets.tickets.dev names it\)",
        ),
    ],
    ids=["missing-column", "unknown-label", "class-absent", "empty-split", "unreadable", "extension", "missing-file"],
)
def test_bad_data_fails_in_one_line_before_anything_is_written(workdir, files, declaration, message):
    params = write_dataset(workdir, files, **declaration)
    with pytest.raises(PipelineError, match=message) as failure:
        prepare_main("tickets", params)
    assert "\n" not in str(failure.value)
    assert not paths.prepared_dir("tickets").exists()


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"sst2": TICKETS}, "datasets.sst2: the name of a built-in GLUE task"),
        ({"Tickets": TICKETS}, "datasets.Tickets: task names are lowercase"),
        ({"tickets": {**TICKETS, "labels": ["a", "a"]}}, r"labels: \['a', 'a'\] names a class twice"),
        ({"tickets": {**TICKETS, "metrics": ["f1"]}}, "f1 scores one class; name it in positive_label"),
        ({"tickets": {**TICKETS, "positive_label": "spam"}}, "positive_label: 'spam' is not one of labels"),
        ({"tickets": {**TICKETS, "format": "xlsx"}}, "datasets.tickets.format: Input should be"),
        ({"tickets": {k: v for k, v in TICKETS.items() if k != "label"}}, "datasets.tickets.label: Field required"),
        ({"x_speed": TICKETS}, "datasets.x_speed: task names are lowercase letters, digits and _, not ending in _speed"),
        ({"model": TICKETS}, "datasets.model: the name of a key of teacher"),
        ({"tickets": {**TICKETS, "metrics": ["accuracy", "accuracy"]}}, "names a metric twice"),
    ],
)
def test_bad_declarations_fail_at_load(datasets, message):
    with pytest.raises(PipelineError, match=message):
        parse_params({"tasks": list(datasets), "glue": [], "datasets": datasets})


def test_integer_classes_may_be_written_unquoted():
    spec = {**TICKETS, "labels": [0, 1], "metrics": ["f1"], "positive_label": 0}
    task = parse_params({"tasks": ["t"], "glue": [], "datasets": {"t": spec}}).task("t")
    assert (task.label_names, task.positive_class) == (("0", "1"), 0)


# --------------------------------------------------------------------------- the other GLUE tasks

GLUE_FIXTURES = {  # task: (train.tsv as the official files lay it out, expected (text_a, text_b, label))
    "cola": ("gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
             [("Our friends won't buy this analysis.", None, 1), ("They drank the pub.", None, 0)]),
    "mrpc": ("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"yes\" .\tHe agreed .\n"
             "0\t3\t4\tIt rained .\tIt was sunny .\n",
             [('He said "yes" .', "He agreed .", 1), ("It rained .", "It was sunny .", 0)]),
    "qnli": ("index\tquestion\tsentence\tlabel\n0\tWho wrote it?\tShe wrote it.\tentailment\n"
             "1\tWhen?\tIt is blue.\tnot_entailment\n",
             [("Who wrote it?", "She wrote it.", 0), ("When?", "It is blue.", 1)]),
    "rte": ("index\tsentence1\tsentence2\tlabel\n0\tA cat sat.\tAn animal sat.\tentailment\n"
            "1\tA cat sat.\tA dog ran.\tnot_entailment\n",
            [("A cat sat.", "An animal sat.", 0), ("A cat sat.", "A dog ran.", 1)]),
    "wnli": ("index\tsentence1\tsentence2\tlabel\n0\tI put the cake away.\tThe cake was away.\t1\n"
             "1\tThe trophy did not fit.\tThe case did not fit.\t0\n",
             [("I put the cake away.", "The cake was away.", 1), ("The trophy did not fit.", "The case did not fit.", 0)]),
}


@pytest.mark.parametrize("task", sorted(GLUE_FIXTURES))
def test_the_other_glue_tasks_read_their_official_layout(workdir, task):
    """CoLA's files have no header, MRPC's start with a byte-order mark, WNLI spells its
    classes 0/1 with 1 = entailment (class 1 in Hugging Face's order, unlike RTE and QNLI)."""
    train, expected = GLUE_FIXTURES[task]
    root = workdir / "glue" / get_task(task).source_dir
    root.mkdir(parents=True)
    for split in ("train", "dev"):
        (root / f"{split}.tsv").write_text(train)
    prepare_main(task, write_params(workdir, [task], glue_dir=str(workdir / "glue")))
    rows = prepared_rows(task, "train")
    assert [(r["text_a"], r["text_b"], r["label"]) for r in rows] == expected
    assert read_metadata(paths.prepared_split(task, "dev"))["label_names"] == list(get_task(task).label_names)


def test_typed_and_unusual_values_read_as_written(workdir):
    """Parquet floats and booleans read as written (1.0 is "1"); a JSON string may hold a
    Unicode line break; a TSV of your own is read like GLUE's, quotes and all."""
    rows = [{"t": 'a "quoted" one', "y": 1.0}, {"t": "b", "y": 0.0}, {"t": "c", "y": None}]
    pq.write_table(pa.Table.from_pylist(rows), workdir / "train.parquet")
    jsonl = json.dumps({"t": "line\u2028break", "y": 1}) + "\n" + json.dumps({"t": "other", "y": 0}) + "\n"
    tsv = 't\ty\n"quoted" start\t1\nplain\t0\n'
    params = write_dataset(
        workdir,
        {"train.parquet": (workdir / "train.parquet").read_bytes(), "dev.jsonl": jsonl, "test.tsv": tsv},
        name="typed", train="train.parquet", dev="dev.jsonl", test="test.tsv", text="t", label="y",
        labels="infer", data={"max_bad_fraction": 0.5},
    )
    prepare_main("typed", params)
    assert read_metadata(paths.prepared_split("typed", "train"))["label_names"] == ["0", "1"]
    assert [r["label"] for r in prepared_rows("typed", "train")] == [1, 0]  # the null label: skipped
    assert prepared_rows("typed", "dev")[0]["text_a"] == "line\u2028break"
    assert prepared_rows("typed", "test")[0]["text_a"] == '"quoted" start'


def test_values_of_the_wrong_type_are_malformed_rows_not_their_python_spelling(workdir, caplog):
    """A JSON or Parquet text that is a list, an object or a number, and a label that is a list
    or an object, would otherwise be trained on as "['a', 'b']": each is a malformed row,
    reported with its line, and a label of that kind never becomes a class."""
    good = [json.dumps({"t": f"text {i}", "y": ["a", "b"][i % 2]}) for i in range(8)]
    bad = [json.dumps({"t": ["a", "list"], "y": "a"}), json.dumps({"t": {"an": "object"}, "y": "b"}),
           json.dumps({"t": 5, "y": "a"}), json.dumps({"t": "fine text", "y": ["a"]}),
           json.dumps({"t": "fine text", "y": {"c": 1}})]
    dev = "\n".join(good[:2]) + "\n"
    params = write_dataset(
        workdir, {"train.jsonl": "\n".join([*good, *bad]) + "\n", "dev.jsonl": dev},
        name="typed", train="train.jsonl", dev="dev.jsonl", text="t", label="y", labels="infer",
        data={"max_bad_fraction": 0.5},
    )
    prepare_main("typed", params)
    assert read_metadata(paths.prepared_split("typed", "train"))["label_names"] == ["a", "b"]
    assert [r["text_a"] for r in prepared_rows("typed", "train")] == [f"text {i}" for i in range(8)]
    for why in ("line 9: text 't' is a list, not a string", "line 10: text 't' is an object, not a string",
                "line 11: text 't' is a number, not a string", "line 12: label 'y' is a list, not a string or a number",
                "line 13: label 'y' is an object, not a string or a number"):
        assert why in caplog.text, why
    # A Parquet column is one type: a column of lists leaves no usable row
    pq.write_table(pa.Table.from_pylist([{"t": ["x", "y"], "y": "a"}, {"t": ["z"], "y": "b"}]), workdir / "dev.parquet")
    params = write_dataset(
        workdir, {"train.jsonl": "\n".join(good) + "\n", "dev.parquet": (workdir / "dev.parquet").read_bytes()},
        name="typed", train="train.jsonl", dev="dev.parquet", text="t", label="y", labels="infer",
    )
    with pytest.raises(PipelineError, match=r"dev.parquet: no usable rows \(2 data rows, all malformed or empty; line 2: text 't' is a list, not a string\)$"):
        prepare_main("typed", params)


def test_a_row_of_more_tokens_than_data_max_tokens_is_malformed(workdir, sample_glue_dir, caplog):
    """With data.max_text_chars raised, a long row still cannot cost the student more LSTM
    steps than data.max_tokens: it is skipped with its line, counted as the student splits it."""
    root = write_sst2_dir(workdir / "glue", sample_glue_dir, train_rows=400)
    train = root / "SST-2" / "train.tsv"
    lines = train.read_bytes().split(b"\n")
    lines.insert(100, b"a long, long film " * 800 + b"\t0")  # 14,400 chars, 4,000 tokens ("," splits off)
    lines.insert(200, b"word " * 1990 + b"\t1")  # 1,990 tokens: kept
    train.write_bytes(b"\n".join(lines))
    params = write_params(workdir, ["sst2"], glue_dir=str(root), max_bad_fraction=0.01, max_text_chars=100_000)
    prepare_main("sst2", params)
    assert "skipped 1 malformed row(s): line 101: 4,000 tokens, over data.max_tokens=2000" in caplog.text
    texts = pq.read_table(paths.prepared_split("sst2", "train")).column("text_a").to_pylist()
    assert len(texts) == 401 and max(len(t.split()) for t in texts) == 1990


@pytest.mark.parametrize(
    ("files", "declaration", "message"),
    [
        ({"train.csv": "body,body,queue\nx,y,bug\n", "dev.csv": "body,queue\nx,bug\n"}, {},
         "column 'body' is named twice in the header"),
        ({"train.csv": "body,queue\na,1\nb,01\n", "dev.csv": "body,queue\nx,1\n"}, {"labels": "infer"},
         "labels '01' and '1' are one number spelled two ways"),
        ({"train.csv": "body,queue\na,x\nb,y\n", "dev.csv": "body,queue\nx,x\n"},
         {"labels": "infer", "metrics": ["f1"], "positive_label": "z"},
         r"datasets.tickets.positive_label: 'z' is not one of the classes \['x', 'y'\]"),
        ({"train.csv": "body,queue\na,x\nb,y\nc,z\n", "dev.csv": "body,queue\nx,x\n"},
         {"labels": "infer", "metrics": ["f1"]}, "f1 scores one class of"),
        ({"train.csv": "body,queue\na,x\n,y\n", "dev.csv": "body,queue\nx,x\n"}, {"labels": "infer"},
         r"labels \['x'\] in column 'queue': a classifier needs at least two classes"),  # y's row is unusable
    ],
    ids=["repeated-column", "two-spellings", "positive-label", "f1-of-what", "one-usable-class"],
)
def test_inferred_classes_are_checked_before_anything_is_written(workdir, files, declaration, message):
    params = write_dataset(workdir, files, **declaration)
    with pytest.raises(PipelineError, match=message):
        prepare_main("tickets", params)
    assert not paths.prepared_dir("tickets").exists()


def test_a_class_lost_to_max_train_rows_names_the_setting(workdir):
    train = "id,body,queue\n" + "".join(f"{i},text {i},{'bug' if i < 5 else 'billing'}\n" for i in range(10))
    params = write_dataset(workdir, {"train.csv": train, "dev.csv": "id,body,queue\n1,x,bug\n"},
                           labels=["billing", "bug"], data={"max_train_rows": 5})
    with pytest.raises(PipelineError, match="no training row of class.*'billing'; data.max_train_rows=5 keeps too few"):
        prepare_main("tickets", params)
