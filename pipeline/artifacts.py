"""Artifacts written whole and read checked: the one place every stage saves and loads through.

Writing: `atomic_path` builds an output (file or directory) in a temporary sibling and swaps
it in at the end, so at every instant the path holds the complete old output or the complete
new one, whatever kills the process and when (tests/test_artifacts.py kills a save at each of
its steps). A directory is swapped in one atomic step where the OS can (Linux
`renameat2(RENAME_EXCHANGE)`); elsewhere the old one is moved aside into the temporary, the
new one moved in, and the old deleted, and a save killed between the two moves is undone by
the next write or read of that path, which moves the old output back. A save holds a lock on
its temporary while it lasts, so nothing else (a second writer, a reader recovering) touches
a live one: only a dead writer's temporary is debris.

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

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

PARKED = "previous"  # inside a temporary: the old output, moved aside while the new one moves in
# Failures of the machine or the code, never of a file: `reading` lets them through as they are.
NOT_THE_FILE = (MemoryError, ImportError, RecursionError, NotImplementedError, AssertionError)
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


# --------------------------------------------------------------------------- writing


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; swap it in for `path` only if the body succeeds.

    Works for files and directories. The old `path` stays untouched until the swap. The
    temporary lives in a sibling directory `.<name>.<8 hex digits>.tmp` (ignored by git and
    DVC). A process killed mid-write cannot remove it, so each write first recovers from those
    that earlier writes of the same `path` left (`recover_interrupted_write`); the save holds a
    lock on its own temporary, so a live one is never taken for debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    temporary.mkdir()
    lock = _lock(temporary)
    new = temporary / path.name
    try:
        yield new
        _swap_in(new, path, temporary / PARKED)
    finally:
        _discard(temporary, path)
        if lock is not None:
            os.close(lock)


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
    """Before a write: undo what killed writes of `path` left (`_discard` each dead writer's
    temporary: its parked old output back in place if nothing took its place, the rest deleted)."""
    path = Path(path)
    for temporary in _temporaries(path):
        if not _in_use(temporary):
            _discard(temporary, path)


def restore_parked(path: Path | str) -> None:
    """Before a read of a missing `path`: put back the old output a writer killed mid-swap had
    moved aside. Readers delete nothing, and leave a live writer's temporary alone."""
    path = Path(path)
    for temporary in _temporaries(path):
        if (temporary / PARKED).exists() and not path.exists() and not _in_use(temporary):
            try:
                os.replace(temporary / PARKED, path)
            except OSError:
                pass  # another reader put it back first


def _discard(temporary: Path, path: Path) -> None:
    """Delete a temporary of `path`, after moving back the old output it holds if a swap
    stopped between its two moves (nothing is at `path`)."""
    parked = temporary / PARKED
    if parked.exists() and not path.exists():
        os.replace(parked, path)
    shutil.rmtree(temporary, ignore_errors=True)


def _temporaries(path: Path) -> list[Path]:
    """The temporaries `atomic_path` made for `path`: for `sst2`, not those of `sst2.json`."""
    if not path.parent.is_dir():
        return []
    own = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    return [p for p in path.parent.iterdir() if own.fullmatch(p.name)]


def _lock(temporary: Path) -> int | None:
    """Hold an exclusive lock on the temporary directory for the save; the OS drops it when the
    process dies, however it dies. None where there is no `flock` (the save is then unguarded)."""
    if fcntl is None:
        return None
    descriptor = os.open(temporary, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def _in_use(temporary: Path) -> bool:
    """Whether a live save holds `temporary` (its lock cannot be taken)."""
    if fcntl is None:
        return False
    try:
        descriptor = os.open(temporary, os.O_RDONLY)
    except OSError:
        return True  # gone, or being deleted: not ours to touch
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(descriptor)


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
    except (PipelineError, *NOT_THE_FILE):
        raise
    except Exception as exc:  # noqa: BLE001 - the body only reads; whatever else fails, the file is bad
        what = kind if kind.endswith("directory") else f"{kind} file"
        raise damaged(path, f"not a readable {what} ({_first_line(exc)})", stage, fix) from None


def require_artifact(path: Path | str, kind: str, stage: str | None = None) -> None:
    """Fail in one line unless the artifact `path` is there, with its right type (a file, or
    a directory for `kind` ending in "directory"); an interrupted save is recovered first."""
    path = Path(path)
    if not path.exists():
        restore_parked(path)
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
    except Exception:  # noqa: BLE001 - a hint on the error path: a broken dvc.lock or config means none
        return False


def removed_outputs_hint(stage: str, root: Path | None = None) -> str:
    """How to get back the outputs dvc.lock records for `stage` that are missing here, which is
    what `dvc repro` leaves when the stage stops after it removed them: `dvc checkout` for those
    in DVC's cache, `git checkout` for the git-tracked (`cache: false`) rest; "" when none is
    missing (or it cannot be told)."""
    root = Path(os.environ.get("DVC_ROOT") or root or Path.cwd())
    try:
        missing = [out for out in _lock_outs(root / "dvc.lock", stage) if not (root / out["path"]).exists()]
        cache = _cache_dir(root)
        tracked = [out["path"] for out in missing if cache is None or not _in_cache(cache, out.get("md5", ""))]
    except Exception:  # noqa: BLE001 - a hint on the error path: a broken dvc.lock or config means none
        return ""
    if not missing:
        return ""
    ways = [f"dvc checkout --force {stage} restores those in its cache"] if len(tracked) < len(missing) else []
    ways += [f"git checkout -- {' '.join(tracked)} the git-tracked ones"] if tracked else []
    return f"DVC removed the outputs dvc.lock records for {stage} before running it: {', '.join(ways)}"


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
