import pytest
import torch

from grpokit.rollout.decoders import _prefilled


def test_prefilled_reads_a_layers_keys_and_values():
    class Layer:
        keys, values = torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 3, 4)

    keys, values = _prefilled(Layer())
    assert keys is Layer.keys and values is Layer.values


def test_prefilled_names_a_cache_layer_without_tensors():
    class LinearAttentionLayer:
        keys = None

    with pytest.raises(TypeError, match="left a LinearAttentionLayer without key/value tensors"):
        _prefilled(LinearAttentionLayer())
