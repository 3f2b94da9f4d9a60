"""Metrics, console progress, TensorBoard and the run report."""

from grpokit.tracking.logger import RunLogger, read_metrics

__all__ = ["RunLogger", "read_metrics"]
