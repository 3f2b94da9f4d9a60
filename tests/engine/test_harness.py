import pytest

from grpokit.config import GRPOConfig
from grpokit.engine.harness import prepare_run_dir


def test_run_dir_is_never_reused_by_a_fresh_run(tmp_path):
    config = GRPOConfig(logging={"output_dir": str(tmp_path), "run_name": "r"})
    run = prepare_run_dir(config, "grpo")
    assert (run / "config.yaml").is_file()
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="already holds a run; .* --resume"):
        prepare_run_dir(config, "grpo")
