"""Applications built on the library: the built-in demo (:mod:`~grpokit.apps.demo`), the GRPO/PPO
comparison (:mod:`~grpokit.apps.compare`) and checkpoint evaluation (:mod:`~grpokit.apps.evaluation`).

They sit above :mod:`grpokit.trainers` (which never imports them) and below the command line.
"""
