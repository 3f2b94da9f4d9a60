import torch

from grpokit.models.reference import ReferencePolicy


def test_reference_is_a_frozen_copy_synced_on_schedule():
    policy = torch.nn.Linear(2, 2)
    reference = ReferencePolicy(policy, sync_steps=2)
    assert reference.model is not policy and not any(p.requires_grad for p in reference.model.parameters())
    with torch.no_grad():
        policy.weight.add_(1.0)
    assert not reference.maybe_sync(policy, 1) and not torch.equal(reference.model.weight, policy.weight)
    assert reference.maybe_sync(policy, 2) and torch.equal(reference.model.weight, policy.weight)
