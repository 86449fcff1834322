"""The one task table: everything the pipeline knows about a GLUE task lives here.

Adding another GLUE classification task (RTE, MRPC, ...) is one more `TaskSpec` entry in
`TASKS`; no stage has task-specific code. Label ids follow the Hugging Face GLUE convention
end to end (METHOD.md §0.10), so teacher, transfer set and student always agree.

The archives' sha256 values are those Hugging Face `datasets` recorded for the same URLs
(`datasets/glue/dataset_infos.json`, `download_checksums`); MNLI.zip's also matches a Git LFS
pointer noted in ../shared/glue/SOURCES.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class SplitSpec:
    """One split of a task as it lies in the classic `glue_data/<TASK>/` layout."""

    name: str  # name of the Parquet file we write: data/glue/<task>/<name>.parquet
    file: str  # TSV file name in the GLUE directory
    labelled: bool = True  # unlabelled splits (GLUE test) get label -1
    required: bool = True  # optional splits (test, MNLI dev_mismatched) are written only when present
    metric_suffix: str = ""  # appended to metric keys, e.g. "_mm" for MNLI mismatched


@dataclass(frozen=True)
class TaskSpec:
    name: str  # our id: sst2, qqp, mnli
    glue_dir: str  # directory name in glue_data/: SST-2, QQP, MNLI
    archive: str  # zip name of the official GLUE distribution
    archive_sha256: str  # of that zip; a download with other bytes is refused
    text_a: str  # TSV column of the first sentence
    text_b: str | None  # TSV column of the second sentence (None: single-sentence task)
    label_column: str
    label_names: tuple[str, ...]  # index i is class id i (HF GLUE convention)
    raw_labels: tuple[str, ...]  # how class i is spelled in the TSV
    splits: tuple[SplitSpec, ...]
    metrics: tuple[str, ...]  # "accuracy", "f1" (F1 of class 1)
    hub_config: str = ""  # config name in the HF hub dataset nyu-mll/glue

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

    def split(self, name: str) -> SplitSpec:
        for spec in self.splits:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.splits)
        raise PipelineError(f"task {self.name!r} has no split {name!r} (known: {known})")

    def label_index(self, raw: str) -> int | None:
        """Class id of a raw TSV label, or None when the value is not a label of this task."""
        try:
            return self.raw_labels.index(raw)
        except ValueError:
            return None


_TRAIN = SplitSpec("train", "train.tsv")
_DEV = SplitSpec("dev", "dev.tsv")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2",
            glue_dir="SST-2",
            archive="SST-2.zip",
            archive_sha256="d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
            text_a="sentence",
            text_b=None,
            label_column="label",
            label_names=("negative", "positive"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, SplitSpec("test", "test.tsv", labelled=False, required=False)),
            metrics=("accuracy",),
            hub_config="sst2",
        ),
        TaskSpec(
            name="qqp",
            glue_dir="QQP",
            archive="QQP-clean.zip",
            archive_sha256="40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
            text_a="question1",
            text_b="question2",
            label_column="is_duplicate",
            label_names=("not_duplicate", "duplicate"),
            raw_labels=("0", "1"),
            splits=(_TRAIN, _DEV, SplitSpec("test", "test.tsv", labelled=False, required=False)),
            metrics=("accuracy", "f1"),
            hub_config="qqp",
        ),
        TaskSpec(
            name="mnli",
            glue_dir="MNLI",
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
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by id, failing with the list of known ids."""
    try:
        return TASKS[name]
    except KeyError:
        known = ", ".join(sorted(TASKS))
        raise PipelineError(
            f"unknown task {name!r}: known tasks are {known} (add one in pipeline/tasks.py)"
        ) from None
