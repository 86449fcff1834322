"""Serve an exported student: raw text -> labels and probabilities, with onnxruntime and numpy.

An export directory (written by `pipeline.export`, the `export` stage) holds

    manifest.json     export format version, ONNX opset, producer versions, sha256 of every
                      other file (checked on every load: a changed file is refused)
    config.json       task, variant, label names, text fields, model inputs, and the tokenizer's
                      lower-case mapping
    vocab.json        the words, index i = id i (`<pad>`, `<unk>`, the trained words, the backoff words)
    model.onnx        the student in float32: token ids and lengths in, logits out
    model.int8.onnx   the same with int8 weights (when `export.int8` is on)

This module is the whole runtime: it imports neither torch nor NLTK nor any pipeline module
that does, so it loads in a fraction of a second and serves where only onnxruntime and numpy
are installed. The stages run `pipeline.text.normalize` (NLTK's Treebank tokenizer) and then
the student's whitespace split and lower-casing (`pipeline.models.vocab`); `tokenize` below
re-implements that chain with the standard library's `re`, which is what makes a batch-1
request fast: tests/test_export.py checks that it gives the same tokens and ids on every
SST-2 and QQP sentence. Lower-casing uses the mapping stored in config.json, taken from the
student's own tokenizer (Arrow's per-character mapping) at export time, because Python's
`str.lower` differs from it on a few characters ('İ', a word-final 'Σ', letters newer than
the interpreter's Unicode tables).

Three entry points, so a caller can time each part: `encode` (text -> model inputs), `run`
(the model alone) and `predict_logits`/`predict_proba` (both).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from pipeline.artifacts import damaged, reading, require_artifact
from pipeline.errors import PipelineError

EXPORT_FORMAT = 1
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
PAD_ID, UNK_ID = 0, 1  # vocabulary entries 0 and 1 are `<pad>` and `<unk>`, never a token's id
# `run` splits a larger batch into length-sorted groups of this many rows, each cut to its own
# longest row: the ONNX LSTM steps every row to the batch's longest (PyTorch's packed
# sequences skip padding), and a batch of 512 sentences in data order is mostly padding.
LENGTH_GROUP_ROWS = 32

# --------------------------------------------------------------------------- tokenizer

# NLTK's TreebankWordTokenizer.tokenize (nltk 3.9/3.10, default arguments), rule for rule
# and in the same order: every rule sees the text the rules before it left. Each rule comes
# with strings every one of its matches contains; when the text holds none of them the rule
# cannot match and its scan is skipped (a typical sentence needs 5 of the 26 scans).
# NLTK runs the rules up to the contractions with the `regex` module, whose `\s` leaves out
# the controls \x1c-\x1f that `re` counts as space: hence `[^\S\x1c-\x1f]` below. Its `\d`
# also knows digits of Unicode versions newer than this interpreter's (Kawi, Garay, ...):
# a comma or colon before one of those is the one case where the two can differ.
def _rules(*rules: tuple[str | tuple[str, ...], str, str]) -> list[tuple[tuple[str, ...], re.Pattern[str], str]]:
    return [((t,) if isinstance(t, str) else t, re.compile(p), r) for t, p, r in rules]


_BEFORE_PADDING = _rules(
    ('"', r"^\"", r"``"),  # starting quotes
    ("``", r"(``)", r" \1 "),
    (('"', "''"), r"([ \(\[{<])(\"|\'{2})", r"\1 `` "),
    ((":", ","), r"([:,])([^\d])", r" \1 \2"),  # punctuation
    ((":", ","), r"([:,])$", r" \1 "),
    ("...", r"\.\.\.", r" ... "),
    (tuple(";@#$%&"), r"[;@#$%&]", r" \g<0> "),
    (".", r'([^\.])(\.)([\]\)}>"\']*)[^\S\x1c-\x1f]*$', r"\1 \2\3 "),  # the final period
    (("?", "!"), r"[?!]", r" \g<0> "),
    ("' ", r"([^'])' ", r"\1 ' "),
    (tuple("[](){}<>"), r"[\]\[\(\)\{\}\<\>]", r" \g<0> "),  # parentheses and brackets
    ("--", r"--", r" -- "),
)
_AFTER_PADDING = _rules(  # applied to " " + text + " "
    ("''", r"''", " '' "),  # ending quotes
    ('"', r'"', " '' "),
    ("'", r"([^' ])('[sS]|'[mM]|'[dD]|') ", r"\1 \2 "),
    ("'", r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ", r"\1 \2 "),
)
# MacIntyre's contractions, case-insensitive: on ASCII text a match holds one of the words
# in lower case; other text always runs them (`(?i)` also matches 'ſ' for s, 'ı' for i, ...).
_CONTRACTIONS = [
    re.compile(rf"(?i){p}")
    for p in (
        r"\b(can)(not)\b",
        r"\b(d)('ye)\b",
        r"\b(gim)(me)\b",
        r"\b(gon)(na)\b",
        r"\b(got)(ta)\b",
        r"\b(lem)(me)\b",
        r"\b(more)('n)\b",
        r"\b(wan)(na)(?=\s)",
        r" ('t)(is)\b",
        r" ('t)(was)\b",
    )
]
_CONTRACTION_WORDS = ("cannot", "d'ye", "gimme", "gonna", "gotta", "lemme", "more'n", "wanna", "'tis", "'twas")


def treebank_tokenize(text: str) -> list[str]:
    """`nltk.tokenize.TreebankWordTokenizer().tokenize(text)`, without NLTK."""
    return _treebank_spaced(text).split()


def _treebank_spaced(text: str) -> str:
    """The Treebank rules' output before its final whitespace split."""
    for triggers, pattern, replacement in _BEFORE_PADDING:
        if any(map(text.__contains__, triggers)):
            text = pattern.sub(replacement, text)
    text = f" {text} "
    for triggers, pattern, replacement in _AFTER_PADDING:
        if any(map(text.__contains__, triggers)):
            text = pattern.sub(replacement, text)
    if not text.isascii() or any(map(text.lower().__contains__, _CONTRACTION_WORDS)):
        for pattern in _CONTRACTIONS:
            text = pattern.sub(r" \1 \2 ", text)
    return text


class Tokenizer:
    """Raw text -> token ids, exactly as the student saw its training text.

    Treebank tokens (the canonical text), lower-cased with the student tokenizer's mapping,
    looked up in the vocabulary; unknown words get UNK_ID. The student keeps `[MASK]` in
    upper case and never matches a literal `<pad>`/`<unk>` token to their entries; after the
    Treebank rules no token can be one of these (brackets always become tokens of their
    own), so lower-casing every token and leaving ids 0 and 1 out of the lookup is exact.
    """

    def __init__(self, words: Sequence[str], lowercase: dict[str, str]) -> None:
        self._ids = {word: i for i, word in enumerate(words) if i > UNK_ID}
        self._lower = str.maketrans(lowercase)

    def tokenize(self, text: str) -> list[str]:
        spaced = _treebank_spaced(text)
        # ASCII lower-casing is the same everywhere; only other text needs the stored mapping
        return (spaced.lower() if spaced.isascii() else spaced.translate(self._lower)).split()

    def ids(self, text: str) -> list[int]:
        return self.lookup(self.tokenize(text))

    def lookup(self, tokens: list[str]) -> list[int]:
        get = self._ids.get
        return [get(token, UNK_ID) for token in tokens]


def pad(rows: Sequence[Sequence[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Id rows as an int64 [B, width] matrix padded with PAD_ID, and int32 lengths [B].

    An empty row gets length 1 (one padding step, whose embedding is zero), as the PyTorch
    student does (`TokenIds.padded`): a recurrent step count of 0 has no final state.
    """
    ids = np.array([[*row, *[PAD_ID] * (width - len(row))] for row in rows], dtype=np.int64).reshape(-1, width)
    return ids, np.array([max(len(row), 1) for row in rows], dtype=np.int32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise class probabilities of logits [n, K]."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- the directory


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path, kind: str) -> Any:
    with reading(path, kind):
        return json.loads(path.read_text(encoding="utf-8"))


def verify_export(directory: Path | str) -> dict[str, Any]:
    """The manifest of an export directory, after checking its format and every file's sha256."""
    directory = Path(directory)
    require_artifact(directory, "export directory")
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise damaged(directory, f"not an export directory (no {MANIFEST_FILE})")
    manifest = _read_json(manifest_path, "export manifest")
    found = manifest.get("format_version") if isinstance(manifest, dict) else None
    if found != EXPORT_FORMAT:
        raise damaged(manifest_path, f"export format {found}, this runtime reads format {EXPORT_FORMAT}")
    if not isinstance(manifest.get("files"), dict) or CONFIG_FILE not in manifest["files"]:
        raise damaged(manifest_path, "no file list with config.json (not written by the export stage)")
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise damaged(path, f"missing from the export (listed in {MANIFEST_FILE})")
        if _sha256(path) != expected:
            raise damaged(path, f"sha256 differs from {MANIFEST_FILE} (changed after export)")
    return manifest


# --------------------------------------------------------------------------- the graph's facts

# What a model file must hold for its name: int8 weights in model.int8.onnx, none in model.onnx.
QUANTIZED_OPS = frozenset({
    "DynamicQuantizeLSTM", "DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear",
    "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "ConvInteger", "QLinearConv",
})


@dataclass(frozen=True)
class GraphFacts:
    """What an ONNX file says about itself: its operators, inputs, output width and the rows
    of its embedding table (the table its first Gather reads)."""

    op_types: frozenset[str]
    inputs: tuple[str, ...]
    output_width: int | None
    embedding_rows: int | None

    @property
    def quantized(self) -> bool:
        return bool(self.op_types & QUANTIZED_OPS)


def graph_facts(data: bytes) -> GraphFacts:
    """Read an ONNX ModelProto's graph straight from its protobuf wire format: the runtime
    cannot ask onnxruntime for operators or initializer shapes, and the `onnx` package is not
    what a server installs. Large tensors are skipped, never copied."""
    graph = _one(_fields(memoryview(data)), 7)  # ModelProto.graph
    if graph is None:
        raise ValueError("no graph in the file")
    op_types, gathered, tables, inputs, outputs = set(), [], {}, [], []
    for number, value in _fields(graph):
        if number == 1:  # NodeProto: input = 1, op_type = 4
            node = list(_fields(value))
            op_type = _text(_one(node, 4))
            op_types.add(op_type)
            if op_type == "Gather":
                gathered.append(_text(_one(node, 1)))
        elif number == 5:  # TensorProto initializer: dims = 1, name = 8
            tensor = list(_fields(value))
            tables[_text(_one(tensor, 8))] = _ints(v for n, v in tensor if n == 1)
        elif number in (11, 12):  # ValueInfoProto input / output: name = 1, type = 2
            (inputs if number == 11 else outputs).append(list(_fields(value)))
    names = tuple(_text(_one(i, 1)) for i in inputs if _text(_one(i, 1)) not in tables)
    embedding = next((tables[name] for name in gathered if len(tables.get(name, ())) == 2), None)
    return GraphFacts(frozenset(op_types), names, _last_dim(outputs[0]) if outputs else None,
                      embedding[0] if embedding else None)


def _fields(message: memoryview):  # noqa: ANN202 - yields (field number, int or memoryview)
    position, end = 0, len(message)
    while position < end:
        key, position = _varint(message, position)
        wire = key & 7
        if wire == 0:
            value, position = _varint(message, position)
        elif wire == 2:
            size, position = _varint(message, position)
            value, position = message[position : position + size], position + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, position = message[position : position + size], position + size
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {position}: not an ONNX model")
        if position > end:
            raise ValueError("the file ends inside a field (truncated)")
        yield key >> 3, value


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("the file ends inside a number (truncated)")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7


def _one(fields, number: int):  # noqa: ANN001, ANN202
    return next((value for n, value in fields if n == number), None)


def _text(value: memoryview | None) -> str:
    return bytes(value).decode("utf-8") if value is not None else ""


def _ints(values) -> tuple[int, ...]:  # noqa: ANN001 - repeated int64: one varint each, or packed
    out: list[int] = []
    for value in values:
        if isinstance(value, int):
            out.append(value)
        else:
            position = 0
            while position < len(value):
                number, position = _varint(value, position)
                out.append(number)
    return tuple(out)


def _last_dim(value_info: list) -> int | None:
    """TypeProto.tensor_type.shape's last dim_value (type = 2, tensor_type = 1, shape = 2, dim = 1)."""
    shape = _one(_fields(_one(_fields(_one(value_info, 2) or memoryview(b"")), 1) or memoryview(b"")), 2)
    dims = [list(_fields(d)) for n, d in _fields(shape or memoryview(b"")) if n == 1]
    return _one(dims[-1], 1) if dims else None


def check_export_facts(directory: Path, config: dict[str, Any], words: list[str], model: Path) -> None:
    """Refuse an export whose files disagree: config.json's label names, text fields, inputs
    and student sizes (the manifest's sha256 vouches for them) against the vocabulary and
    against the ONNX graph itself (inputs, output width, embedding rows, int8 or not)."""
    student = config["student"]
    labels, fields = config["label_names"], config["text_fields"]
    pair = len(fields) == 2
    expected_inputs = ["ids_a", "lengths_a", "ids_b", "lengths_b"] if pair else ["ids", "lengths"]
    problems = [
        (len(fields) not in (1, 2) or student["is_pair"] != pair,
         f"text_fields {fields} disagree with a {'pair' if student['is_pair'] else 'single-sentence'} student"),
        (list(student["label_names"]) != list(labels), f"label_names {labels} differ from the student's {student['label_names']}"),
        (config["inputs"] != expected_inputs, f"inputs {config['inputs']}, a {'pair' if pair else 'single-sentence'} model has {expected_inputs}"),
    ]
    for bad, problem in problems:
        if bad:
            raise damaged(directory / CONFIG_FILE, problem)
    if len(words) != student["vocab_size"] + student["backoff_size"]:
        raise damaged(directory / VOCAB_FILE, f"{len(words)} words, config.json says "
                      f"{student['vocab_size']} + {student['backoff_size']} backoff")
    with reading(model, "ONNX"):
        facts = graph_facts(model.read_bytes())
    int8 = model.name == INT8_FILE
    problems = [
        (list(facts.inputs) != expected_inputs, f"graph inputs {list(facts.inputs)}, config.json says {expected_inputs}"),
        (facts.output_width != len(labels), f"graph outputs {facts.output_width} logits, config.json names {len(labels)} labels"),
        (facts.embedding_rows != len(words), f"embedding table of {facts.embedding_rows} rows, vocab.json has {len(words)} words"),
        (facts.quantized != int8, "an int8 graph under the float32 name" if facts.quantized else "a float32 graph under the int8 name"),
    ]
    for bad, problem in problems:
        if bad:
            raise damaged(model, problem)


def session(model: Path | str | bytes, threads: int | None) -> ort.InferenceSession:
    """An onnxruntime CPU session with every graph optimisation; `threads` None: ORT's default.

    One inter-op thread: the graph is a single chain, there is nothing to run in parallel.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    model = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class ExportedStudent:
    """A loaded export directory (see `load_export`)."""

    def __init__(self, directory: Path, int8: bool, threads: int | None) -> None:
        self.path = directory
        self.manifest = verify_export(directory)
        config = _read_json(directory / CONFIG_FILE, "export config")
        words = _read_json(directory / VOCAB_FILE, "vocabulary")
        model = directory / (INT8_FILE if int8 else FP32_FILE)
        if model.name not in self.manifest["files"]:
            why = " (exported with export.int8: false)" if int8 else ""
            raise PipelineError(f"{directory}: this export has no {model.name}{why}")
        with reading(directory / CONFIG_FILE, "export config"):  # a field missing or of another type
            check_export_facts(directory, config, words, model)
            self.task: str = config["task"]
            self.variant: str = config["variant"]
            self.label_names: tuple[str, ...] = tuple(config["label_names"])
            self.text_fields: tuple[str, ...] = tuple(config["text_fields"])
            self.tokenizer = Tokenizer(words, config["lowercase"])
        self.is_pair = len(self.text_fields) == 2
        self.model_file = model
        with reading(model, "ONNX"):
            self.session = session(model, threads)

    def encode(self, text_a: Sequence[str], text_b: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The model's inputs for one batch of raw texts, rows in the given order.

        Pairs: both sides padded to one width (the graph runs them as one LSTM batch).
        """
        return self._feed(self._sides(text_a, text_b))

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [B, K] float32 for encoded inputs: the model alone.

        Rows run in groups of LENGTH_GROUP_ROWS of similar length, each group's ids cut to
        its longest row, so padding costs little whatever order the rows come in.
        """
        lengths = np.max([v for k, v in inputs.items() if k.startswith("lengths")], axis=0)
        if len(lengths) <= LENGTH_GROUP_ROWS:
            return self.session.run(None, inputs)[0]
        out = np.empty((len(lengths), len(self.label_names)), dtype=np.float32)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), LENGTH_GROUP_ROWS):
            rows = order[start : start + LENGTH_GROUP_ROWS]
            width = int(lengths[rows].max())
            group = {k: v[rows, :width] if k.startswith("ids") else v[rows] for k, v in inputs.items()}
            out[rows] = self.session.run(None, group)[0]
        return out

    def predict_logits(
        self, text_a: Sequence[str], text_b: Sequence[str] | None = None, batch_size: int = 512
    ) -> np.ndarray:
        """Logits [n, K] float32 for raw texts, in input order.

        Rows run in length-sorted batches: a padded batch costs its longest row's steps.
        """
        sides = self._sides(text_a, text_b)
        longest = np.array([max((len(side[i]) for side in sides), default=0) for i in range(len(text_a))])
        out = np.empty((len(text_a), len(self.label_names)), dtype=np.float32)
        order = np.argsort(longest, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self.run(self._feed([[side[i] for i in rows] for side in sides]))
        return out

    def predict_proba(
        self, text_a: Sequence[str], text_b: Sequence[str] | None = None, batch_size: int = 512
    ) -> np.ndarray:
        """Class probabilities [n, K] (softmax of the logits) for raw texts."""
        return softmax(self.predict_logits(text_a, text_b, batch_size))

    def _feed(self, sides: list[list[list[int]]]) -> dict[str, np.ndarray]:
        width = max((len(row) for side in sides for row in side), default=0)
        feed = {}
        for suffix, side in zip(("_a", "_b") if self.is_pair else ("",), sides):
            feed[f"ids{suffix}"], feed[f"lengths{suffix}"] = pad(side, max(width, 1))
        return feed

    def _sides(self, text_a: Sequence[str], text_b: Sequence[str] | None) -> list[list[list[int]]]:
        """Token ids per row, per side (one side, two for pairs), after checking the shape."""
        if self.is_pair != (text_b is not None):
            need = "text_a and text_b" if self.is_pair else "text_a only"
            kind = "pair" if self.is_pair else "single-sentence"
            raise PipelineError(f"the {self.task} export is a {kind} model: give {need}")
        if text_b is not None and len(text_b) != len(text_a):
            raise PipelineError(f"text_a has {len(text_a)} rows but text_b has {len(text_b)}")
        return [[self.tokenizer.ids(t) for t in texts] for texts in (text_a, text_b) if texts is not None]


def load_export(directory: Path | str, int8: bool = False, threads: int | None = 1) -> ExportedStudent:
    """Load (and verify) an export directory; `int8` picks model.int8.onnx.

    `threads`: onnxruntime intra-op threads (1, the default, is the batch-1 serving setting;
    None lets onnxruntime use every core).
    """
    return ExportedStudent(Path(directory), int8, threads)


# --------------------------------------------------------------------------- for evaluate


def score_export(
    directory: Path | str,
    text_a: Sequence[str],
    text_b: Sequence[str] | None = None,
    int8: bool = False,
    batch_size: int = 512,
    threads: int | None = None,
) -> np.ndarray:
    """Predicted class ids [n] int64 for raw (not normalised) texts."""
    export = load_export(directory, int8, threads)
    return export.predict_logits(text_a, text_b, batch_size).argmax(axis=1)


def export_sizes(directory: Path | str) -> dict[str, int]:
    """Bytes on disk of every file of the export (both models, vocabulary, config, manifest)."""
    directory = Path(directory)
    manifest = verify_export(directory)
    return {name: (directory / name).stat().st_size for name in (*manifest["files"], MANIFEST_FILE)}
