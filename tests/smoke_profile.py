"""profiles/smoke.args read the way `dvc exp run` reads it (shared by the DVC tests)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from dvc.utils.hydra import to_hydra_overrides

SMOKE_ARGS = Path(__file__).resolve().parents[1] / "profiles" / "smoke.args"


def smoke_args() -> list[str]:
    """The `dvc exp run` arguments, split as the README's `$(cat profiles/smoke.args)` splits them."""
    return SMOKE_ARGS.read_text().split()


def overrides(args: list[str]) -> dict[str, Any]:
    """`-S [+|++]key=value` pairs as {dotted key: value}, parsed by DVC's own `-S` parser
    (Hydra's override grammar, where `010` stays a string and `[a,b]` is a list)."""
    if len(args) % 2 or set(args[0::2]) != {"-S"}:
        raise ValueError(f"expected `-S key=value` pairs, got {args}")
    return {override.key_or_group: override.value() for override in to_hydra_overrides(args[1::2])}


def with_overrides(raw: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of a params mapping with dotted keys set (missing levels are created)."""
    merged = copy.deepcopy(raw)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged
