"""Precision on any machine: the shipped params.yaml (`label.precision: bf16`,
`teacher.mnli.precision: bf16`) runs on CPUs without native bf16, in fp32."""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline import device
from pipeline.device import autocast_dtype
from pipeline.errors import PipelineError

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_bf16_where_native_and_fp32_elsewhere_with_a_warning(monkeypatch, caplog, native):
    monkeypatch.setattr(device, "native_bf16", lambda _: native)
    with caplog.at_level(logging.WARNING, logger="pipeline.device"):
        dtype = autocast_dtype("bf16", CPU)
    if native:
        assert dtype is torch.bfloat16 and not caplog.records
    else:
        assert dtype is None
        assert caplog.messages == ["precision=bf16: this CPU has no native bf16; computing in fp32 (recorded in the outputs)"]


@pytest.mark.parametrize("native", [True, False])
def test_fp32_and_auto_are_fp32_on_every_cpu(monkeypatch, native):
    monkeypatch.setattr(device, "native_bf16", lambda _: native)
    assert autocast_dtype("fp32", CPU) is None and autocast_dtype("auto", CPU) is None


def test_fp16_on_a_cpu_is_refused_in_one_line():
    with pytest.raises(PipelineError, match=r"^precision=fp16 needs a GPU; use precision: bf16, auto or fp32 on a CPU$"):
        autocast_dtype("fp16", CPU)


@pytest.mark.parametrize(("precision", "native", "expected"), [
    ("bf16", True, torch.bfloat16), ("bf16", False, None),
    ("auto", True, torch.bfloat16), ("auto", False, torch.float16),
    ("fp16", True, torch.float16), ("fp32", True, None),
])
def test_on_a_gpu_bf16_needs_bf16_units(monkeypatch, precision, native, expected):
    """No GPU is needed: the answer depends on `native_bf16` alone (emulated bf16 is slower)."""
    monkeypatch.setattr(device, "native_bf16", lambda _: native)
    assert autocast_dtype(precision, torch.device("cuda")) is expected


@pytest.mark.parametrize(("avx512_bf16", "amx", "native"), [(True, False, True), (False, True, True), (False, False, False)])
def test_a_cpu_is_native_with_avx512_bf16_or_amx_not_with_onednns_emulation(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # any AVX512 CPU
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device.native_bf16(CPU) is native
