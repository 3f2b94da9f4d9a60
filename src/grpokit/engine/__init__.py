"""The machinery every trainer shares and no trainer copies.

- :mod:`~grpokit.engine.update`: **the** update (minibatches, accumulation, pi_old when needed, the
  non-finite guard, data-parallel normalisation, clipping, optimizer steps).
- :mod:`~grpokit.engine.harness`: **the** run harness (run directory, checkpoint/resume, atomic log rewind,
  signals, out-of-memory handling).
- :mod:`~grpokit.engine.parallel`: data parallelism on accelerate (DDP, DeepSpeed ZeRO, FSDP2).
- :mod:`~grpokit.engine.checkpoint`, :mod:`~grpokit.engine.faults`: atomic checkpoints and fault handling.

Nothing here knows which algorithm runs: a trainer hands the engine a loss over micro-batches.
"""
