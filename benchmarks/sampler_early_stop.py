"""Generation time when completions end at different lengths: finished rows dropped from the batch or kept.

    OMP_NUM_THREADS=1 python benchmarks/sampler_early_stop.py [--repeats 5]

The benchmark model of grpo_vs_trl.py (random Qwen2, vocab 512), 4 prompts x G = 8, at most 256 tokens;
12 of the 512 tokens are declared stop tokens, so completion lengths are roughly geometric (mean about
40, a long tail to the limit), as in RL on short-answer tasks. ``DROP_FINISHED_SHARE = 1/8`` is the
sampler's default (a row leaves the decode batch once an eighth of the batch has finished); ``2.0`` never
drops a row (finished rows keep decoding pad tokens, as transformers' ``generate`` does). Same seeds, so
both settings sample the same completions. Prints median process-CPU seconds per ``generate`` call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import grpokit.rollout.transformers_sampler as sampler_module
    from bench_workload import addition_rows, build_reference_model
    from grpokit.rollout import TransformersSampler

    torch.set_num_threads(1)
    model_dir = tempfile.mkdtemp(prefix="early-stop-")
    build_reference_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = [row["prompt"] for row in addition_rows()[:4]]
    sampler = TransformersSampler(model, tokenizer, max_new_tokens=256, eos_token_id=list(range(100, 112)))
    seconds: dict[float, list[float]] = {1 / 8: [], 2.0: []}
    lengths = []
    for repeat in range(args.repeats):
        for share in seconds:  # interleaved
            sampler_module.DROP_FINISHED_SHARE = share
            sampler.set_seed(repeat)
            start = time.process_time()
            batch = sampler.generate(prompts, 8)
            seconds[share].append(time.process_time() - start)
        lengths += batch.completion_mask.sum(1).tolist()
    print(f"completion lengths: mean {statistics.mean(lengths):.1f}, max {max(lengths):.0f} (limit 256)")
    for share, values in seconds.items():
        label = "drop finished rows (default)" if share < 1 else "keep finished rows"
        print(f"{label:30s} {statistics.median(values):.3f} s CPU per generate (N = 32)")


if __name__ == "__main__":
    main()
