import math

import torch

from grpokit.tracking import ProgressBar, RunLogger, read_metrics, read_samples


def test_samples_are_written_per_row_with_tensors_as_lists(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, {"reward/mean": torch.tensor(0.5), "kl": math.nan})
        logger.log_samples(
            1, [{"prompt": "p", "rewards": torch.tensor([1.0, 0.0]), "advantages": [0.5, None]}]
        )
    assert read_metrics(tmp_path)[0]["reward/mean"] == 0.5
    assert math.isnan(read_metrics(tmp_path)[0]["kl"])
    assert read_samples(tmp_path) == [
        {"step": 1, "prompt": "p", "rewards": [1.0, 0.0], "advantages": [0.5, None]}
    ]


def test_no_samples_file_when_none_are_logged(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log_samples(1, [])
    assert not (tmp_path / "samples.jsonl").exists()


def test_disabled_logger_writes_nothing(tmp_path):
    logger = RunLogger(tmp_path / "x", enabled=False)
    logger.log(1, {"a": 1.0})
    logger.log_samples(1, [{"a": 1}])
    logger.close()
    assert not (tmp_path / "x").exists()


def test_progress_bar_shows_reward_and_kl(capsys):
    bar = ProgressBar(3, enabled=True)
    bar.update({"reward/mean": 0.25, "kl": 0.0123, "other": 1.0})
    assert bar._bar.postfix == "reward=0.25, kl=0.0123"
    assert bar._bar.n == 1
    bar.close()
    quiet = ProgressBar(3, enabled=False)
    quiet.update({"reward/mean": 1.0})
    quiet.close()

