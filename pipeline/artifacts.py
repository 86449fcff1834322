"""Artifacts written whole and read checked: the one place every stage saves and loads through.

Writing: `atomic_path` builds an output (file or directory) in a temporary sibling and swaps
it in at the end, so at every instant the path holds the complete old output or the complete
new one, whatever kills the process and when (tests/test_artifacts.py kills a save at each of
its steps). A directory is swapped in one atomic step where the OS can (Linux
`renameat2(RENAME_EXCHANGE)`); elsewhere the old one is moved aside into the temporary, the
new one moved in, and the old deleted, and a save killed between the two moves is undone by
the next write or read of that path, which moves the old output back.

Reading: `reading` turns whatever a damaged artifact raises (a truncated Parquet, safetensors
or ONNX file, an empty JSON, a file of another format) into one `error:` line naming the
file, what is wrong and how to get a good copy back: `dvc checkout <stage>` when DVC's cache
holds the recorded output, else `dvc repro <stage>` (`restore_hint`). Stage code checks the
facts of what it read (a column, a label count) and raises `damaged` for a wrong one.

Standard library only: the serving runtime (`pipeline.serve`) reads exports through it.
"""

from __future__ import annotations

import configparser
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.paths import producing_stage

PARKED = "previous"  # inside a temporary: the old output, moved aside while the new one moves in
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


# --------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; swap it in for `path` only if the body succeeds.

    Works for files and directories. The old `path` stays untouched until the swap. The
    temporary lives in a sibling directory `.<name>.<8 hex digits>.tmp` (ignored by git and
    DVC). A process killed mid-write cannot remove it, so each write first recovers from those
    that earlier writes of the same `path` left (`recover_interrupted_write`): one process
    writes an output at a time (DVC's repo lock; under torchrun only the leader saves), so any
    that exists is debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    temporary.mkdir()
    new = temporary / path.name
    try:
        yield new
        _swap_in(new, path, temporary / PARKED)
    finally:
        _discard(temporary, path)


def _swap_in(new: Path, path: Path, parked: Path) -> None:
    """Put `new` at `path`; the old output ends inside the temporary, deleted with it."""
    old_is_dir = path.is_dir() and not path.is_symlink()
    if old_is_dir and new.is_dir() and exchange(new, path):
        return
    if old_is_dir or (path.exists() and new.is_dir()):  # a rename cannot replace these in one step
        os.replace(path, parked)
    os.replace(new, path)  # killed between the two moves: recover_interrupted_write undoes it


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or filesystem cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def recover_interrupted_write(path: Path | str) -> None:
    """Undo what a killed `atomic_path` left for `path`: put back an old output it had moved
    aside (when nothing took its place), then delete its temporaries."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for temporary in _temporaries(path):
        _discard(temporary, path)


def _discard(temporary: Path, path: Path) -> None:
    """Delete a temporary of `path`, after moving back the old output it holds if a swap
    stopped between its two moves (nothing is at `path`)."""
    parked = temporary / PARKED
    if parked.exists() and not path.exists():
        os.replace(parked, path)
    shutil.rmtree(temporary, ignore_errors=True)


def _temporaries(path: Path) -> list[Path]:
    """The temporaries `atomic_path` made for `path`: for `sst2`, not those of `sst2.json`."""
    own = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    return [p for p in path.parent.iterdir() if own.fullmatch(p.name)]


# --------------------------------------------------------------------------- reading


@contextmanager
def reading(path: Path | str, kind: str, stage: str | None = None, fix: str | None = None) -> Iterator[Path]:
    """Check the artifact at `path` exists, then run the body that reads it: anything the body
    raises (except a `PipelineError`, already one line) becomes one line naming the file, that
    it is not a readable `kind` file, and how to restore it (`restore_hint`, or `fix` for a
    file no stage outputs).

    `stage` defaults to the stage whose output `path` is (`paths.producing_stage`).
    """
    path = Path(path)
    require_artifact(path, kind, stage)
    try:
        yield path
    except PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - the body only reads; whatever fails, the file is bad
        raise damaged(path, f"not a readable {kind} file ({_first_line(exc)})", stage, fix) from None


def require_artifact(path: Path | str, kind: str, stage: str | None = None) -> None:
    """Fail in one line unless the artifact `path` is there, with its right type (a file, or
    a directory for `kind` ending in "directory"); an interrupted save is recovered first."""
    path = Path(path)
    if not path.exists():
        recover_interrupted_write(path)
    want_dir = kind.endswith("directory")
    if path.exists() and path.is_dir() == want_dir:
        return
    if not path.exists():
        problem = f"{kind} not found" if want_dir else f"{kind} file not found"
    elif want_dir:
        problem = f"a file, not a {kind}"
    else:
        problem = f"a directory, not a {kind} file"
    raise damaged(path, problem, stage)


def damaged(path: Path | str, problem: str, stage: str | None = None, fix: str | None = None) -> PipelineError:
    """The error for an artifact that is missing or wrong: `<path>: <problem>; <how to restore>`."""
    return PipelineError(f"{path}: {problem}; {fix or restore_hint(path, stage)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def restore_hint(path: Path | str, stage: str | None = None) -> str:
    """How to get a good `path` back: `dvc checkout <stage>` when DVC's cache holds the output
    dvc.lock records for it, else `dvc repro <stage>`."""
    stage = stage or producing_stage(path)
    if stage is None:
        return "check the path, or re-make it: dvc repro"
    if cached_outputs(stage):
        return f"restore it: dvc checkout --force {stage} (or re-make it: dvc repro {stage})"
    return f"re-make it: dvc repro {stage}"


def cached_outputs(stage: str, root: Path | None = None) -> bool:
    """Whether DVC's cache holds every output dvc.lock records for `stage` (False when there
    is no dvc.lock, no such stage, or it cannot be told)."""
    root = Path(os.environ.get("DVC_ROOT") or root or Path.cwd())
    try:
        outs = _lock_outs(root / "dvc.lock", stage)
        cache = _cache_dir(root)
        return bool(outs) and cache is not None and all(_in_cache(cache, out.get("md5", "")) for out in outs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return False


def removed_outputs(stage: str, root: Path | None = None) -> bool:
    """Whether outputs dvc.lock records for `stage` are missing here and DVC's cache holds them
    all (what `dvc repro` leaves when the stage fails after it removed them)."""
    root = Path(os.environ.get("DVC_ROOT") or root or Path.cwd())
    try:
        outs = _lock_outs(root / "dvc.lock", stage)
        return any(not (root / out["path"]).exists() for out in outs) and cached_outputs(stage, root)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError):
        return False


def _lock_outs(lock: Path, stage: str) -> list[dict]:
    if not lock.is_file():
        return []
    from ruamel.yaml import YAML  # only on the error path, and not needed to serve

    entry = (YAML(typ="safe").load(lock.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage)
    return list(entry.get("outs", [])) if isinstance(entry, dict) else []


def _cache_dir(root: Path) -> Path | None:
    """The cache directory DVC uses for `root`: `cache.dir` of .dvc/config.local, else of
    .dvc/config (relative to .dvc/), else .dvc/cache."""
    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir():
        return None
    for name in ("config.local", "config"):
        config = configparser.ConfigParser()
        config.read(dvc_dir / name)
        if config.has_option("cache", "dir"):
            return (dvc_dir / config.get("cache", "dir")).resolve()
    return dvc_dir / "cache"


def _in_cache(cache: Path, md5: str) -> bool:
    """A DVC 3 cache object (`files/md5/ab/cdef...`); a directory's `.dir` listing and every
    file it lists."""
    if not re.fullmatch(r"[0-9a-f]{32}(\.dir)?", md5):
        return False
    listing = cache / "files" / "md5" / md5[:2] / md5[2:]
    if not listing.is_file():
        return False
    if not md5.endswith(".dir"):
        return True
    entries = json.loads(listing.read_text(encoding="utf-8"))
    return all(_in_cache(cache, entry["md5"]) for entry in entries)
