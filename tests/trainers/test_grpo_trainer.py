"""End-to-end runs of GRPOTrainer on a tiny model (seconds each)."""

import json

import pytest
import torch
import yaml

from grpokit.engine import checkpoint as ckpt
from grpokit.models import forward
from grpokit.tracking import read_metrics, read_samples
from grpokit.tracking.timing import PhaseTimer
from grpokit.trainers import language_model, phases
from grpokit.trainers import objective as objective_module
from grpokit.trainers.grpo import GRPOTrainer


def fraction_of_a(prompts, completions, **columns):
    """Trivially learnable: the share of 'a' characters in the completion."""
    return [c.count("a") / max(len(c), 1) for c in completions]


def test_reward_rises_and_every_parameter_changes(make_config, rows):
    config = make_config(
        max_steps=20,
        data={"prompts_per_step": 4},
        algorithm={"num_generations": 8},
        generation={"max_new_tokens": 8},
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    result = trainer.train()

    unchanged = [name for name, p in trainer.model.named_parameters() if torch.equal(before[name], p)]
    assert unchanged == []
    rewards = [row["reward/mean"] for row in read_metrics(result.run_dir)]
    assert len(rewards) == 20
    # Seeded run: the reward of the last 5 steps clearly exceeds that of the first 5 (0.15 -> 0.4 here).
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5 + 0.1


def test_run_directory_layout_and_metrics(make_config, rows):
    config = make_config(
        max_steps=2,
        checkpoint={"save_steps": 1, "save_total_limit": 1},
        logging={"log_sample_groups": 1, "report_to": ["tensorboard"]},
    )
    result = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows).train()
    run = result.run_dir
    assert yaml.safe_load((run / "config.yaml").read_text())["algorithm"]["num_generations"] == 4
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2]
    expected = {
        "reward/mean",
        "reward/std",
        "rewards/fraction_of_a/mean",
        "rewards/fraction_of_a/std",
        "rewards/unscored_fraction",
        "zero_std_group_fraction",
        "advantages/mean",
        "advantages/std",
        "advantages/min",
        "advantages/max",
        "clip_fraction",
        "clip_fraction_low",
        "clip_fraction_high",
        "entropy",
        "completions/mean_length",
        "completions/max_length",
        "completions/truncated_fraction",
        "throughput/generate_tokens_per_s",
        "throughput/train_tokens_per_s",
        "time/step",
        "time/generate",
        "time/score",
        "time/update",
        "memory/peak_rss_mb",
        "lr",
        "grad_norm",
        "policy_loss",
    }
    assert expected <= set(metrics[0])
    assert metrics[0]["ratio_mean"] == 1.0  # on-policy, num_iterations = 1
    samples = read_samples(run)
    assert [s["step"] for s in samples] == [1, 2]  # one group per step
    assert len(samples[0]["completions"]) == len(samples[0]["rewards"]) == len(samples[0]["advantages"]) == 4
    assert list((run / "tensorboard").iterdir())
    # save_total_limit=1 keeps only the newest periodic checkpoint; the final model is separate.
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002"]
    assert (run / "final" / "model.safetensors").is_file()
    assert not list(run.glob("**/.tmp-*"))


def test_checkpoint_reloads_with_plain_transformers(make_config, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config(max_steps=2, checkpoint={"save_steps": 2})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    result = trainer.train()
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    with torch.no_grad():
        expected = trainer.model(ids).logits
    for path in (result.final_dir, result.run_dir / "checkpoints" / "step-000002"):
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert tokenizer.decode(tokenizer("abc")["input_ids"]) == "abc"
        with torch.no_grad():
            assert torch.equal(model(ids).logits, expected)


def test_resume_reproduces_the_uninterrupted_run(make_config, rows, tmp_path):
    full = make_config(
        max_steps=4,
        checkpoint={"save_steps": 2, "save_total_limit": None},
        algorithm={"beta": 0.1, "num_generations": 4},
    )
    reference = GRPOTrainer(full, reward_funcs=[fraction_of_a], dataset=rows).train()
    # Continue the same run from its step-2 checkpoint, with the metrics after it removed.
    resumed_run = tmp_path / "resumed"
    import shutil

    shutil.copytree(reference.run_dir, resumed_run)
    shutil.rmtree(resumed_run / "checkpoints" / "step-000004")
    lines = (resumed_run / "metrics.jsonl").read_text().splitlines()[:2]
    (resumed_run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    resume = full.model_copy(
        update={"checkpoint": full.checkpoint.model_copy(update={"resume": str(resumed_run)})}
    )
    trainer = GRPOTrainer(resume, reward_funcs=[fraction_of_a], dataset=rows)
    assert trainer.start_step == 2 and trainer.run_dir == resumed_run
    trainer.train()
    keys = ("reward/mean", "loss", "kl", "grad_norm", "lr")
    got = [{k: m[k] for k in keys} for m in read_metrics(resumed_run)]
    want = [{k: m[k] for k in keys} for m in read_metrics(reference.run_dir)]
    assert got == want


def test_beta_zero_never_builds_a_reference_model(make_config, rows, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a reference model was built with beta = 0")

    monkeypatch.setattr(language_model, "ReferencePolicy", forbidden)
    trainer = GRPOTrainer(make_config(max_steps=1), reward_funcs=[fraction_of_a], dataset=rows)
    assert trainer.reference is None
    assert "kl" not in trainer.train().last_metrics


def test_beta_positive_uses_a_frozen_reference(make_config, rows):
    trainer = GRPOTrainer(
        make_config(max_steps=2, algorithm={"beta": 0.1}), reward_funcs=[fraction_of_a], dataset=rows
    )
    initial = {k: v.clone() for k, v in trainer.reference.model.state_dict().items()}
    metrics = trainer.train().last_metrics
    assert all(torch.equal(initial[k], v) for k, v in trainer.reference.model.state_dict().items())
    assert not any(p.requires_grad for p in trainer.reference.model.parameters())
    assert metrics["kl"] > 0  # the policy moved away from the reference


def test_reference_resyncs_every_n_steps(make_config, rows):
    trainer = GRPOTrainer(
        make_config(max_steps=2, algorithm={"beta": 0.1, "ref_model_sync_steps": 2}),
        reward_funcs=[fraction_of_a],
        dataset=rows,
    )
    trainer.train()
    policy = trainer.model.state_dict()
    assert all(torch.equal(policy[k], v) for k, v in trainer.reference.model.state_dict().items())


@pytest.mark.parametrize(
    ("num_iterations", "mini_batch_size", "optimizer_steps"), [(1, None, 1), (2, None, 2), (1, 2, 4)]
)
def test_old_logprobs_pass_only_when_a_batch_gets_several_optimizer_steps(
    make_config, rows, monkeypatch, num_iterations, mini_batch_size, optimizer_steps
):
    """pi_old is frozen before the first optimizer step whenever there is more than one (mu > 1, or several
    minibatches at mu = 1); with exactly one, the current log-probs detached are pi_old and cost nothing.
    At mu = 1 with 4 minibatches the later minibatches used to see ratio == 1 (nothing clipped, ever)."""
    calls = []
    real = objective_module.sequence_logprobs

    def spy(model, batch, micro_batch_size):
        calls.append(model)
        return real(model, batch, micro_batch_size)

    monkeypatch.setattr(objective_module, "sequence_logprobs", spy)
    config = make_config(
        max_steps=1,
        algorithm={"num_iterations": num_iterations},
        optim={"learning_rate": 3e-2, "mini_batch_size": mini_batch_size},
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    metrics = trainer.train().last_metrics
    assert metrics["optimizer_steps"] == optimizer_steps
    assert len(calls) == (optimizer_steps > 1) and all(m is trainer.model for m in calls)
    if optimizer_steps == 1:
        assert metrics["ratio_min"] == metrics["ratio_max"] == 1.0
    else:  # later minibatches / passes see the updated policy against the frozen pi_old
        assert metrics["ratio_max"] > 1.0 or metrics["ratio_min"] < 1.0


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean", "constant"])
def test_gradient_accumulation_matches_one_big_batch(make_config, rows, aggregation):
    import copy

    config = make_config(algorithm={"loss_aggregation": aggregation})
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    batch, scores, _ = trainer.collect_rollouts(PhaseTimer())
    advantages, loss_mask = phases.compute_advantages(batch, scores, config.algorithm)
    loss_mask[0, 2:] = 0  # uneven token counts per micro-batch make the weighting matter

    logged = {}

    def gradient(accumulation: int) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(trainer.model)
        start = {k: v.clone() for k, v in model.named_parameters()}
        optim = config.optim.model_copy(
            update={"gradient_accumulation_steps": accumulation, "max_grad_norm": None}
        )
        logged[accumulation] = objective_module.update_policy(
            model,
            torch.optim.SGD(model.parameters(), lr=1.0),
            batch,
            advantages,
            loss_mask,
            algorithm=config.algorithm,
            optim=optim,
            max_new_tokens=6,
        ).as_metrics()
        return {k: start[k] - v.detach() for k, v in model.named_parameters()}  # = the gradient (SGD, lr 1)

    whole, split = gradient(1), gradient(4)
    assert any(g.abs().max() > 1e-4 for g in whole.values())
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-7)
    # The logged loss is the minibatch's loss however it was split (it used to be token-weighted for every
    # aggregation, which is wrong for sequence_mean and constant).
    for key in ("loss", "policy_loss"):
        assert logged[4][key] == pytest.approx(logged[1][key], rel=1e-5, abs=1e-8)


def test_unscored_samples_are_masked_out(make_config, rows):
    def only_first_group(prompts, completions, **columns):
        return [fraction_of_a(prompts, [c])[0] if p == "ab" else None for p, c in zip(prompts, completions)]

    result = GRPOTrainer(make_config(max_steps=1), reward_funcs=[only_first_group], dataset=rows).train()
    metrics = read_metrics(result.run_dir)[0]
    assert metrics["rewards/unscored_fraction"] == 0.5
    assert metrics["loss_mask/token_fraction"] == pytest.approx(0.5, abs=0.25)  # only group "ab" trains
    sample = read_samples(result.run_dir)
    assert sample[1]["rewards"] == [None] * 4 and sample[1]["advantages"] == [0.0] * 4


def test_empty_prompt_row_is_named(make_config):
    with pytest.raises(ValueError, match="row 1: column 'prompt' is an empty prompt"):
        GRPOTrainer(make_config(), reward_funcs=[fraction_of_a], dataset=[{"prompt": "ab"}, {"prompt": " "}])


def test_sequence_logprobs_do_not_depend_on_batch_padding(tiny_model_dir):
    """A row's log-probs are the same alone or next to a longer prompt (left padding + positions)."""
    from grpokit.models.loading import load_model
    from grpokit.rollout.batch import RolloutBatch

    model = load_model(tiny_model_dir)

    def batch(prompts, completions):
        P, T = max(map(len, prompts)), max(map(len, completions))
        ids = torch.tensor([[0] * (P - len(p)) + p for p in prompts])
        comp = torch.tensor([c + [0] * (T - len(c)) for c in completions])
        return RolloutBatch(
            prompt_ids=ids,
            prompt_mask=(ids != 0).long(),
            completion_ids=comp,
            completion_mask=(comp != 0).float(),
            group_ids=torch.arange(len(prompts)),
            temperatures=torch.ones(len(prompts)),
            truncated=torch.zeros(len(prompts), dtype=torch.bool),
            prompts=[""] * len(prompts),
            completions=[""] * len(prompts),
        )

    alone = forward.sequence_logprobs(model, batch([[4, 5]], [[6, 7, 8]]), 8)
    padded = forward.sequence_logprobs(
        model, batch([[4, 5], [9, 10, 11, 12, 9, 10]], [[6, 7, 8], [5, 6, 7, 8, 9]]), 8
    )
    torch.testing.assert_close(padded[0, :3], alone[0], rtol=1e-5, atol=1e-6)
    assert padded[0, 3:].abs().sum() == 0


def test_metrics_rows_are_valid_json(make_config, rows):
    result = GRPOTrainer(make_config(max_steps=1), reward_funcs=[fraction_of_a], dataset=rows).train()
    for line in (result.run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert all(isinstance(v, (int, float)) for v in row.values())


def test_data_file_errors_name_the_row(make_config, tmp_path, monkeypatch):
    import grpokit.models.loading

    monkeypatch.setattr(
        grpokit.models.loading, "load_model", lambda *a, **k: pytest.fail("model loaded first")
    )
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ab", "answer": "1"}\n{"prompt": "cd"}\n')
    config = make_config(data={"path": str(path), "task": None}, rewards={"reward_funcs": ["accuracy"]})
    with pytest.raises(
        ValueError,
        match=r"prompts.jsonl: column 'answer' is missing \(first row lacking it: row 1 \(line 2\)\)",
    ):
        GRPOTrainer(config)
    path.write_text('{"prompt": "ab", "answer": "1"}\n{"prompt": "", "answer": "2"}\n')
    with pytest.raises(
        ValueError, match=r"prompts.jsonl: row 1 \(line 2\): column 'prompt' is an empty prompt"
    ):
        GRPOTrainer(config)


@pytest.mark.parametrize(
    "sections",
    [
        {"generation": {"temperature_schedule": [0.7, 1.0]}},
        {"algorithm": {"entropy_coef": 0.01}},
        {"algorithm": {"ratio_level": "sequence", "loss_aggregation": "constant", "epsilon_low": 3e-4}},
        {
            "algorithm": {"dynamic_sampling": True, "overlong_filtering": True},
            "rewards": {"overlong_buffer_length": 2},
        },
        {
            "algorithm": {"num_iterations": 2, "beta": 0.05, "kl_estimator": "k2"},
            "optim": {"mini_batch_size": 4},
        },
        {
            "algorithm": {"advantage_estimator": "rloo", "epsilon_high": 0.28},
            "optim": {"lr_scheduler": "cosine"},
        },
        {"algorithm": {"loss_type": "gspo", "epsilon_low": 3e-4, "epsilon_high": 4e-4}},
        {"algorithm": {"loss_type": "cispo", "epsilon_high": 4.0}},
        {"algorithm": {"loss_type": "sapo"}},
    ],
    ids=[
        "temperature-schedule",
        "entropy-bonus",
        "gspo-dr-grpo",
        "dapo",
        "mu2-minibatches-kl",
        "rloo",
        "loss-gspo",
        "loss-cispo",
        "loss-sapo",
    ],  # fmt: skip
)
def test_option_combinations_train_on_policy(make_config, rows, sections):
    config = make_config(max_steps=2, **sections)
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    metrics = read_metrics(trainer.train().run_dir)
    assert len(metrics) == 2
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    if config.algorithm.num_iterations == 1 and config.optim.mini_batch_size is None:
        # One pass, one optimizer step: the ratio to pi_old is exactly 1, whatever the temperatures.
        assert metrics[0]["ratio_min"] == metrics[0]["ratio_max"] == 1.0
    assert all(m["logprobs/sampler_mismatch"] < 1e-4 for m in metrics)


def test_process_rewards_drive_per_token_advantages(make_config, rows, tmp_path):
    path = tmp_path / "prm.py"
    path.write_text(
        "def steps_of_a(prompts, completions, **columns):\n"
        "    return [[(t, float(ch == 'a')) for t, ch in enumerate(c)] or None for c in completions]\n"
    )
    config = make_config(
        max_steps=2, rewards={"reward_funcs": ["length_penalty"], "process_reward_func": f"{path}:steps_of_a"}
    )
    result = GRPOTrainer(config, dataset=rows).train()
    metrics = read_metrics(result.run_dir)[-1]
    assert {"rewards/process/mean", "rewards/length_penalty/mean", "advantages/max"} <= set(metrics)
    assert metrics["advantages/max"] > 0 > metrics["advantages/min"]


def test_no_reward_is_an_error_naming_reward_funcs_before_any_model_loads(make_config, rows, monkeypatch):
    """A user's prompts and no reward used to train silently on the built-in addition checker."""
    monkeypatch.setattr(
        language_model, "load_dataset", lambda *a, **k: pytest.fail("got past the reward check")
    )
    with pytest.raises(ValueError, match=r"no reward: name one in rewards.reward_funcs \(--reward_funcs"):
        GRPOTrainer(make_config(rewards={"reward_funcs": []}), dataset=rows)


def test_default_update_splits_to_the_token_budget_with_the_unsplit_gradient(make_config, rows, monkeypatch):
    """Lean by default: with N*T over the default optim.micro_batch_tokens the update and the reference pass
    run in micro-batches within the budget (no setting touched), and the gradient is the unsplit one."""
    import copy

    from grpokit.config import OptimConfig

    budget = OptimConfig().micro_batch_tokens
    assert budget is not None  # the default splits
    T = 150
    G = -(-budget // (len(rows) * T)) + 1  # N * (T + prompt) > budget
    config = make_config(
        data={"prompts_per_step": len(rows)},
        generation={"max_new_tokens": T, "min_new_tokens": T},
        algorithm={"num_generations": G, "beta": 0.04},
    )
    trainer = GRPOTrainer(config, reward_funcs=[fraction_of_a], dataset=rows)
    batch, scores, _ = trainer.collect_rollouts(PhaseTimer())
    advantages, loss_mask = phases.compute_advantages(batch, scores, config.algorithm)
    loss_mask[0, 5:] = 0  # uneven token counts per micro-batch make the weighting matter
    row_tokens = objective_module.row_tokens(batch)
    assert int(row_tokens.sum()) > budget

    shapes: list[tuple[int, int]] = []
    no_grad_rows: list[int] = []
    real_forward, real_logprobs = objective_module.policy_forward, objective_module.sequence_logprobs

    def forward_spy(model, inputs, *args, **kwargs):
        shapes.append(
            (inputs["prompt_ids"].shape[0], inputs["prompt_ids"].shape[1] + inputs["completion_ids"].shape[1])
        )
        return real_forward(model, inputs, *args, **kwargs)

    def logprobs_spy(model, batch, micro_batch_size):
        no_grad_rows.append(micro_batch_size)
        return real_logprobs(model, batch, micro_batch_size)

    monkeypatch.setattr(objective_module, "policy_forward", forward_spy)
    monkeypatch.setattr(objective_module, "sequence_logprobs", logprobs_spy)

    def gradient(optim: OptimConfig) -> dict[str, torch.Tensor]:
        model = copy.deepcopy(trainer.model)
        start = {k: v.clone() for k, v in model.named_parameters()}
        objective_module.update_policy(
            model, torch.optim.SGD(model.parameters(), lr=1.0), batch, advantages, loss_mask,
            algorithm=config.algorithm, optim=optim.model_copy(update={"max_grad_norm": None}),
            max_new_tokens=T, reference=trainer.reference,
        )  # fmt: skip
        return {k: start[k] - v.detach() for k, v in model.named_parameters()}  # = the gradient (SGD, lr 1)

    split = gradient(config.optim)
    assert len(shapes) > 1 and sum(n for n, _ in shapes) == batch.num_responses
    assert all(n * length <= budget for n, length in shapes)
    assert no_grad_rows[0] * int(row_tokens.max()) <= budget < batch.num_responses * int(row_tokens.max())
    shapes.clear()
    whole = gradient(config.optim.model_copy(update={"micro_batch_tokens": None}))
    assert [n for n, _ in shapes] == [batch.num_responses]  # None: the old behaviour, one forward
    assert any(g.abs().max() > 1e-4 for g in whole.values())
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-7)
