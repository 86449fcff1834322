"""Inference speed, measured the same way for every model (METHOD.md §4.1).

The paper's Table 2 times each model over all SST-2 training sentences at batch 512 but does
not say what the clock covered. We time a model through two calls and report both figures:

- `encode`: tokenisation and the copy of the inputs to the model's device;
- `forward`: the model alone, on inputs encoded before the clock started.

Throughput ("model") is the time of `forward` over every batch, in data order; the
end-to-end figure ("e2e") adds the time it took to encode those batches. Latency is the
same pair for one sentence at a time: median and 90th percentile over `repeats` calls.
Warm-up calls run first and are never timed (first calls pay for allocation, kernel
selection and lazy initialisation). On a GPU the device is synchronised before every clock
read, so queued work is never mistaken for finished work.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # the export runtime (onnxruntime) loads only where exports are timed
    from pipeline.serve import ExportedStudent

Clock = Callable[[], float]


class Timeable(Protocol):
    """A model as the speed harness drives it."""

    device: torch.device

    def encode(self, text_a: Sequence[str], text_b: Sequence[str] | None) -> Any:
        """Tokenise a batch and place the inputs on `device`."""

    def forward(self, inputs: Any) -> Any:
        """Run the model on encoded inputs and return its logits."""


class TimedExport:
    """An export (`pipeline.serve.ExportedStudent`) as this harness times a model: `encode` takes RAW text (it tokenises,
    the PyTorch models' `encode` takes canonical text), `forward` is the ONNX model alone."""

    device = torch.device("cpu")

    def __init__(self, export: ExportedStudent) -> None:
        self.export = export

    def encode(self, text_a: Sequence[str], text_b: Sequence[str] | None) -> dict[str, np.ndarray]:
        return self.export.encode(text_a, text_b)

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.export.run(inputs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(
    text_a: Sequence[str], text_b: Sequence[str] | None, batch_size: int
) -> list[tuple[Sequence[str], Sequence[str] | None]]:
    return [
        (text_a[i : i + batch_size], None if text_b is None else text_b[i : i + batch_size])
        for i in range(0, len(text_a), batch_size)
    ]


def measure_throughput(
    model: Timeable,
    text_a: Sequence[str],
    text_b: Sequence[str] | None,
    batch_size: int,
    warmup_batches: int,
    clock: Clock = time.perf_counter,
) -> dict[str, float]:
    """Seconds and rows/s over all rows at `batch_size`, model-only and end to end.

    Every batch is encoded before the model's clock starts; the first `warmup_batches`
    batches then run once untimed, and the timed pass covers every batch.
    """
    if not text_a:
        raise ValueError("no rows to time")
    with torch.inference_mode():
        started = clock()
        encoded = [model.encode(a, b) for a, b in _batches(text_a, text_b, batch_size)]
        synchronize(model.device)
        encode_s = clock() - started
        for i in range(warmup_batches):
            model.forward(encoded[i % len(encoded)])
        synchronize(model.device)
        started = clock()
        for inputs in encoded:
            model.forward(inputs)
        synchronize(model.device)
        model_s = clock() - started
    rows = len(text_a)
    return {
        "throughput_model_s": model_s,
        "throughput_model_rows_per_s": rows / model_s,
        "throughput_e2e_s": encode_s + model_s,
        "throughput_e2e_rows_per_s": rows / (encode_s + model_s),
    }


def measure_latency(
    model: Timeable,
    text_a: Sequence[str],
    text_b: Sequence[str] | None,
    repeats: int,
    warmup: int,
    clock: Clock = time.perf_counter,
) -> dict[str, float]:
    """Batch-1 latency in milliseconds (median, p90), model-only and end to end.

    Call i classifies row i (cycling through the rows), so repeats see different lengths;
    the first `warmup` calls are not recorded.
    """
    if not text_a:
        raise ValueError("no rows to time")
    model_ms: list[float] = []
    e2e_ms: list[float] = []
    with torch.inference_mode():
        for call in range(warmup + repeats):
            row = call % len(text_a)
            started = clock()
            inputs = model.encode(text_a[row : row + 1], None if text_b is None else text_b[row : row + 1])
            synchronize(model.device)
            encoded = clock()
            model.forward(inputs)
            synchronize(model.device)
            finished = clock()
            if call >= warmup:
                model_ms.append((finished - encoded) * 1e3)
                e2e_ms.append((finished - started) * 1e3)
    return {
        "latency_model_ms_median": float(np.median(model_ms)),
        "latency_model_ms_p90": float(np.percentile(model_ms, 90)),
        "latency_e2e_ms_median": float(np.median(e2e_ms)),
        "latency_e2e_ms_p90": float(np.percentile(e2e_ms, 90)),
    }


def cpu_model() -> str:
    """The processor's marketing name (Linux: /proc/cpuinfo), else what Python knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(devices: Sequence[torch.device], dtype: torch.dtype) -> dict[str, Any]:
    """What a timing depends on besides the model: hardware, threads, precision, versions."""
    import transformers

    info: dict[str, Any] = {
        "dtype": str(dtype).removeprefix("torch."),
        "cpu_model": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    for device in devices:
        if device.type == "cuda":
            info["gpu_model"] = torch.cuda.get_device_name(device)
            info["cuda"] = torch.version.cuda
    return info
