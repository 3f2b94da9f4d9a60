import json

import pytest

from grpokit.config import GRPOConfig, build_config
from grpokit.data import get_task
from grpokit.trainers.demo import cache_dir, held_out_problems, run_demo


def tiny_demo_config(tmp_path) -> GRPOConfig:
    return build_config(GRPOConfig, {
        "max_steps": 2,
        "data": {"prompts_per_step": 2, "num_train_problems": 40, "num_eval_problems": 8},
        "generation": {"max_new_tokens": 5},
        "algorithm": {"num_generations": 2},
        "demo": {"hidden_size": 32, "num_layers": 1, "sft_steps": 3, "sft_batch_size": 4},
        "logging": {"output_dir": str(tmp_path / "runs"), "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip


@pytest.mark.slow
def test_demo_pipeline_runs_and_caches_the_warmup(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPOKIT_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" / "demo"
    messages = []
    config = tiny_demo_config(tmp_path)
    result = run_demo(config, log=messages.append)
    assert set(result.before) >= {"accuracy"} and set(result.after) >= {"accuracy"}
    assert result.model_dir.parent == cache_dir()
    report = json.loads((result.train_result.run_dir / "demo.json").read_text())
    assert report["before"] == result.before and report["num_eval_problems"] == 8
    assert any(m.startswith("warm-up: 3 supervised steps") for m in messages)

    messages.clear()
    config = config.model_copy(update={"logging": config.logging.model_copy(update={"run_name": "second"})})
    again = run_demo(config, log=messages.append)
    assert again.model_dir == result.model_dir
    assert any(m.startswith("warm-up: cached model") for m in messages)
    assert again.before == result.before  # same seed, same starting model, same held-out numbers


def test_held_out_problems_never_appear_in_training():
    task = get_task("addition")
    train = {row["prompt"] for row in task.make_problems(2000, seed=0, split="train")}
    held_out = held_out_problems(task, 200)
    assert len(held_out) == 200 and not train & {row["prompt"] for row in held_out}
