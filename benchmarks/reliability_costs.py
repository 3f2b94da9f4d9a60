"""What the reliability machinery costs: checkpoint writes (with and without fsync), capturing the RNG
states at the start of each step, and the worker thread of a reward call with a timeout.

``OMP_NUM_THREADS=1 python benchmarks/reliability_costs.py``. Medians of repeated runs on one thread; the
checkpoints go to a temporary directory on the default filesystem and include the AdamW state.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from grpokit.engine import checkpoint as ckpt  # noqa: E402
from grpokit.models.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402
from grpokit.rewards.failures import RewardFailurePolicy, guarded_call  # noqa: E402


def median_us(fn, calls: int = 200, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def ones(prompts, completions, **columns):
    return [1.0] * len(completions)


def main() -> None:
    torch.set_num_threads(1)
    prompts, completions = ["p"] * 64, ["c"] * 64
    for label, policy in [
        ("no timeout", RewardFailurePolicy()),
        ("reward_timeout_s=5", RewardFailurePolicy(timeout_s=5.0)),
    ]:
        us = median_us(lambda policy=policy: guarded_call(ones, "ones", prompts, completions, {}, policy))
        print(f"reward call, 64 completions, {label}: {us:.0f} us")
    print(f"capture_rng_state: {median_us(ckpt.capture_rng_state):.0f} us")

    tokenizer = build_char_tokenizer("abcdefgh ")
    for hidden, layers in [(32, 2), (512, 8)]:
        model = build_tiny_model(
            tokenizer, hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 32),
            intermediate_size=4 * hidden,
        )  # fmt: skip
        optimizer = torch.optim.AdamW(model.parameters())
        model(torch.ones(1, 4, dtype=torch.long)).logits.sum().backward()
        optimizer.step()  # Adam moments exist, as in a real checkpoint
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        for fsync in (True, False):
            real = ckpt._fsync_tree
            if not fsync:
                ckpt._fsync_tree = lambda root: None
            try:
                with tempfile.TemporaryDirectory() as run_dir:
                    saver = ckpt.Checkpointer(run_dir, save_total_limit=1)
                    times = []
                    for step in range(1, 6):
                        start = time.perf_counter()
                        state = {"optimizer": optimizer.state_dict(), "rng": ckpt.capture_rng_state()}
                        saver.save(step, model, tokenizer, state)
                        times.append(time.perf_counter() - start)
            finally:
                ckpt._fsync_tree = real
            print(
                f"checkpoint, {millions:.2f}M parameters, fsync={fsync}: {statistics.median(times) * 1e3:.0f} ms"
            )


if __name__ == "__main__":
    main()
