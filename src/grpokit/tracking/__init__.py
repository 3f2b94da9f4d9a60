"""Metrics, console progress, TensorBoard and the run report."""

from grpokit.tracking.logger import RunLogger, read_metrics, read_samples
from grpokit.tracking.progress import ProgressBar

__all__ = ["ProgressBar", "RunLogger", "read_metrics", "read_samples"]
