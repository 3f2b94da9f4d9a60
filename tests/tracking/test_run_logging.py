from types import SimpleNamespace

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from grpokit.tracking.run import open_run_logger


def _logging(**overrides):
    return SimpleNamespace(**{"report_to": ["tensorboard"], "tracker_options": {}, "report": False, **overrides})


def test_resumed_run_replaces_the_tensorboard_events_of_redone_steps(tmp_path):
    with open_run_logger(tmp_path, _logging(), None) as logger:  # killed after logging step 3
        for step in (1, 2, 3):
            logger.log(step, {"x": float(step)})
    with open_run_logger(tmp_path, _logging(), None, start_step=1) as logger:  # resumed from step 1
        for step in (2, 3):
            logger.log(step, {"x": 10.0 * step})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("x")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    assert (tmp_path / "environment.json").is_file()


def test_no_trackers_writes_only_metrics_jsonl(tmp_path):
    with open_run_logger(tmp_path, _logging(report_to=[]), None) as logger:
        logger.log(1, {"x": 1.0})
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
