"""Interrupt an atomic save at each of its steps and report what is left (tests/test_artifacts.py).

    python tests/interrupted_save.py DIR SHAPE PROTOCOL MODE   -> one JSON list on stdout

A save writes a SHAPE-shaped directory (the files of a teacher, a student or an export) over
an older one with `pipeline.artifacts.atomic_path`. A step is every filesystem call it makes
(each os function, each open, write and close) and its atomic exchange. For step k = 1, 2, ...
a forked child runs the save and, at its k-th step, exits at once (MODE "exit": as a kill -9
does) or raises (MODE "raise": an error or Ctrl-C). The parent then looks at the output as it
was left, as a reader finds it (`require_artifact`, which recovers an interrupted swap), and
after a rerun of the save. The loop ends at the first k the save finishes before reaching.
PROTOCOL "fallback" turns off the exchange rename, as on an OS or filesystem without one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

from pipeline import artifacts

SHAPES = {
    "teacher": ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training.json"),
    "student": ("config.json", "vocab.json", "model.safetensors", "training.json"),
    "export": ("manifest.json", "config.json", "vocab.json", "model.onnx", "model.int8.onnx"),
}
INJECTED_EXIT = 17


def content(shape: str, version: str) -> dict[str, bytes]:
    """Each file's bytes in the old or the new version (distinct, a few KiB each)."""
    return {name: f"{version} {name} ".encode() * (200 + 50 * i) for i, name in enumerate(SHAPES[shape])}


def save(target: Path, files: dict[str, bytes]) -> None:
    with artifacts.atomic_path(target) as tmp:
        tmp.mkdir()
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)


def state(target: Path, old: dict[str, bytes], new: dict[str, bytes]) -> str:
    if not target.exists():
        return "missing"
    found = {p.name: p.read_bytes() for p in target.iterdir()} if target.is_dir() else {}
    return "old" if found == old else "new" if found == new else "partial"


class Interrupt:
    """A profiler that interrupts the save at its k-th filesystem step."""

    def __init__(self, step: int, mode: str) -> None:
        self.step, self.mode, self.seen = step, mode, 0

    def __call__(self, frame, event, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        if event == "call" and frame.f_code is artifacts.exchange.__code__:
            self.count()
        elif event == "c_call" and self.is_filesystem_call(arg):
            self.count()

    @staticmethod
    def is_filesystem_call(function) -> bool:  # noqa: ANN001
        owner = getattr(function, "__self__", None)
        return getattr(function, "__module__", None) == "posix" or function.__name__ == "open" or (
            isinstance(owner, io.IOBase) and function.__name__ in ("write", "close", "flush")
        )

    def count(self) -> None:
        self.seen += 1
        if self.seen == self.step:
            if self.mode == "exit":
                os._exit(INJECTED_EXIT)
            sys.setprofile(None)
            raise RuntimeError(f"injected at step {self.step}")


def run_child(target: Path, new: dict[str, bytes], step: int, mode: str, protocol: str) -> bool:
    """Fork, save with the interruption at `step`; True if it interrupted (did not finish)."""
    pid = os.fork()
    if pid == 0:
        if protocol == "fallback":
            artifacts.exchange = lambda a, b: False
        code = 0
        sys.setprofile(Interrupt(step, mode))
        try:
            save(target, new)
        except RuntimeError:
            code = INJECTED_EXIT
        sys.setprofile(None)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == INJECTED_EXIT


def main(root: Path, shape: str, protocol: str, mode: str) -> list[dict]:
    old, new = content(shape, "old"), content(shape, "new")
    target = root / "out" / shape
    results = []
    for step in range(1, 10_000):
        shutil.rmtree(root / "out", ignore_errors=True)
        save(target, old)
        interrupted = run_child(target, new, step, mode, protocol)
        after_kill = state(target, old, new)
        artifacts.require_artifact(target, f"{shape} directory")
        after_read = state(target, old, new)
        save(target, new)
        results.append({
            "step": step,
            "interrupted": interrupted,
            "after_kill": after_kill,
            "after_read": after_read,
            "after_rerun": state(target, old, new),
            "leftovers": sorted(p.name for p in target.parent.iterdir() if p != target),
        })
        if not interrupted:
            return results
    raise AssertionError("the save never finished")


if __name__ == "__main__":
    directory, shape_name, protocol_name, mode_name = sys.argv[1:]
    print(json.dumps(main(Path(directory), shape_name, protocol_name, mode_name)))
