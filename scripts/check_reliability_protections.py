"""Switch off each reliability protection, one at a time, in a copy of the tree, and check that the tests
meant to guard it then fail (docs/reliability.md, "What the test suite tries").

``python scripts/check_reliability_protections.py [NAME ...]`` copies ``HEAD`` (``git archive``) to a
temporary directory, and for each protection (or those whose name contains one of the NAMEs) replaces one
piece of source, runs its tests against the copy and prints CAUGHT or MISSED. Takes 10 to 15 minutes on
two cores; the working tree is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (protection, file, source to replace, replacement, tests that must then fail)
K = "tests/engine/test_resume_kill.py::"
F = "tests/engine/test_faults.py::"
U = "tests/engine/test_update.py::"
R = "tests/rewards/test_reward_failures.py"
MUTATIONS = [
    (
        "rewind on resume",
        "src/grpokit/engine/harness.py",
        "self.parallel.on_main(lambda: rewind_run_dir(run_dir, start_step))",
        "pass",
        [F + "test_crash_mid_save_leaves_the_previous_checkpoint_to_resume_from"],
    ),
    (
        "global RNG restore",
        "src/grpokit/trainers/grpo.py",
        'ckpt.restore_rng_state(state["rng"])',
        "pass",
        [K + "test_sigkill_mid_step_then_resume_matches_the_uninterrupted_run"],
    ),
    (
        "sampler RNG restore",
        "src/grpokit/trainers/grpo.py",
        'self.sampler.load_state_dict(state["sampler"])',
        "pass",
        [F + "test_out_of_memory_in_generation_checkpoints_the_last_step_and_resumes_exactly"],
    ),
    (
        "data position restore",
        "src/grpokit/trainers/grpo.py",
        'self.prompt_iter.load_state_dict(state["data"])',
        "pass",
        [F + "test_out_of_memory_in_generation_checkpoints_the_last_step_and_resumes_exactly"],
    ),
    (
        "non-finite skip",
        "src/grpokit/engine/update.py",
        "if not (loss_finite and all(math.isfinite(n) for n in norms)):",
        "if False:",
        [
            U + "test_step_optimizers_skips_non_finite_gradients_without_touching_adam",
            U + "test_a_non_finite_loss_skips_every_optimizer_and_is_counted",
            F + "test_a_non_finite_update_is_skipped_counted_and_training_continues",
            "tests/trainers/test_ppo_pieces.py::test_a_non_finite_loss_skips_both_optimizers",
        ],
    ),
    (
        "non-finite streak limit",
        "src/grpokit/engine/faults.py",
        "if self.consecutive < self.max_consecutive:",
        "if True:",
        [F + "test_consecutive_non_finite_updates_stop_with_the_last_good_checkpoint"],
    ),
    (
        "stop signals",
        "src/grpokit/engine/faults.py",
        "if threading.current_thread() is threading.main_thread():",
        "if False:",
        [
            F + "test_sigterm_during_a_step_saves_it_and_raises",
            K + "test_sigterm_finishes_the_step_checkpoints_and_exits_143",
        ],
    ),
    (
        "out-of-memory guard",
        "src/grpokit/engine/faults.py",
        "if error is None or not is_out_of_memory(error):",
        "if True:",
        [F + "test_out_of_memory_in_generation_checkpoints_the_last_step_and_resumes_exactly"],
    ),
    (
        "out-of-memory checkpoint",
        "src/grpokit/trainers/grpo.py",
        "self.save_checkpoint(step - 1, before)",
        "pass",
        [F + "test_out_of_memory_in_generation_checkpoints_the_last_step_and_resumes_exactly"],
    ),
    (
        "atomic checkpoint dir",
        "src/grpokit/engine/checkpoint.py",
        "with atomic_directory(final) as tmp:",
        "with __import__('contextlib').nullcontext(final) as tmp:",
        [F + "test_crash_mid_save_leaves_the_previous_checkpoint_to_resume_from"],
    ),
    (
        "disk-full error",
        "src/grpokit/engine/checkpoint.py",
        "        except OSError as err:\n            previous",
        "        except ZeroDivisionError as err:\n            previous",
        [F + "test_disk_full_while_saving_is_a_clear_error_and_keeps_the_last_checkpoint"],
    ),
    (
        "stale temporaries",
        "src/grpokit/engine/checkpoint.py",
        "            _remove_stale_temporaries(root)\n",
        "",
        [F + "test_next_save_cleans_what_a_kill_mid_save_left"],
    ),
    (
        "complete checkpoints only",
        "src/grpokit/engine/checkpoint.py",
        "and (p / STATE_FILE).is_file()",
        "and p.is_dir()",
        [F + "test_a_directory_without_trainer_state_is_not_a_checkpoint"],
    ),
    (
        "reward guard",
        "src/grpokit/rewards/pipeline.py",
        "            values, failures = guarded_call(\n                fn, name, batch.prompts, batch.completions, batch.columns, self.failure_policy,\n                self._reported_failures,\n            )  # fmt: skip",
        "            values, failures = _check_values(name, fn(batch.prompts, batch.completions, **batch.columns), n), 0",
        [R],
    ),
    (
        "reward timeout",
        "src/grpokit/rewards/failures.py",
        "    if timeout_s is None:\n        return fn()",
        "    if True:\n        return fn()",
        [R + "::test_hung_function_times_out_under_both_policies"],
    ),
    (
        "OOM passes reward guard",
        "src/grpokit/rewards/failures.py",
        "        if _is_out_of_memory(err):\n            raise\n",
        "",
        [R + "::test_out_of_memory_is_not_a_reward_failure"],
    ),
    (
        "no NaN/inf in config",
        "src/grpokit/config/base.py",
        ", allow_inf_nan=False",
        "",
        ["tests/test_config_validation.py"],
    ),
    (
        "trainer re-validates config",
        "src/grpokit/trainers/grpo.py",
        "config = build_config(type(config), config.model_dump())",
        "pass",
        [
            "tests/test_config_validation.py::test_a_config_copied_around_validation_is_checked_again_by_the_trainer"
        ],
    ),
    (
        "process reward + estimator",
        "src/grpokit/config/trainers.py",
        'if self.rewards.process_reward_func is not None and estimator != "grpo":',
        "if False:",
        ["tests/test_config_validation.py"],
    ),
    (
        "ref sync without beta",
        "src/grpokit/config/loss.py",
        "if self.ref_model_sync_steps > 0 and self.beta == 0:",
        "if False:",
        ["tests/test_config_validation.py"],
    ),
    (
        "long-prompt screening",
        "src/grpokit/trainers/grpo.py",
        # The screening runs, its result is dropped: the dataset is kept whole and nothing is counted.
        "self.dataset, self.data_counts = ",
        "_, self.data_counts = self.dataset, {}; _unused = ",
        [
            F + "test_long_prompts_are_counted_and_truncated_or_skipped",
            F + "test_a_long_prompt_under_error_is_named_before_the_model_loads",
        ],
    ),
    (
        "duplicate ids",
        "src/grpokit/data/prompts.py",
        "        _check_unique_ids(rows, id_column, name, lines)\n",
        "        pass\n",
        ["tests/data/test_bad_input.py"],
    ),
    (
        "invalid Unicode",
        "src/grpokit/data/prompts.py",
        '        text.encode("utf-8")\n',
        "        pass\n",
        ["tests/data/test_bad_input.py"],
    ),
    (
        "weights_only",
        "src/grpokit/engine/checkpoint.py",
        'map_location="cpu", weights_only=True)',
        'map_location="cpu", weights_only=False)',
        ["tests/test_safe_loading.py"],
    ),
    (
        "reward model safetensors",
        "src/grpokit/rewards/reward_model.py",
        ", use_safetensors=True",
        "",
        ["tests/test_safe_loading.py"],
    ),
    (
        "refreshed reference restored",
        "src/grpokit/engine/checkpoint.py",
        '    return load_module(reference, checkpoint, REFERENCE_FILE.removesuffix(".safetensors"))',
        "    return False",
        [K + "test_sigterm_finishes_the_step_checkpoints_and_exits_143"],
    ),
    (
        "CLI exit status",
        "src/grpokit/cli.py",
        "        if not isinstance(err, TrainingAborted):\n            raise",
        "        raise",
        [K + "test_sigterm_finishes_the_step_checkpoints_and_exits_143"],
    ),
]


def main(names: list[str]) -> int:
    repo = Path(__file__).resolve().parents[1]
    missed = 0
    with tempfile.TemporaryDirectory() as root:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=repo, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": f"{root}/src", "OMP_NUM_THREADS": "1"}
        for name, path, old, new, tests in MUTATIONS:
            if names and not any(n in name for n in names):
                continue
            file = Path(root) / path
            pristine = file.read_text()
            if pristine.count(old) != 1:
                print(f"STALE   {name}: the source to replace is no longer in {path}")
                missed += 1
                continue
            file.write_text(pristine.replace(old, new))
            try:
                start = time.time()
                run = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                    cwd=root, env=env, capture_output=True, text=True, timeout=900,
                )  # fmt: skip
            finally:
                file.write_text(pristine)
            caught = run.returncode != 0
            missed += not caught
            failed = [line for line in run.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
            detail = failed[0][:120] if failed else f"exit status {run.returncode}"
            print(
                f"{'CAUGHT' if caught else 'MISSED':7s} {name:30s} {time.time() - start:4.0f}s {detail}",
                flush=True,
            )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
