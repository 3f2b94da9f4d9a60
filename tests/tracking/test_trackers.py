import dataclasses
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from grpokit.tracking.trackers import (
    Tracker,
    available_trackers,
    config_to_dict,
    make_trackers,
    scalar_metrics,
)

CONFIG = {
    "model": {"name": "tiny"},
    "optim": {"lr": 1e-6, "betas": (0.9, 0.99)},
    "output_dir": Path("runs/x"),
}
STEPS = [
    {"reward/mean": 0.25, "kl": 0.0, "note": "text is skipped", "done": True},
    {"reward/mean": 0.5, "kl": float("nan"), "completion_length/mean": torch.tensor(12.0)},
    {"reward/mean": 0.75, "kl": 0.125, "loss": float("inf")},
]


def log_steps(tracker: Tracker) -> None:
    for step, metrics in enumerate(STEPS):
        tracker.log(step, metrics)


def test_scalar_metrics_keeps_finite_numbers_only():
    assert scalar_metrics(STEPS[0]) == {"reward/mean": 0.25, "kl": 0.0}
    assert scalar_metrics(STEPS[1]) == {"reward/mean": 0.5, "completion_length/mean": 12.0}
    assert scalar_metrics({"n": 3, "x": [1.0]}) == {"n": 3.0}


def test_config_to_dict_accepts_dataclasses_and_plain_values():
    @dataclasses.dataclass
    class Optim:
        lr: float = 0.5
        path: Path = Path("a/b")

    assert config_to_dict(Optim()) == {"lr": 0.5, "path": "a/b"}
    assert config_to_dict(CONFIG)["optim"] == {"lr": 1e-6, "betas": [0.9, 0.99]}
    assert config_to_dict(None) == {}
    with pytest.raises(ValueError, match="config must be a mapping"):
        config_to_dict([1, 2])


def test_make_trackers_rejects_bad_names():
    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'; available: tensorboard, wandb"):
        make_trackers(["tensorbord"], "unused")
    with pytest.raises(ValueError, match="'wandb' is listed more than once"):
        make_trackers(["wandb", "wandb"], "unused")
    with pytest.raises(ValueError, match="options given for tracker 'mlflow'"):
        make_trackers(["tensorboard"], "unused", options={"mlflow": {}})
    assert make_trackers([], "unused") == []
    assert available_trackers() == ["tensorboard", "wandb", "mlflow", "trackio"]


@pytest.mark.parametrize(
    ("name", "module"), [("wandb", "wandb"), ("mlflow", "mlflow.tracking"), ("trackio", "trackio")]
)
def test_missing_backend_names_the_extra(monkeypatch, tmp_path, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"pip install 'grpokit\[{name}\]'"):
        make_trackers([name], tmp_path)


def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tracker,) = make_trackers(["tensorboard"], tmp_path, CONFIG)
    log_steps(tracker)
    tracker.close()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["completion_length/mean", "kl", "reward/mean"]
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("kl")] == [(0, 0.0), (2, 0.125)]  # NaN dropped
    (text,) = events.Tensors("config/text_summary")
    logged = json.loads(text.tensor_proto.string_val[0].decode())
    assert logged["optim"] == {"lr": 1e-6, "betas": [0.9, 0.99]} and logged["output_dir"] == "runs/x"


def wandb_records(path: Path) -> list:
    """Records of W&B's offline transaction log (``run-*.wandb``).

    The file is a 7-byte header (``:W&B``, magic, version) followed by a LevelDB-style log: 32 KiB blocks of
    chunks, each ``crc32 (4) | length (2) | type (1) | payload``; a record is one FULL chunk or FIRST,
    MIDDLE..., LAST chunks; a block tail shorter than a chunk header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the block end
            pos += left
            continue
        if pos + 7 + length > len(data):  # still being written
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_read_back(tmp_path):
    wandb = pytest.importorskip("wandb")
    settings = wandb.Settings(console="off", x_disable_stats=True, silent=True)
    (tracker,) = make_trackers(
        ["wandb"], tmp_path / "run-a", CONFIG, options={"wandb": {"settings": settings}}
    )
    log_steps(tracker)
    tracker.close()

    (log_file,) = (tmp_path / "run-a" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb-core writes the log in the background and may still be flushing after finish() returns
    deadline = time.monotonic() + 30
    while (records := wandb_records(log_file))[-1:] == [] or records[-1].WhichOneof("record_type") != "exit":
        assert time.monotonic() < deadline, "W&B offline log never got its exit record"
        time.sleep(0.05)
    history = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            # W&B stores keys containing "/" as a nested key path
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            history.append({k: v for k, v in items.items() if not k.startswith("_")})
    assert history == [
        {"reward/mean": 0.25, "kl": 0.0},
        {"reward/mean": 0.5, "completion_length/mean": 12.0},
        {"reward/mean": 0.75, "kl": 0.125},
    ]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "run-a" and run.project == "grpokit"
    config = {
        u.key: json.loads(u.value_json) for r in records if r.HasField("config") for u in r.config.update
    }
    assert config["optim"] == {"lr": 1e-6, "betas": [0.9, 0.99]}


def check_mlflow_run(tracker) -> None:
    client, run_id = tracker.client, tracker.run_id
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in ("reward/mean", "kl")
    }
    assert history == {"reward/mean": [(0, 0.25), (1, 0.5), (2, 0.75)], "kl": [(0, 0.0), (2, 0.125)]}
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-b"
    assert run.data.params == {
        "model.name": "tiny",
        "optim.lr": "1e-06",
        "optim.betas": "[0.9, 0.99]",
        "output_dir": "runs/x",
    }
    config = json.loads(Path(client.download_artifacts(run_id, "config.json")).read_text())
    assert config["model"] == {"name": "tiny"}


def test_mlflow_file_store_read_back(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores without it
    uri = f"file:{tmp_path / 'mlruns'}"
    (tracker,) = make_trackers(
        ["mlflow"], tmp_path / "run-b", CONFIG, options={"mlflow": {"tracking_uri": uri}}
    )
    log_steps(tracker)
    tracker.close()
    check_mlflow_run(tracker)
    assert tracker.client.tracking_uri == uri


@pytest.mark.slow  # creating the SQLite store runs MLflow's schema migrations: several seconds
def test_mlflow_default_sqlite_store_in_run_dir(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tracker,) = make_trackers(["mlflow"], tmp_path / "run-b", CONFIG)
    log_steps(tracker)
    tracker.close()
    check_mlflow_run(tracker)
    store = (tmp_path / "run-b" / "mlflow").resolve()
    assert tracker.client.tracking_uri == f"sqlite:///{store / 'mlflow.db'}"
    (artifact,) = store.glob("artifacts/*/artifacts/config.json")
    assert json.loads(artifact.read_text())["optim"]["lr"] == 1e-6


def test_trackio_local_database_read_back(tmp_path):
    pytest.importorskip("trackio")
    # trackio fixes its directory at import from TRACKIO_DIR, so the check runs in a fresh interpreter.
    script = textwrap.dedent(
        """
        import json, sys
        from grpokit.tracking.trackers import make_trackers
        (tracker,) = make_trackers(["trackio"], sys.argv[1], {"optim": {"lr": 0.5}})
        for step, metrics in enumerate([{"reward/mean": 0.25, "kl": float("nan")}, {"reward/mean": 0.5, "kl": 0.1}]):
            tracker.log(step, metrics)
        tracker.close()
        from trackio.sqlite_storage import SQLiteStorage
        logs = SQLiteStorage.get_logs("grpokit", "run-c")
        print("ROWS", json.dumps([{k: v for k, v in row.items() if k != "timestamp"} for row in logs]))
        """
    )
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run-c")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
    rows = json.loads(line.removeprefix("ROWS "))
    assert rows == [{"reward/mean": 0.25, "step": 0}, {"reward/mean": 0.5, "kl": 0.1, "step": 1}]
    assert (tmp_path / "trackio" / "grpokit.db").is_file()


def test_trackio_config_after_first_log_is_an_error(tmp_path, monkeypatch):
    class FakeRun:
        def log(self, metrics, step):
            pass

    class FakeTrackio:
        def init(self, **kwargs):
            self.kwargs = kwargs
            return FakeRun()

    fake = FakeTrackio()
    monkeypatch.setitem(sys.modules, "trackio", fake)
    (tracker,) = make_trackers(["trackio"], tmp_path / "run-d", {"a": 1})
    tracker.log(0, {"x": 1.0})
    assert (
        fake.kwargs["config"] == {"a": 1}
        and fake.kwargs["name"] == "run-d"
        and fake.kwargs["project"] == "grpokit"
    )
    with pytest.raises(RuntimeError, match="call log_config before log"):
        tracker.log_config({"a": 2})


def test_failed_start_closes_the_trackers_already_started(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    closed = []
    from grpokit.tracking import trackers as module

    original = module.TensorBoardTracker.close
    monkeypatch.setattr(
        module.TensorBoardTracker, "close", lambda self: closed.append(self) or original(self)
    )
    with pytest.raises(ImportError):
        make_trackers(["tensorboard", "wandb"], tmp_path)
    assert len(closed) == 1
