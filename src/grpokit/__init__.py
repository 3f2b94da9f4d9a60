"""grpokit: Group Relative Policy Optimization (and PPO) for language models and any policy.

The package is layered (see docs/architecture.md):

- ``grpokit.algorithms``: pure tensor functions (advantages, losses, KL, GAE), registered by name;
- ``grpokit.data`` / ``models`` / ``rollout`` / ``rewards`` / ``tracking``: backends behind small interfaces;
- ``grpokit.trainers``: the GRPO and PPO loops; ``grpokit.rl``: GRPO for gymnasium environments.

Importing ``grpokit`` is cheap: heavy modules (transformers, gymnasium) load only when used.
"""

__version__ = "0.1.0"
