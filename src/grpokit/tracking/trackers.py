"""Experiment trackers: TensorBoard, Weights & Biases, MLflow and trackio behind one small interface.

A :class:`Tracker` receives the resolved config once and one flat dict of scalars per step. The run's own
record is ``RUN_DIR/metrics.jsonl`` (:class:`~grpokit.tracking.logger.RunLogger`); trackers mirror it to
the dashboards people already use, so each one is optional and imported only when chosen::

    trackers = make_trackers(["tensorboard", "wandb"], run_dir, config)
    for tracker in trackers:
        tracker.log(step, metrics)

Choices:

1. Every tracker stays on this machine unless told otherwise: W&B runs in ``mode="offline"`` (upload later
   with ``wandb sync RUN_DIR/wandb/offline-run-*``), MLflow writes a SQLite store inside the run directory
   and trackio its local database.
2. MLflow's ``file:`` store is refused by MLflow 3 unless ``MLFLOW_ALLOW_FILE_STORE=true``, so the default
   store is ``sqlite:///RUN_DIR/mlflow/mlflow.db`` (artifacts in ``RUN_DIR/mlflow/artifacts``); a
   ``tracking_uri`` option or ``MLFLOW_TRACKING_URI`` points it elsewhere (a server, or ``file:`` again).
3. Non-finite values (NaN, inf) are not sent: the backends disagree on them (W&B keeps them, MLflow
   servers reject them), and ``metrics.jsonl`` keeps the exact value. Non-numeric values are not sent.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MLflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackioTracker",
    "WandbTracker",
    "available_trackers",
    "config_to_dict",
    "make_trackers",
    "scalar_metrics",
]


class Tracker(ABC):
    """Receives the config once and scalar metrics every step; ``close`` flushes and ends the run."""

    name: str

    @abstractmethod
    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (flat ``{"group/name": number}``) at training step ``step``."""

    @abstractmethod
    def log_config(self, config: Any) -> None:
        """Record the resolved config (a mapping, a pydantic model or a dataclass)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and finish; the tracker must not be used afterwards."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` as floats; 0-d tensors and numpy scalars are unwrapped.

    Booleans, strings, lists, NaN and inf are dropped (see the module notes).
    """
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready nested dict from a mapping, a pydantic model or a dataclass (``None`` gives ``{}``)."""
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise ValueError(
            f"config must be a mapping, a pydantic model or a dataclass, got {type(config).__name__}"
        )
    # A JSON round trip turns Paths, tuples and enums into plain values every backend accepts.
    return json.loads(json.dumps(dict(config), default=str))


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` to ``{"a.b": 1}``, for backends whose parameters are flat."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _require(module: str, install: str, tracker: str) -> Any:
    """Import an optional backend, or fail with the line that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"the {tracker!r} tracker needs {module!r}: {install}") from err


class TensorBoardTracker(Tracker):
    """Scalars to ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``); the config as a text entry."""

    name = "tensorboard"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        log_dir: str | os.PathLike | None = None,
        purge_step: int | None = None,
    ):
        """``purge_step``: TensorBoard hides events at or after this step from earlier writers (a resumed
        run redoes the steps after its checkpoint, so their first events must not show twice)."""
        tensorboard = _require("torch.utils.tensorboard", "pip install tensorboard", self.name)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(run_dir) / "tensorboard"
        self._writer = tensorboard.SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in scalar_metrics(metrics).items():
            self._writer.add_scalar(key, value, step)

    def log_config(self, config: Any) -> None:
        # Indented by four spaces: TensorBoard renders text entries as Markdown, this keeps it verbatim.
        text = json.dumps(config_to_dict(config), indent=2)
        self._writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)

    def close(self) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    """Weights & Biases, offline by default: files under ``RUN_DIR/wandb``, nothing leaves the machine.

    ``init_kwargs`` go to ``wandb.init`` (``entity``, ``tags``, ``settings``...); ``mode="online"`` uploads live.
    """

    name = "wandb"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        project: str = "grpokit",
        name: str | None = None,
        mode: str = "offline",
        **init_kwargs: Any,
    ):
        wandb = _require("wandb", "pip install 'grpokit[wandb]'", self.name)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, name=name or run_dir.resolve().name, dir=str(run_dir), mode=mode, **init_kwargs
        )

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.run.log(scalar_metrics(metrics), step=step)

    def log_config(self, config: Any) -> None:
        self.run.config.update(config_to_dict(config), allow_val_change=True)

    def close(self) -> None:
        self.run.finish()


class MLflowTracker(Tracker):
    """MLflow run in a local SQLite store inside the run directory (see the module notes).

    View it with ``mlflow ui --backend-store-uri sqlite:///RUN_DIR/mlflow/mlflow.db``. The config is
    logged twice: flattened as parameters (``optim.lr``) for search, and whole as ``config.json``.
    """

    name = "mlflow"
    _BATCH = 100  # MLflow's limit on parameters per log_batch call

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tracking_uri: str | None = None,
        experiment: str = "grpokit",
        run_name: str | None = None,
    ):
        tracking = _require("mlflow.tracking", "pip install 'grpokit[mlflow]'", self.name)
        entities = _require("mlflow.entities", "pip install 'grpokit[mlflow]'", self.name)
        self._metric_cls, self._param_cls = entities.Metric, entities.Param
        run_dir = Path(run_dir).resolve()
        store = run_dir / "mlflow"
        artifact_location = None
        if tracking_uri is None:
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if tracking_uri is None:
            store.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
            artifact_location = (store / "artifacts").as_uri()
        # An explicit client, not mlflow.set_tracking_uri: the process-wide default stays untouched.
        self.client = tracking.MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifact_location)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name or run_dir.name).info.run_id

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        timestamp = int(time.time() * 1000)
        batch = [self._metric_cls(k, v, timestamp, step) for k, v in scalar_metrics(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_config(self, config: Any) -> None:
        config = config_to_dict(config)
        # MLflow caps parameter values at 6000 characters; the whole config is in config.json anyway.
        params = [self._param_cls(k, str(v)[:6000]) for k, v in _flatten(config).items()]
        for i in range(0, len(params), self._BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + self._BATCH])
        self.client.log_dict(self.run_id, config, "config.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TrackioTracker(Tracker):
    """trackio's local database (``$TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``).

    trackio takes the config only when a run starts, so the run starts at the first ``log`` (or ``close``)
    with the config given to ``log_config`` before it. View with ``trackio show --project grpokit``.
    """

    name = "trackio"

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        project: str = "grpokit",
        name: str | None = None,
        **init_kwargs: Any,
    ):
        self._trackio = _require("trackio", "pip install 'grpokit[trackio]'", self.name)
        self.project = project
        self.run_name = name or Path(run_dir).resolve().name
        self._init_kwargs = {"embed": False, "auto_log_cpu": False, "auto_log_gpu": False, **init_kwargs}
        self._config: dict[str, Any] = {}
        self.run: Any = None

    def _start(self) -> Any:
        if self.run is None:
            self.run = self._trackio.init(
                project=self.project, name=self.run_name, config=self._config, **self._init_kwargs
            )
        return self.run

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._start().log(scalar_metrics(metrics), step=step)

    def log_config(self, config: Any) -> None:
        if self.run is not None:
            raise RuntimeError("trackio records the config when the run starts: call log_config before log")
        self._config = config_to_dict(config)

    def close(self) -> None:
        self._start().finish()


_TRACKERS: dict[str, Callable[..., Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MLflowTracker,
    "trackio": TrackioTracker,
}


def available_trackers() -> list[str]:
    """Names accepted by :func:`make_trackers`."""
    return list(_TRACKERS)


def make_trackers(
    names: Iterable[str],
    run_dir: str | os.PathLike,
    config: Any = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Tracker]:
    """Build the named trackers for ``run_dir`` and give each the resolved ``config``.

    Args:
        names: tracker names, in order (``"tensorboard"``, ``"wandb"``, ``"mlflow"``, ``"trackio"``).
        run_dir: the run directory; local trackers write inside it.
        config: the resolved config, logged once by every tracker (skipped when ``None``).
        options: per-tracker keyword arguments, e.g. ``{"wandb": {"mode": "online", "entity": "me"}}``.
    Returns:
        The trackers, in the order of ``names``. If one fails to start, those already started are closed.
    """
    names = list(names)
    options = dict(options or {})
    for name in names:
        if name not in _TRACKERS:
            raise ValueError(f"unknown tracker {name!r}; available: {', '.join(available_trackers())}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"tracker {duplicated[0]!r} is listed more than once")
    unused = sorted(set(options) - set(names))
    if unused:
        raise ValueError(f"options given for tracker {unused[0]!r}, which is not in names {names}")
    trackers: list[Tracker] = []
    try:
        for name in names:
            tracker = _TRACKERS[name](run_dir, **options.get(name, {}))
            trackers.append(tracker)
            if config is not None:
                tracker.log_config(config)
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers
