"""Metrics, console progress, TensorBoard and the run report."""

from grpokit.tracking.logger import RunLogger, read_metrics, read_samples
from grpokit.tracking.progress import ProgressBar, peak_memory_mb

__all__ = ["ProgressBar", "RunLogger", "peak_memory_mb", "read_metrics", "read_samples"]
