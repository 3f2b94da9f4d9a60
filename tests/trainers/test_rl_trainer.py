import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from grpokit.engine.checkpoint import list_checkpoints
from grpokit.rl import RLConfig, key_grouping
from grpokit.rl.policies import CategoricalPolicy
from grpokit.trainers.rl import RLTrainer, train


def config(**sections) -> RLConfig:
    """A small, quiet config; ``sections`` are merged over the defaults, e.g. algorithm={...}."""
    data = {
        "max_steps": 4,
        "environment": {"env": "grpokit/CueTasks-v0", "num_envs": 8},
        "algorithm": {"num_start_states": 4, "num_generations": 4},
        "policy": {"hidden_sizes": [32]},
        "optim": {"num_minibatches": 2},
        "evaluation": {"eval_steps": 0, "eval_episodes": 8},
        "logging": {"quiet": True, "report_to": [], "report": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return RLConfig.model_validate(data)


# CueTasks' four tasks as explicit variants: evaluation then cycles through them.
TASKS = [{"task": k} for k in range(4)]


def _drop_times(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def test_grpo_learns_cue_tasks_in_a_few_steps():
    cfg = config(
        max_steps=6,
        environment={"tasks": TASKS},
        algorithm={"num_start_states": 8, "num_generations": 8},
        evaluation={"eval_episodes": 40},
    )
    trainer = RLTrainer(cfg, run_dir=False)
    before = trainer.evaluate().mean()
    initial = [p.detach().clone() for p in trainer.policy.parameters()]
    result = trainer.train()
    # Returns: 8 steps x (bonus of the task + 1 if right). With the tasks listed, evaluation cycles
    # through them (bonuses 0, 2, 4, 8), so a random policy gets about 28 + 2 = 30 and the best 28 + 8 = 36.
    assert before < 32.0
    assert result.final_eval_returns.mean() >= 35.0
    assert all(not torch.equal(p0, p) for p0, p in zip(initial, trainer.policy.parameters()))
    assert result.steps == 6 and result.env_steps == 6 * 64 * 8


def test_grpo_cartpole_return_rises_from_random():
    cfg = config(
        max_steps=6,
        environment={"env": "CartPole-v1"},
        algorithm={"num_start_states": 4, "num_generations": 8},
    )
    result = train(cfg, run_dir=False)
    first, last = result.history[0]["episode/return_mean"], result.history[-2]["episode/return_mean"]
    # A random CartPole policy lasts about 22 steps.
    assert first < 35 and last > 2 * first


def test_ppo_trains_policy_and_value_network():
    cfg = config(algorithm={"algorithm": "ppo"}, max_steps=2)
    trainer = RLTrainer(cfg, run_dir=False)
    value_before = [p.detach().clone() for p in trainer.value_network.parameters()]
    result = trainer.train()
    row = result.history[0]
    for key in ("train/value_loss", "train/explained_variance", "train/policy_loss", "train/approx_kl"):
        assert np.isfinite(row[key])
    assert all(not torch.equal(a, b) for a, b in zip(value_before, trainer.value_network.parameters()))
    # PPO draws N distinct start states: no groups to form.
    assert len({s.seed for s in trainer._starts(0)}) == cfg.num_episodes


@pytest.mark.parametrize("mode", ["outcome", "process", "returns_to_go"])
@pytest.mark.parametrize("grouping", ["same_start", "task", "similarity", "batch"])
def test_every_mode_and_grouping_runs(mode, grouping):
    cfg = config(max_steps=1, algorithm={"advantage_mode": mode, "grouping": grouping})
    row = train(cfg, run_dir=False).history[0]
    assert np.isfinite(row["train/policy_loss"])
    expected_groups = {"same_start": 4, "batch": 1}
    if grouping in expected_groups:
        assert row["groups/num_groups"] == expected_groups[grouping]


def test_custom_policy_and_grouping():
    class Linear(CategoricalPolicy):
        pass

    seen = []

    def by_task(batch):
        seen.append(batch.num_episodes)
        return key_grouping(lambda e: e.reset_info["task"])(batch)

    policy = Linear(nn.Linear(8, 4), num_actions=4)
    trainer = RLTrainer(config(max_steps=1), policy=policy, grouping=by_task, run_dir=False)
    trainer.train()
    assert trainer.policy is policy and seen == [16]


def test_kl_to_reference_policy():
    cfg = config(max_steps=3, algorithm={"beta": 0.1})
    trainer = RLTrainer(cfg, run_dir=False)
    reference = [p.detach().clone() for p in trainer.reference.parameters()]
    result = trainer.train()
    assert result.history[0]["train/kl"] >= 0 and result.history[-2]["train/kl"] > 0
    assert all(torch.equal(a, b) for a, b in zip(reference, trainer.reference.parameters()))


def test_gaussian_entropy_bonus_raises_the_std():
    cfg = config(
        max_steps=3,
        environment={"env": "Pendulum-v1", "max_episode_steps": 10},
        algorithm={"entropy_coef": 1.0, "num_iterations": 2},
        optim={"learning_rate": 1e-2, "max_grad_norm": None},
    )
    trainer = RLTrainer(cfg, run_dir=False)
    result = trainer.train()
    # The bonus (weight 1) dominates the clipped surrogate, so the learned log-std grows.
    assert trainer.policy.log_std.detach().min() > 0.05
    assert result.history[-2]["train/entropy"] > result.history[0]["train/entropy"]


def test_target_return_stops_training():
    cfg = config(
        max_steps=50,
        environment={"tasks": TASKS},
        algorithm={"num_start_states": 8, "num_generations": 8},
        evaluation={"eval_steps": 1, "eval_episodes": 40, "target_return": 35.0},
    )
    result = train(cfg, run_dir=False)
    assert result.solved_step is not None and 1 < result.steps == result.solved_step < 50
    assert result.solved_env_steps == result.env_steps
    assert result.history[-1]["eval/return_mean"] >= 35.0
    assert all(row["eval/return_mean"] < 35.0 for row in result.history[:-1])


# CueTasks registered with a reward_threshold, as gymnasium's own envs are: with the four tasks listed, the
# greedy optimum is 36 and a random policy gets about 30.
SOLVABLE_ID = "grpokit-test/SolvableCueTasks-v0"


def solvable_env() -> str:
    import gymnasium as gym

    from grpokit.rl.envs import CueTasksEnv

    if SOLVABLE_ID not in gym.registry:
        gym.register(
            id=SOLVABLE_ID, entry_point=f"{CueTasksEnv.__module__}:{CueTasksEnv.__qualname__}",
            max_episode_steps=1000, reward_threshold=35.0,
        )  # fmt: skip
    return SOLVABLE_ID


def solvable_config(max_steps=50, evaluation=None, **sections) -> RLConfig:
    return config(
        max_steps=max_steps,
        environment={"env": solvable_env(), "tasks": TASKS},
        algorithm={"num_start_states": 8, "num_generations": 8},
        evaluation={"eval_steps": 1, "eval_episodes": 40, **(evaluation or {})},
        **sections,
    )


def test_the_envs_reward_threshold_stops_training_when_solved():
    trainer = RLTrainer(solvable_config(), run_dir=False)
    assert trainer.target_return == 35.0  # from the env's spec: the config sets none
    result = trainer.train()
    assert result.solved_step is not None and 1 < result.steps == result.solved_step < 50
    assert result.stop_reason == "solved" and result.target_return == 35.0
    assert result.solved_env_steps == result.env_steps
    assert result.history[-1]["eval/return_mean"] >= 35.0
    assert all(row["eval/return_mean"] < 35.0 for row in result.history[:-1])


def test_keep_going_trains_to_the_budget_and_still_reports_the_solved_step():
    solved = train(solvable_config(), run_dir=False)
    cfg = solvable_config(max_steps=solved.solved_step + 2, evaluation={"stop_when_solved": False})
    result = train(cfg, run_dir=False)
    assert result.steps == solved.solved_step + 2 and result.stop_reason == "max_steps"
    assert (result.solved_step, result.solved_env_steps) == (solved.solved_step, solved.solved_env_steps)


def test_the_config_target_overrides_the_envs_threshold():
    trainer = RLTrainer(solvable_config(evaluation={"target_return": 1000.0}, max_steps=2), run_dir=False)
    assert trainer.target_return == 1000.0
    result = trainer.train()
    assert result.steps == 2 and result.solved_step is None and result.stop_reason == "max_steps"


def test_an_env_without_a_threshold_runs_to_max_steps():
    cfg = config(max_steps=4, environment={"tasks": TASKS}, evaluation={"eval_steps": 1})
    trainer = RLTrainer(cfg, run_dir=False)
    assert trainer.target_return is None  # grpokit/CueTasks-v0 registers none
    result = trainer.train()
    assert result.steps == 4 and result.stop_reason == "max_steps"
    assert result.solved_step is None and result.target_return is None
    assert sum("eval/return_mean" in row for row in result.history) == 4


def test_the_final_evaluation_also_counts_as_solving():
    # eval_steps 0: the only evaluation is the final one, and it is checked against the target too.
    result = train(
        solvable_config(evaluation={"eval_steps": 0, "target_return": 0.0}, max_steps=2), run_dir=False
    )
    assert result.steps == 2 and result.solved_step == 2 and result.stop_reason == "max_steps"


def test_a_run_that_stopped_solved_resumes_as_solved(tmp_path):
    first = train(solvable_config(), run_dir=tmp_path / "run")
    resumed = RLTrainer(solvable_config(checkpoint={"resume": str(tmp_path / "run")}))
    assert resumed.step == first.steps
    result = resumed.train()
    assert result.steps == first.steps and result.stop_reason == "solved"
    assert result.solved_step == first.solved_step and result.solved_env_steps == first.solved_env_steps


def test_env_step_budget_stops_training():
    result = train(config(max_steps=50, max_env_steps=300), run_dir=False)
    # Each step runs 16 episodes of 8 steps.
    assert result.steps == 3 and result.env_steps == 384 and result.stop_reason == "max_env_steps"


def test_same_config_same_run():
    a = train(config(max_steps=2), run_dir=False)
    b = train(config(max_steps=2), run_dir=False)
    assert _drop_times(a.history) == _drop_times(b.history)


def test_run_directory_layout(tmp_path):
    cfg = config(
        max_steps=3,
        checkpoint={"save_steps": 1, "save_total_limit": 2},
        logging={"report_to": ["tensorboard"], "report": True},
    )
    result = train(cfg, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert RLConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text())) == cfg
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 3]  # the last row is the final evaluation
    assert "eval/return_mean" in rows[-1]
    assert any((run / "tensorboard").iterdir())
    # save_total_limit=2 keeps the two newest.
    assert [p.name for p in list_checkpoints(run)] == ["step-000002", "step-000003"]
    state = torch.load(run / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 3 and state["env_steps"] == result.env_steps
    assert (run / "checkpoints" / "step-000003" / "policy.safetensors").is_file()


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = train(config(max_steps=4, algorithm={"algorithm": "ppo"}), run_dir=tmp_path / "full")
    train(config(max_steps=2, algorithm={"algorithm": "ppo"}), run_dir=tmp_path / "part")
    resumed = RLTrainer(
        config(max_steps=4, algorithm={"algorithm": "ppo"}, checkpoint={"resume": str(tmp_path / "part")})
    )
    assert resumed.harness.resume_from == tmp_path / "part" / "checkpoints" / "step-000002"
    assert resumed.step == 2
    resumed.train()
    rows = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    # The part run's final evaluation row (step 2) stays; steps 3 and 4 are the resumed ones.
    training_rows = [r for r in rows if "train/policy_loss" in r]
    assert _drop_times(training_rows) == _drop_times([r for r in full.history if "train/policy_loss" in r])
    for name in ("policy", "value"):
        from safetensors.torch import load_file

        a = load_file(str(tmp_path / "full" / "checkpoints" / "step-000004" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "part" / "checkpoints" / "step-000004" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_errors(tmp_path):
    # The same errors, and the same meaning of `latest`, as the language-model trainers (one harness).
    with pytest.raises(ValueError, match="has no checkpoint under checkpoints/step-"):
        RLTrainer(config(checkpoint={"resume": str(tmp_path)}))
    with pytest.raises(ValueError, match="--resume latest: no run with a checkpoint in output_dir"):
        RLTrainer(config(checkpoint={"resume": "latest"}, logging={"output_dir": str(tmp_path)}))


def test_config_validation_names_fields():
    with pytest.raises(ValueError, match="unknown grouping 'clusters'"):
        config(algorithm={"grouping": "clusters"})
    with pytest.raises(ValueError, match="unknown advantage_estimator 'gae'"):
        config(algorithm={"advantage_estimator": "gae"})
    with pytest.raises(ValueError, match=r"num_minibatches \(32\) exceeds the N .* = 16 episodes"):
        config(optim={"num_minibatches": 32})
    with pytest.raises(ValueError, match="'same_start' needs algorithm.num_generations >= 2"):
        config(algorithm={"num_generations": 1})
    config(algorithm={"num_generations": 1, "grouping": "task"})  # other groupings mix start states
    with pytest.raises(ValueError, match="unknown field 'gama'; did you mean 'algorithm.gamma'"):
        RLConfig.model_validate({"gama": 0.9})


def test_every_config_field_has_a_description():
    from grpokit.config import field_help

    missing = [path for path, _, text in field_help(RLConfig) if not text]
    assert missing == []


def test_non_finite_updates_are_skipped_and_a_streak_stops_the_run(monkeypatch, tmp_path):
    """Classic RL goes through the same update engine and harness: a NaN loss skips the optimizer step (the
    weights stay), is counted, and max_consecutive_nonfinite of them in a row stop the run."""
    from grpokit.engine.faults import NonFiniteUpdatesError
    from grpokit.trainers import rl as rl_trainer

    real = rl_trainer.compute_loss
    calls = [0]

    def poisoned(*args, **kwargs):
        calls[0] += 1
        loss, metrics = real(*args, **kwargs)
        return loss * float("nan"), metrics

    trainer = RLTrainer(config(max_steps=6, optim={"max_consecutive_nonfinite": 2}), run_dir=tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    monkeypatch.setattr(rl_trainer, "compute_loss", poisoned)
    with pytest.raises(
        NonFiniteUpdatesError, match=r"8 optimizer steps in a row .*max_consecutive_nonfinite=2"
    ):
        trainer.train()
    assert calls[0] > 0
    assert all(torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/faults/nonfinite_skipped"] for r in rows] == [8.0]  # 4 passes x 2 minibatches, step 1
