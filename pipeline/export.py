"""`export` stage: a trained student -> `models/export/<task>/<variant>/`, served by `pipeline.serve`.

The PyTorch student needs torch, NLTK and the pipeline; the export needs onnxruntime and numpy
(the directory layout is in `pipeline.serve`'s docstring). The graph is written node by node
rather than traced, because it must do what the student does with padding and tracing
cannot see it: the student packs its sequences, so the backward LSTM starts at each row's
own last token. The ONNX LSTM op takes the row lengths (`sequence_lens`) and does the same,
so a padded batch gives the packed student's logits (checked on sample batches before
anything is written).

    ids [B, T] int64, lengths [B] int32      (pairs: ids_a, lengths_a, ids_b, lengths_b,
        -> Gather from one embedding table     both sides padded to one width T)
        -> bidirectional LSTM(sequence_lens) -> [forward final ; backward final]
        -> (pairs: [h_a, h_b, h_a * h_b, |h_a - h_b|]) -> Gemm, Relu, Gemm -> logits [B, K]

The two embedding channels and the frozen backoff table become one table: row i is what
`MultichannelEmbedding` gives id i ([static; tuned] for a trained word, [v; v] for a backoff
word), so the runtime only maps words to ids. Dropout is the identity at inference.

`export.int8` adds model.int8.onnx: onnxruntime's dynamic quantisation of the LSTM (int8
weights) and of the embedding table (uint8, the bulk of the file); the two small Gemm
layers stay float32.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.artifacts import atomic_path
from pipeline.io import dir_sha256, file_sha256, load_task
from pipeline.logs import get_logger, stage_run
from pipeline.models import Student, load_student
from pipeline.models.batching import PAD_ID
from pipeline.models.embeddings import MultichannelEmbedding
from pipeline.models.vocab import tokenize
from pipeline.params import ExportParams, load_params
from pipeline.serve import (
    CONFIG_FILE,
    EXPORT_FORMAT,
    FP32_FILE,
    INT8_FILE,
    MANIFEST_FILE,
    VOCAB_FILE,
    check_export_facts,
    session,
)
from pipeline.tasks import TaskSpec

log = get_logger("export")

CHECK_ROWS = 64  # sample rows the export must reproduce the student's logits on
CHECK_TOLERANCE = 1e-4
_GATES = (0, 3, 1, 2)  # PyTorch stacks the LSTM gates i, f, g, o; ONNX i, o, f, c (c is g)


# --------------------------------------------------------------------------- the graph


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def embedding_table(embedding: MultichannelEmbedding) -> np.ndarray:
    """[words + backoff words, 2 * dim] float32: row i is the layer's output for id i."""
    table = torch.cat([embedding.static.weight, embedding.tuned.weight], dim=1)
    if embedding.backoff is not None:
        table = torch.cat([table, embedding.backoff.weight.repeat(1, 2)])
    return _array(table)


def lstm_weights(lstm: nn.LSTM) -> dict[str, np.ndarray]:
    """The ONNX LSTM's W [2, 4H, I], R [2, 4H, H] and B [2, 8H] from a bidirectional nn.LSTM."""

    def gates(tensor: torch.Tensor) -> torch.Tensor:
        blocks = tensor.chunk(4)
        return torch.cat([blocks[g] for g in _GATES])

    directions = ("_l0", "_l0_reverse")
    weight = {
        "W": [gates(getattr(lstm, f"weight_ih{d}")) for d in directions],
        "R": [gates(getattr(lstm, f"weight_hh{d}")) for d in directions],
        "B": [torch.cat([gates(getattr(lstm, f"bias_ih{d}")), gates(getattr(lstm, f"bias_hh{d}"))]) for d in directions],
    }
    return {name: _array(torch.stack(pair)) for name, pair in weight.items()}


def student_graph(student: Student, opset: int) -> onnx.ModelProto:
    """The student as an ONNX model (see the module docstring), checked by onnx.checker."""
    model, is_pair = student.model, student.config.is_pair
    encoder, (fc1, _, _, fc2) = model.encoder, model.classifier
    hidden = encoder.lstm.hidden_size
    initializers = {
        "embedding": embedding_table(encoder.embedding),
        **lstm_weights(encoder.lstm),
        "fc1_weight": _array(fc1.weight),
        "fc1_bias": _array(fc1.bias),
        "fc2_weight": _array(fc2.weight),
        "fc2_bias": _array(fc2.bias),
        "final_states_shape": np.array([-1, 2 * hidden], dtype=np.int64),
    }
    inputs = []
    for side in ("_a", "_b") if is_pair else ("",):
        inputs += [
            helper.make_tensor_value_info(f"ids{side}", TensorProto.INT64, ["batch", "length"]),
            helper.make_tensor_value_info(f"lengths{side}", TensorProto.INT32, ["batch"]),
        ]
    node = helper.make_node
    nodes = [  # pairs: one LSTM batch of 2B rows, as SiameseBiLSTM runs them
        node("Concat", ["ids_a", "ids_b"], ["ids"], axis=0),
        node("Concat", ["lengths_a", "lengths_b"], ["lengths"], axis=0),
    ] if is_pair else []
    nodes += [
        node("Transpose", ["ids"], ["ids_by_step"], perm=[1, 0]),
        node("Gather", ["embedding", "ids_by_step"], ["embedded"]),  # [T, B, 2D]
        node("LSTM", ["embedded", "W", "R", "B", "lengths"], ["", "final_states"],
             direction="bidirectional", hidden_size=hidden),  # final_states [2, B, H]
        node("Transpose", ["final_states"], ["final_by_row"], perm=[1, 0, 2]),
        node("Reshape", ["final_by_row", "final_states_shape"], ["encoded"]),  # [B, 2H]: forward, backward
    ]
    if is_pair:
        initializers |= {
            "sides_shape": np.array([2, -1, 2 * hidden], dtype=np.int64),
            "side_a": np.array(0, dtype=np.int64),
            "side_b": np.array(1, dtype=np.int64),
        }
        nodes += [
            node("Reshape", ["encoded", "sides_shape"], ["by_side"]),  # [2, B, 2H]
            node("Gather", ["by_side", "side_a"], ["h_a"], axis=0),
            node("Gather", ["by_side", "side_b"], ["h_b"], axis=0),
            node("Mul", ["h_a", "h_b"], ["product"]),
            node("Sub", ["h_a", "h_b"], ["difference"]),
            node("Abs", ["difference"], ["distance"]),
            node("Concat", ["h_a", "h_b", "product", "distance"], ["features"], axis=1),
        ]
    nodes += [
        node("Gemm", ["features" if is_pair else "encoded", "fc1_weight", "fc1_bias"], ["fc1"], transB=1),
        node("Relu", ["fc1"], ["fc1_relu"]),
        node("Gemm", ["fc1_relu", "fc2_weight", "fc2_bias"], ["logits"], transB=1),
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(student.config.label_names)])
    graph = helper.make_graph(
        nodes,
        f"{student.config.task}_student",
        inputs,
        [output],
        [numpy_helper.from_array(array, name) for name, array in initializers.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets), producer_name="pipeline.export"
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


# --------------------------------------------------------------------------- checks


def sample_inputs(student: Student, rows: int, seed: int = 0) -> list[np.ndarray]:
    """Random ids and lengths per side (lengths 1..12, padded), the same arrays for both runtimes."""
    rng = np.random.default_rng(seed)
    num_ids = student.config.vocab_size + student.config.backoff_size
    width = 12
    arrays = []
    for _ in range(2 if student.config.is_pair else 1):
        lengths = rng.integers(1, width + 1, rows)
        ids = rng.integers(1, num_ids, (rows, width))
        ids[np.arange(width) >= lengths[:, None]] = PAD_ID
        arrays += [ids, lengths.astype(np.int32)]
    return arrays


def graph_logits(model: onnx.ModelProto | Path, inputs: list[np.ndarray]) -> np.ndarray:
    names = ("ids_a", "lengths_a", "ids_b", "lengths_b") if len(inputs) == 4 else ("ids", "lengths")
    source = model if isinstance(model, Path) else model.SerializeToString()
    return session(source, threads=1).run(None, dict(zip(names, inputs)))[0]


def student_logits(student: Student, inputs: list[np.ndarray]) -> np.ndarray:
    """The PyTorch student (on the CPU) on the same padded inputs; it packs them by the lengths."""
    return _array(student.forward([torch.from_numpy(a.astype(np.int64)) for a in inputs]))


def lowercase_table() -> dict[str, str]:
    """Every character the student's tokenizer lower-cases, mapped to what it becomes.

    Taken from `pipeline.models.vocab.tokenize` itself (Arrow's per-character mapping), so
    the runtime can reproduce it without Arrow and whatever its Python's Unicode tables say.
    """
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and not chr(c).isspace()]
    lowered = tokenize([" ".join(chars)]).values.to_pylist()
    assert len(lowered) == len(chars), "a character split or vanished when lower-cased"
    return {char: low for char, low in zip(chars, lowered) if char != low}


def quantize_int8(fp32: Path, int8: Path) -> None:
    """onnxruntime's dynamic quantisation of the LSTM and the embedding table (see the docstring).

    It warns on every call that the model was not "pre-processed" (shape inference and graph
    optimisation before quantising); on this graph that changes nothing (checked: the same
    nodes and size), so the warning is silenced rather than shown on every export.
    """
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(fp32, int8, op_types_to_quantize=["LSTM", "Gather"], weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


# --------------------------------------------------------------------------- core


def export_student(
    student: Student,
    task: TaskSpec,
    directory: Path,
    variant: str,
    params: ExportParams,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Write the export directory atomically; returns its manifest.

    `source` (where the student came from) is recorded in the manifest. Refuses to write
    anything if the ONNX graph does not reproduce the student's logits on sample batches.
    """
    model = student_graph(student, params.opset)
    inputs = sample_inputs(student, CHECK_ROWS)
    expected = student_logits(student, inputs)
    error = float(np.abs(graph_logits(model, inputs) - expected).max())
    if error > CHECK_TOLERANCE:
        raise PipelineError(f"the ONNX graph differs from the student by {error:.2e} in a logit (a bug: report it)")
    config = {
        "task": task.name,
        "variant": variant,
        "label_names": list(task.label_names),
        "text_fields": [str(task.text_a)] + ([str(task.text_b)] if task.is_pair else []),  # CoLA's: positions
        "inputs": [i.name for i in model.graph.input],
        "lowercase": lowercase_table(),
        "student": asdict(student.config),
    }
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        onnx.save_model(model, tmp / FP32_FILE)
        (tmp / VOCAB_FILE).write_text(json.dumps(list(student.vocab.words), ensure_ascii=False) + "\n")
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        if params.int8:
            quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE)
            int8_error = float(np.abs(graph_logits(tmp / INT8_FILE, inputs) - expected).max())
            log.info("int8: %.2f of the float32 size, largest logit change %.3g on %d sample rows",
                     (tmp / INT8_FILE).stat().st_size / (tmp / FP32_FILE).stat().st_size, int8_error, CHECK_ROWS)
        for model_file in (tmp / FP32_FILE, tmp / INT8_FILE) if params.int8 else (tmp / FP32_FILE,):
            check_export_facts(tmp, config, list(student.vocab.words), model_file)  # what load_export checks
        manifest = {
            "format_version": EXPORT_FORMAT,
            "opset": params.opset,
            "producers": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
            "source": source,
            "files": {f.name: file_sha256(f) for f in sorted(tmp.iterdir())},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


# --------------------------------------------------------------------------- command


def main(task_name: str, variant: str, params_path: Path) -> None:
    if variant not in paths.STUDENT_VARIANTS:
        raise PipelineError(f"unknown student variant {variant!r}: use one of {', '.join(paths.STUDENT_VARIANTS)}")
    task = load_task(task_name)
    params = load_params(params_path).export
    source, out = paths.student_dir(task.name, variant), paths.export_dir(task.name, variant)
    with stage_run(log, f"export@{task.name}-{variant}", student=source, int8=params.int8, opset=params.opset) as summary:
        student = load_student(source, label_names=task.label_names)
        manifest = export_student(student, task, out, variant, params, {"student_dir": str(source), "sha256": dir_sha256(source)})
        summary["out"] = out
        summary["sizes"] = ",".join(f"{name}={(out / name).stat().st_size:,}" for name in manifest["files"])
