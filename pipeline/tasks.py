"""What the pipeline knows about a task: one `TaskSpec` per task, built-in or declared.

The GLUE classification tasks are built in below. Your own tasks are declared as data in
`params.yaml` under `datasets` (pipeline/params.py turns each declaration into a `TaskSpec`
of the same shape; docs/own-data.md), so no stage has task-specific code and adding a
task never touches Python. Label ids follow the Hugging Face GLUE convention end to end
(METHOD.md §0.10), so teacher, transfer set and student always agree.

A task also carries what the report says about it: its official split sizes, the published
scores to print beside ours (and a peer's ablation beside our ablation arms), and notes on
known copies of its data.

The archives' sha256 values are those Hugging Face `datasets` recorded for the same URLs
(`datasets/glue/dataset_infos.json`, `download_checksums`); MNLI.zip's also matches a Git LFS
pointer noted in ../shared/glue/SOURCES.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

from pipeline.errors import PipelineError

Metric = Literal["accuracy", "f1", "macro_f1", "matthews"]
# How a split file is read: TSV split on tabs with no quoting, as GLUE's (its text holds
# literal quotes, DESIGN.md §7); CSV with standard quoting; one JSON object per line; Parquet.
Format = Literal["tsv", "csv", "jsonl", "parquet"]
EXTENSION_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
Column = str | int  # a column name, or its 0-based position in a file without a header row


@dataclass(frozen=True)
class SplitSpec:
    """One split of a task: which file holds it and what is measured on it."""

    name: str  # name of the Parquet file we write: data/glue/<task>/<name>.parquet
    file: str  # file inside the task's source directory
    labelled: bool = True  # unlabelled splits (GLUE test) get label -1
    required: bool = True  # optional splits (test, MNLI dev_mismatched) are written only when present
    metric_suffix: str = ""  # appended to metric keys, e.g. "_mm" for MNLI mismatched


@dataclass(frozen=True)
class PublishedScores:
    """One published model's scores on a task, as printed (percent), keyed by metric key."""

    model: str
    source: str
    evaluated_on: str  # "GLUE test" or "GLUE dev"
    scores: Mapping[str, str]  # an ablation's (`published_ablation`): keyed by arm name instead


@dataclass(frozen=True)
class TaskSpec:
    name: str  # our id: sst2, qqp, mnli, or the name a dataset is declared under
    title: str  # how the report names it: SST-2, QQP, or the declared title
    source_dir: str  # GLUE: directory under the GLUE root (SST-2); declared: the raw-data directory
    text_a: Column  # column of the first sentence
    text_b: Column | None  # column of the second sentence (None: single-sentence task)
    label_column: Column
    label_names: tuple[str, ...]  # index i is class id i; () until prepare infers them from train
    raw_labels: tuple[str, ...]  # how class i is spelled in the source files
    splits: tuple[SplitSpec, ...]
    metrics: tuple[Metric, ...]  # the first, on the first eval split, selects the best epoch
    positive_label: str | None = None  # the class `f1` scores; None: class 1 (QQP's duplicate)
    format: Format | None = "tsv"  # None: from each file's extension
    header: bool = True  # False: columns are positions (CoLA's train and dev files)
    builtin: bool = True
    archive: str | None = None  # zip name of the official GLUE distribution (None: no download)
    archive_sha256: str | None = None  # of that zip; a download with other bytes is refused
    hub_config: str = ""  # config name in the HF hub dataset nyu-mll/glue
    description: str = ""  # where the data comes from, for the report
    official_rows: Mapping[str, int] = field(default_factory=dict)  # split -> official size
    published: tuple[PublishedScores, ...] = ()
    # A peer's ablation, its primary metric per arm of metrics/evaluate/<task>_ablation.json.
    published_ablation: PublishedScores | None = None
    source_notes: Mapping[str, str] = field(default_factory=dict)  # train file sha256 -> note

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None

    @property
    def train_split(self) -> SplitSpec:
        return self.split("train")

    @property
    def eval_splits(self) -> tuple[SplitSpec, ...]:
        """Labelled splits other than train: where dev metrics are measured."""
        return tuple(s for s in self.splits if s.labelled and s.name != "train")

    @property
    def positive_class(self) -> int:
        """Class id of the class `f1` scores."""
        return 1 if self.positive_label is None else self.label_names.index(self.positive_label)

    @property
    def infers_labels(self) -> bool:
        return not self.label_names

    def split(self, name: str) -> SplitSpec:
        for spec in self.splits:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.splits)
        raise PipelineError(f"task {self.name!r} has no split {name!r} (known: {known})")

    def label_index(self, raw: str) -> int | None:
        """Class id of a raw label, or None when the value is not a label of this task."""
        try:
            return self.raw_labels.index(raw)
        except ValueError:
            return None

    # What only the report reads, and what only prepare reads (where the files are and how
    # to read them). configure writes the task twice: `source.json` for prepare, with the
    # source fields, and `task.json` for the stages after it, without: converting a CSV to
    # Parquet or moving the raw directory gives the same prepared data and reruns no model.
    REPORT_FIELDS: ClassVar[tuple[str, ...]] = (
        "title",
        "description",
        "official_rows",
        "published",
        "published_ablation",
        "source_notes",
    )
    SOURCE_FIELDS: ClassVar[tuple[str, ...]] = ("source_dir", "format", "header", "archive", "archive_sha256", "hub_config")

    def to_dict(self, with_source: bool) -> dict[str, Any]:
        """What the stages read of the task: prepare (`with_source`), or those after it."""
        dropped = self.REPORT_FIELDS + ((), self.SOURCE_FIELDS)[not with_source]
        return {k: v for k, v in asdict(self).items() if k not in dropped}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        """The inverse of `to_dict` (fields it leaves out get their defaults; title the name)."""
        return cls(
            **{
                "source_dir": "",
                **data,
                "title": data["name"],
                "label_names": tuple(data["label_names"]),
                "raw_labels": tuple(data["raw_labels"]),
                "metrics": tuple(data["metrics"]),
                "splits": tuple(SplitSpec(**split) for split in data["splits"]),
            }
        )

    def with_labels(self, names: tuple[str, ...]) -> TaskSpec:
        """This task with its classes known (inferred from train, spelled as in the files)."""
        return replace(self, label_names=names, raw_labels=names)

    def split_format(self, split: SplitSpec) -> Format:
        """How `split`'s file is read: the declared format, else its extension's."""
        if self.format is not None:
            return self.format
        suffix = "." + split.file.rsplit(".", 1)[-1].lower() if "." in split.file else ""
        try:
            return EXTENSION_FORMATS[suffix]  # type: ignore[return-value]
        except KeyError:
            raise PipelineError(
                f"{self.source_dir}/{split.file}: cannot tell its format from the extension; "
                f"name it .csv/.tsv/.jsonl/.parquet or set datasets.{self.name}.format"
            ) from None


# --------------------------------------------------------------------------- built-in GLUE

_TRAIN = SplitSpec("train", "train.tsv")
_DEV = SplitSpec("dev", "dev.tsv")
_TEST = SplitSpec("test", "test.tsv", labelled=False, required=False)
_NLI = ("entailment", "not_entailment")

_TANG = "Tang et al. 2019, Table 1 (METHOD.md §2.1)"  # rows confirmed by two or more sources [P✓]
_PADDLE = "PaddlePaddle/PaddleNLP examples/model_compression/distill_lstm (METHOD.md §2.4)"
_DSINDEX = "dsindex/distil-bilstm README (METHOD.md §2.4)"
_BERT_LARGE = "BERT-large (Devlin et al.)"
_SOFT = "BiLSTM_SOFT, distilled (paper)"
_PLAIN = "BiLSTM, no distillation (paper)"


def _paper(bert: dict[str, str], soft: dict[str, str], plain: dict[str, str]) -> tuple[PublishedScores, ...]:
    """The paper's Table 1 (GLUE test) for one task."""
    return tuple(
        PublishedScores(model, _TANG, "GLUE test", scores)
        for model, scores in ((_BERT_LARGE, bert), (_SOFT, soft), (_PLAIN, plain))
    )


def _peers(source: str, who: str, teacher: str, rows: tuple[dict[str, str], ...]) -> tuple[PublishedScores, ...]:
    """A public re-implementation's GLUE dev rows: teacher, distilled, no distillation."""
    models = (f"{who}: {teacher} teacher", f"{who}: BiLSTM distilled", f"{who}: BiLSTM, no distillation")
    return tuple(PublishedScores(m, source, "GLUE dev", s) for m, s in zip(models, rows, strict=True))


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2",
            title="SST-2",
            source_dir="SST-2",
            archive="SST-2.zip",
            archive_sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
            text_a="sentence",
            text_b=None,
            label_column="label",
            label_names=("negative", "positive"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("accuracy",),
            hub_config="sst2",
            official_rows={"train": 67_349, "dev": 872},
            published=(
                *_paper({"eval_accuracy": "94.9"}, {"eval_accuracy": "90.7"}, {"eval_accuracy": "86.7"}),
                *_peers(
                    _PADDLE,
                    "PaddleNLP",
                    "bert-base-uncased",
                    ({"eval_accuracy": "93.00"}, {"eval_accuracy": "88.76"}, {"eval_accuracy": "85.44"}),
                ),
                *_peers(
                    _DSINDEX,
                    "dsindex",
                    "bert-large-uncased",
                    ({"eval_accuracy": "93.00"}, {"eval_accuracy": "88.63"}, {"eval_accuracy": "82.32"}),
                ),
            ),
            # dsindex's three students differ in their training data and loss alone (METHOD.md
            # §2.3); the same README's rows as `published` prints them (§2.4).
            published_ablation=PublishedScores(
                "BERT-large teacher (93.00), BiLSTM H 300 / F 400 student with fastText vectors, Adam, 3 epochs",
                "dsindex/distil-bilstm README (METHOD.md §2.3)",
                "GLUE dev",
                {"baseline": "82.32", "soft_only": "84.39", "distilled": "88.63"},
            ),
            source_notes={
                "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1": "the official GLUE SST-2 files."
            },
        ),
        TaskSpec(
            name="qqp",
            title="QQP",
            source_dir="QQP",
            archive="QQP-clean.zip",
            archive_sha256="40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
            text_a="question1",
            text_b="question2",
            label_column="is_duplicate",
            label_names=("not_duplicate", "duplicate"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("accuracy", "f1"),
            hub_config="qqp",
            official_rows={"train": 363_846, "dev": 40_430},
            published=(
                *_paper(
                    {"eval_accuracy": "89.3", "eval_f1": "72.1"},
                    {"eval_accuracy": "88.1", "eval_f1": "68.2"},
                    {"eval_accuracy": "86.2", "eval_f1": "63.7"},
                ),
                *_peers(
                    _PADDLE,
                    "PaddleNLP",
                    "bert-base-uncased",
                    (
                        {"eval_accuracy": "90.58", "eval_f1": "87.35"},
                        {"eval_accuracy": "87.52", "eval_f1": "83.13"},
                        {"eval_accuracy": "85.66", "eval_f1": "79.97"},
                    ),
                ),
            ),
            source_notes={
                "b8a0265f35f88bc4603c8f9c8732308a4f9c087cf8278ae17e9317c734eb3b69": (
                    "a real 23,497-pair excerpt of the official QQP *training* split (20,000 train / 3,497 dev): "
                    "its dev scores are not comparable with published QQP dev numbers."
                )
            },
        ),
        TaskSpec(
            name="mnli",
            title="MNLI",
            source_dir="MNLI",
            archive="MNLI.zip",
            archive_sha256="e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
            text_a="sentence1",
            text_b="sentence2",
            label_column="gold_label",
            label_names=("entailment", "neutral", "contradiction"),
            raw_labels=("entailment", "neutral", "contradiction"),
            splits=(
                _TRAIN,
                SplitSpec("dev_matched", "dev_matched.tsv"),
                # Optional: scored when present (official GLUE), reported as not available
                # when absent (the reduced MNLI rows in ../shared/glue have none).
                SplitSpec("dev_mismatched", "dev_mismatched.tsv", required=False, metric_suffix="_mm"),
                SplitSpec("test_matched", "test_matched.tsv", labelled=False, required=False),
                SplitSpec(
                    "test_mismatched",
                    "test_mismatched.tsv",
                    labelled=False,
                    required=False,
                    metric_suffix="_mm",
                ),
            ),
            metrics=("accuracy",),
            hub_config="mnli",
            official_rows={"train": 392_702, "dev_matched": 9_815, "dev_mismatched": 9_832},
            published=_paper(
                {"eval_accuracy": "86.7", "eval_accuracy_mm": "85.9"},
                {"eval_accuracy": "73.0", "eval_accuracy_mm": "72.6"},
                {"eval_accuracy": "68.7", "eval_accuracy_mm": "68.3"},
            ),
            source_notes={
                "e524f07ab4eac83817d2a03a9a845e868419f8c994b08355da6b30433381ce75": (
                    "the complete official dev_matched set and 75,571 real MultiNLI training pairs (a fifth of "
                    "GLUE's train, label-balanced), without dev_mismatched: trained on a fifth of the data with "
                    "balanced labels, so not comparable with published MNLI-m numbers."
                )
            },
        ),
        TaskSpec(
            name="cola",
            title="CoLA",
            source_dir="CoLA",
            archive="CoLA.zip",
            archive_sha256="f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
            # train.tsv and dev.tsv have no header: source, label, original label, sentence.
            # (test.tsv has a header row, "index sentence", so it is left out.)
            text_a=3,
            text_b=None,
            label_column=1,
            header=False,
            label_names=("unacceptable", "acceptable"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV),
            metrics=("matthews",),
            hub_config="cola",
            official_rows={"train": 8_551, "dev": 1_043},
        ),
        TaskSpec(
            name="mrpc",
            title="MRPC",
            source_dir="MRPC",
            # GLUE's MRPC is built from the MSR Paraphrase Corpus by GLUE's download script;
            # there is no archive to fetch, so point $GLUE_DIR at a glue_data/ that has MRPC/.
            text_a="#1 String",
            text_b="#2 String",
            label_column="Quality",
            label_names=("not_equivalent", "equivalent"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("f1", "accuracy"),
            hub_config="mrpc",
            official_rows={"train": 3_668, "dev": 408},
        ),
        TaskSpec(
            name="qnli",
            title="QNLI",
            source_dir="QNLI",
            archive="QNLIv2.zip",
            archive_sha256="e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
            text_a="question",
            text_b="sentence",
            label_column="label",
            label_names=_NLI,
            raw_labels=_NLI,
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("accuracy",),
            hub_config="qnli",
            official_rows={"train": 104_743, "dev": 5_463},
        ),
        TaskSpec(
            name="rte",
            title="RTE",
            source_dir="RTE",
            archive="RTE.zip",
            archive_sha256="6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee",
            text_a="sentence1",
            text_b="sentence2",
            label_column="label",
            label_names=_NLI,
            raw_labels=_NLI,
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("accuracy",),
            hub_config="rte",
            official_rows={"train": 2_490, "dev": 277},
        ),
        TaskSpec(
            name="wnli",
            title="WNLI",
            source_dir="WNLI",
            archive="WNLI.zip",
            archive_sha256="ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46",
            text_a="sentence1",
            text_b="sentence2",
            label_column="label",
            label_names=("not_entailment", "entailment"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, _TEST),
            metrics=("accuracy",),
            hub_config="wnli",
            official_rows={"train": 635, "dev": 71},
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a built-in task up by id, failing with the list of known ids."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise PipelineError(
            f"unknown task {name!r}: built-in tasks are {known}; declare your own under `datasets` "
            "in params.yaml (docs/own-data.md)"
        ) from None
