"""grpokit.models.device, the one module for device, autocast and memory figures (runs on CPU)."""

import pytest
import torch

from grpokit.engine import runs
from grpokit.models import device, precision


def test_resolve_device():
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert device.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="model.device"):
        device.resolve_device("gpu0")
    assert runs.resolve_device is device.resolve_device


def test_precision_names_are_the_device_modules():
    assert precision.enable_autocast is device.enable_autocast
    assert precision.autocast_dtype is device.autocast_dtype
    assert precision.MIXED_PRECISIONS == device.MIXED_PRECISIONS


def test_model_autocast_and_autocast_context():
    model = torch.nn.Linear(2, 2)
    assert device.model_autocast(model, "cpu") == ("cpu", None)
    device.enable_autocast(model, "bf16")
    assert device.model_autocast(model, "cpu") == ("cpu", torch.bfloat16)
    with device.autocast_context("cpu", torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with device.autocast_context("cpu", None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_memory_metrics():
    metrics = device.memory_metrics()
    assert 10 < metrics["memory/peak_rss_mb"] < 1_000_000
    assert ("memory/peak_cuda_mb" in metrics) == torch.cuda.is_available()
    assert (device.peak_cuda_mb() is None) == (not torch.cuda.is_available())
    device.reset_peak_memory()  # a no-op without CUDA


def test_peak_rss_is_reported_in_mib():
    from grpokit.models.device import peak_rss_mb

    assert 10 < peak_rss_mb() < 100_000
