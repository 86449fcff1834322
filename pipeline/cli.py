"""The one command-line app: `python -m pipeline STAGE --task T` is what dvc.yaml runs.

Each command is a thin shell over its stage module's `main`; stage modules are imported
inside the command so that `--help` and the light stages do not pay for importing torch.
A `PipelineError` (bad input, missing file) is printed as one `error:` line, exit code 1.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.errors import PipelineError

app = typer.Typer(
    help="Distil a fine-tuned BERT teacher into a BiLSTM student (Tang et al. 2019), stage by stage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Task = Annotated[str, typer.Option("--task", "-t", help="Task in params.yaml `tasks`: sst2, qqp, mnli, or a dataset of yours.")]
ParamsFile = Annotated[Path, typer.Option("--params", help="Params file (the single source of truth).")]
VARIANT_HELP = "Student: distilled (transfer set + logits) or baseline (gold labels)."
Variant = Annotated[str, typer.Option(help=VARIANT_HELP)]
Arm = Annotated[
    Optional[str],
    typer.Option(help="An ablation row of params.yaml `ablation` (an arm, or distilled/baseline at its other seeds)."),
]
DEFAULT_PARAMS = Path("params.yaml")


@app.command()
def configure(task: Task, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """The task's declaration and resolved settings -> data/params/<task>/<section>.json."""
    from pipeline import configure as stage

    stage.main(task, params)


@app.command()
def prepare(task: Task, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """GLUE TSV, or your dataset's files -> data/glue/<task>/<split>.parquet."""
    from pipeline import prepare as stage

    stage.main(task, params)


@app.command()
def teacher(task: Task, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """Fine-tune the BERT teacher -> models/teacher/<task>/."""
    from pipeline import teacher as stage

    stage.main(task, params)


@app.command()
def augment(
    task: Task,
    params: ParamsFile = DEFAULT_PARAMS,
    workers: Annotated[
        Optional[int],
        typer.Option(help="Worker processes (default: all cores); the output does not depend on it."),
    ] = None,
    arm: Arm = None,
) -> None:
    """Rule-based augmentation of the training text -> data/augmented/<task>.parquet
    (an ablation arm's: data/ablation/<task>/<arm>/augmented.parquet)."""
    from pipeline import augment as stage

    stage.main(task, params, workers, arm)


@app.command()
def label(task: Task, params: ParamsFile = DEFAULT_PARAMS, arm: Arm = None) -> None:
    """Teacher logits for the transfer set -> data/logits/<task>.parquet (an ablation arm's:
    data/ablation/<task>/<arm>/logits.parquet)."""
    from pipeline import label as stage

    stage.main(task, params, arm)


@app.command()
def student(
    task: Task,
    variant: Annotated[Optional[str], typer.Option(help=f"{VARIANT_HELP} Or name --arm instead.")] = None,
    arm: Arm = None,
    params: ParamsFile = DEFAULT_PARAMS,
) -> None:
    """Train a BiLSTM student -> models/student/<task>/<variant>/ (an ablation row's, one per
    seed: models/ablation/<task>/<arm>/seed-<n>/)."""
    from pipeline import student as stage

    stage.main(task, variant, params, arm)


@app.command()
def export(task: Task, variant: Variant, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """ONNX export of a student (float32 + int8) -> models/export/<task>/<variant>/."""
    from pipeline import export as stage

    stage.main(task, variant, params)


@app.command()
def evaluate(task: Task, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """Dev metrics, sizes and speed of teacher and students -> metrics/evaluate/<task>.json."""
    from pipeline import evaluate as stage

    stage.main(task, params)


@app.command()
def ablation(task: Task, params: ParamsFile = DEFAULT_PARAMS) -> None:
    """The task's ablation table (params.yaml `ablation`) -> metrics/evaluate/<task>_ablation.json."""
    from pipeline import ablation as stage

    stage.main(task, params)


@app.command()
def report(params: ParamsFile = DEFAULT_PARAMS) -> None:
    """Paper-style results table and figures -> reports/."""
    from pipeline import report as stage

    stage.main(params)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A student directory, or its export (models/export/T/V).")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify; pairs as 'a<TAB>b'.")] = None,
    file: Annotated[
        Optional[Path], typer.Option("--file", "-f", help="One text (or a<TAB>b pair) per line; '-' for stdin.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Classify texts with a trained student or its export; prints label and probabilities per line."""
    from pipeline import predict as command

    command.main(model_dir, texts or [], file, batch_size)


def main() -> None:
    """Run the app; a `PipelineError` is one `error:` line (exit 1), Ctrl-C one `interrupted:`
    line (exit 130). Outputs are swapped in whole (`pipeline.artifacts`), so a stopped stage
    has kept its previous outputs, unless `dvc repro` removed them before running it: then
    the line says how to check them out of DVC's cache."""
    signal.signal(signal.SIGINT, _interrupt)
    try:
        app()
    except PipelineError as exc:
        print(f"error: {exc}{removed_outputs_hint('; ')}", file=sys.stderr)
        sys.exit(1)
    except Interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this line short
        print(f"interrupted: {running_stage()}; {removed_outputs_hint('') or 'previous outputs kept'}", file=sys.stderr)
        sys.exit(130)


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which typer turns into a silent exit 130 before
    `main` could say what stopped; a BaseException, so no `except Exception` swallows it."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def running_stage() -> str:
    """The stage being run: its DVC name under `dvc repro`, else the command line."""
    return os.environ.get("DVC_STAGE") or " ".join(["python -m pipeline", *sys.argv[1:]])


def removed_outputs_hint(separator: str) -> str:
    """Under `dvc repro`, which removes a stage's outputs before running it: how to get back
    those dvc.lock records (`artifacts.removed_outputs_hint`), after `separator`; else ""."""
    from pipeline import artifacts

    stage = os.environ.get("DVC_STAGE")
    hint = artifacts.removed_outputs_hint(stage) if stage else ""
    return f"{separator}{hint}" if hint else ""
