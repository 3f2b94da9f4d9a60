import pytest

from grpokit.config import LoRAConfig, ModelConfig
from grpokit.models.lora import load_policy


@pytest.mark.parametrize("r", [0, 4])
def test_load_policy_without_a_model_path_names_the_setting(r):
    with pytest.raises(ValueError, match="model.name_or_path is unset"):
        load_policy(ModelConfig(lora=LoRAConfig(r=r)), device="cpu")
