"""grpokit compare: matched configs, the measurement of one run, the summary table, and a full comparison."""

import json
import math

import pytest
import torch

from grpokit.apps import compare, compare_report
from grpokit.apps.compare import build_compare_configs, measure_run
from grpokit.apps.compare_report import render_markdown, summarize
from grpokit.config import (
    ConfigError,
    DemoGRPOConfig,
    DemoPPOConfig,
    GRPOConfig,
    PPOConfig,
    build_config,
    save_config,
)

# ---------------------------------------------------------------------------------------------------------
# Matched configs
# ---------------------------------------------------------------------------------------------------------


def test_ppo_gets_b_times_g_prompts_with_one_completion_each():
    grpo, ppo = build_compare_configs({"data": {"prompts_per_step": 4}, "algorithm": {"num_generations": 6}})
    assert (grpo.data.prompts_per_step, grpo.algorithm.num_generations) == (4, 6)
    assert (ppo.data.prompts_per_step, ppo.algorithm.num_generations) == (24, 1)
    assert grpo.num_responses == ppo.num_responses == 24


def test_shared_fields_go_to_both_and_own_fields_to_one():
    data = {
        "max_steps": 7,
        "trainer": "ppo",  # ignored: compare runs both
        "optim": {"learning_rate": 2e-4},
        "algorithm": {"beta": 0.02, "dynamic_sampling": True, "gae_lambda": 0.9},
        "grpo": {"advantage_estimator": "rloo"},
        "ppo": {"algorithm": {"vf_coef": 0.7}},
    }
    grpo, ppo = build_compare_configs(
        data, {"num_iterations": 2, "whiten_advantages": "false"}, {"ppo": {"beta": 0.1}}
    )
    assert isinstance(grpo, GRPOConfig) and isinstance(ppo, PPOConfig)
    assert grpo.max_steps == ppo.max_steps == 7
    assert grpo.optim.learning_rate == ppo.optim.learning_rate == 2e-4
    assert grpo.algorithm.num_iterations == ppo.algorithm.num_iterations == 2
    assert grpo.algorithm.beta == 0.02 and ppo.algorithm.beta == 0.1  # the per-system value wins
    assert grpo.algorithm.dynamic_sampling and grpo.algorithm.advantage_estimator == "rloo"
    assert ppo.algorithm.gae_lambda == 0.9 and not ppo.algorithm.whiten_advantages
    assert ppo.algorithm.vf_coef == 0.7


def test_ppo_completions_per_prompt_can_be_set_and_must_divide():
    grpo, ppo = build_compare_configs({}, {}, {"ppo": {"num_generations": "4"}})
    assert (ppo.data.prompts_per_step, ppo.algorithm.num_generations) == (16, 4)
    assert ppo.num_responses == grpo.num_responses == 64
    with pytest.raises(ConfigError, match=r"ppo.num_generations \(5\) must be >= 1 and divide .* B\*G = 64"):
        build_compare_configs({}, {}, {"ppo": {"num_generations": 5}})


@pytest.mark.parametrize(
    ("data", "overrides", "system", "message"),
    [
        ({}, {"vf_coeff": 1}, {}, r"unknown option --vf_coeff; did you mean --vf_coef\?"),
        ({"ppo": [1]}, {}, {}, r"ppo: expected a mapping of fields for the PPO run only"),
        ({"algorithm": [1]}, {}, {}, r"algorithm: expected a mapping in the config file, got list"),
        ({}, {}, {"ppo": {"prompts_per_step": 3}}, r"ppo.prompts_per_step is set by the comparison"),
        ({}, {}, {"ppo": {"num_generations": "two"}}, r"ppo.num_generations must be an integer"),
        ({}, {}, {"grpo": {"vf_coef": 1}}, r"unknown option --vf_coef"),
        ({"optim": {"learning_rate": -1}}, {}, {}, r"(?s)compare config \(GRPO\).*learning_rate"),
    ],
)
def test_bad_compare_configs_are_named(data, overrides, system, message):
    with pytest.raises(ConfigError, match=message):
        build_compare_configs(data, overrides, system)


SHARED_KNOBS = (
    "seed", "max_steps", "max_generated_tokens", "max_cpu_seconds", "algorithm.num_iterations",
    "algorithm.beta", "algorithm.kl_estimator", "algorithm.loss_aggregation", "algorithm.epsilon_low",
    "algorithm.epsilon_high", "algorithm.entropy_coef", "optim.learning_rate", "optim.lr_scheduler",
    "optim.warmup_steps", "optim.warmup_ratio", "optim.max_grad_norm", "optim.weight_decay",
)  # fmt: skip


def knob(config, path):
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_a_plain_comparison_gives_both_systems_every_shared_training_knob():
    grpo, ppo = build_compare_configs({})
    for path in SHARED_KNOBS:
        assert knob(grpo, path) == knob(ppo, path), path
    assert grpo.generation == ppo.generation and grpo.rewards == ppo.rewards and grpo.model == ppo.model
    data = {k: v for k, v in grpo.data.model_dump().items() if k != "prompts_per_step"}
    assert data == {k: v for k, v in ppo.data.model_dump().items() if k != "prompts_per_step"}
    assert grpo.num_responses == ppo.num_responses
    # The common defaults: one pass, a reference model in both, k3, token mean, the demo's tuned rate.
    assert grpo.algorithm.num_iterations == 1 and grpo.algorithm.beta == 0.04
    assert (grpo.algorithm.kl_estimator, grpo.algorithm.loss_aggregation) == ("k3", "token_mean")
    assert (grpo.optim.learning_rate, grpo.optim.lr_scheduler) == (3e-4, "linear")
    differ = compare.config_differences(grpo, ppo)["differ"]
    assert set(differ) == {
        "trainer",
        "algorithm.loss_type",
        "data.prompts_per_step",
        "algorithm.num_generations",
    }


def test_the_configs_values_win_over_the_common_defaults_and_differences_are_listed():
    grpo, ppo = build_compare_configs(
        {"optim": {"learning_rate": 2e-4}, "algorithm": {"beta": 0.0}}, {"num_iterations": 2},
        {"ppo": {"loss_aggregation": "sequence_mean"}},
    )  # fmt: skip
    assert grpo.optim.learning_rate == ppo.optim.learning_rate == 2e-4
    assert grpo.optim.lr_scheduler == ppo.optim.lr_scheduler == "linear"  # still the demo's schedule
    assert grpo.algorithm.beta == ppo.algorithm.beta == 0.0
    assert grpo.algorithm.num_iterations == ppo.algorithm.num_iterations == 2
    differences = compare.config_differences(grpo, ppo)
    assert differences["differ"]["algorithm.loss_aggregation"] == ["token_mean", "sequence_mean"]
    assert "algorithm.vf_coef" in differences["ppo_only"]
    assert "algorithm.dynamic_sampling" in differences["grpo_only"]
    summary = summarize(
        [fake_result("grpo", 0, 500.0, [0.1]), fake_result("ppo", 0, 600.0, [0.2])], grpo, ppo, model_dir="m"
    )
    table = render_markdown(summary)
    assert "- `algorithm.loss_aggregation`: GRPO token_mean, PPO sequence_mean" in table
    assert table.index("Where the two configs differ") < table.index("| peak RSS")


@pytest.mark.parametrize(
    ("kind", "amount", "expected"),
    [("steps", 7, {"max_steps": 7}), ("tokens", 1000.5, {"max_generated_tokens": 1001}),
     ("cpu_seconds", 2.5, {"max_cpu_seconds": 2.5})],
)  # fmt: skip
def test_budgets_become_stops_for_both_systems(kind, amount, expected):
    overrides = compare.budget_overrides(kind, amount)
    assert overrides == expected
    grpo, ppo = build_compare_configs({}, overrides)
    for key, value in expected.items():
        assert getattr(grpo, key) == getattr(ppo, key) == value


@pytest.mark.parametrize(
    ("kind", "amount", "message"),
    [("wall", 1, r"expected one of steps, tokens, cpu_seconds"), ("tokens", 0, r"must be > 0"),
     ("steps", 1.5, r"a whole number of steps")],
)  # fmt: skip
def test_bad_budgets_are_named(kind, amount, message):
    with pytest.raises(ConfigError, match=message):
        compare.budget_overrides(kind, amount)


def test_cli_budget_reaches_both_configs(capsys):
    from grpokit.cli import main

    assert main(["compare", "--budget", "cpu_seconds=5", "--print-config"]) == 0
    assert main(["compare", "--budget", "tokens", "--budget-value", "300", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("max_cpu_seconds: 5.0") == 2 and printed.count("max_generated_tokens: 300") == 2
    assert main(["compare", "--budget", "tokens", "--print-config"]) != 0
    assert "--budget needs a kind and an amount" in capsys.readouterr().err


def test_without_a_model_both_systems_get_the_demo_configs():
    grpo, ppo = build_compare_configs({})
    assert isinstance(grpo, DemoGRPOConfig) and isinstance(ppo, DemoPPOConfig)
    assert grpo.model.name_or_path is None and grpo.data.task is not None


def test_a_starting_model_is_needed_without_a_demo_section():
    with pytest.raises(ValueError, match=r"model.name_or_path is unset and the config has no demo section"):
        compare._starting_model(GRPOConfig(), lambda _: None)


def test_measure_run_names_a_missing_model(tmp_path):
    path = tmp_path / "grpo.yaml"
    save_config(GRPOConfig(), path)
    with pytest.raises(ValueError, match=r"grpo.yaml: model.name_or_path is unset"):
        measure_run(path)


# ---------------------------------------------------------------------------------------------------------
# One measured run (in this process; the CLI runs it in a fresh one)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def addition_model_dir(tmp_path_factory):
    """A tiny model over the addition task's alphabet, so the built-in held-out split can score it."""
    from grpokit.models.tiny import build_char_tokenizer, build_tiny_model

    path = tmp_path_factory.mktemp("addition-tiny")
    tokenizer = build_char_tokenizer("0123456789+=")
    build_tiny_model(tokenizer, path, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=0)
    return path


def run_config(cls, model_dir, tmp_path, name, **algorithm):
    return build_config(
        cls,
        {
            "max_steps": 2,
            "model": {"name_or_path": str(model_dir), "device": "cpu"},
            "data": {"task": "addition", "prompts_per_step": 2 if cls is GRPOConfig else 8,
                     "num_train_problems": 50, "num_eval_problems": 12},
            "rewards": {"reward_funcs": ["task"]},
            "generation": {"max_new_tokens": 4},
            "algorithm": {"num_generations": 4 if cls is GRPOConfig else 1, **algorithm},
            "logging": {"output_dir": str(tmp_path), "run_name": name, "quiet": True, "report_to": [],
                        "report": False},
        },
    )  # fmt: skip


@pytest.mark.parametrize("system", ["grpo", "ppo"])
def test_measure_run_counts_the_model_state_exactly(addition_model_dir, tmp_path, system):
    cls = GRPOConfig if system == "grpo" else PPOConfig
    config = run_config(cls, addition_model_dir, tmp_path, system, beta=0.1)
    save_config(config, tmp_path / "config.yaml")
    result = measure_run(tmp_path / "config.yaml")

    from grpokit.models.loading import load_model

    P = sum(p.numel() for p in load_model(addition_model_dir).parameters())  # tied embeddings: counted once
    H = 32
    if system == "grpo":  # policy + frozen reference; one trainable copy
        held, trainable = 2 * P, P
    else:  # policy + reference + value model (the body without the tied LM head, plus a scalar head)
        held, trainable = 3 * P + H + 1, 2 * P + H + 1
    assert result["parameters"] == held and result["trainable_parameters"] == trainable
    assert result["parameter_bytes"] == 4 * held  # float32
    assert result["gradient_bytes"] == 4 * trainable
    assert result["optimizer_bytes"] == 2 * 4 * trainable  # AdamW's two moments
    assert result["system"] == system and result["steps"] == 2 and len(result["reward_curve"]) == 2
    assert result["completions_per_step"] == 8
    assert result["held_out_metric"] == "accuracy" and result["num_held_out"] == 12
    assert 0.0 <= result["held_out"] <= 1.0
    assert result["kl_to_initial"] >= 0.0  # k3 is non-negative
    assert result["peak_rss_mb"] >= result["baseline_rss_mb"] > 0
    assert result["generated_tokens"] > 0 and result["seconds_per_step"] > 0
    assert result["generated_tokens"] == result["tokens_curve"][-1] and len(result["tokens_curve"]) == 2
    assert result["cpu_seconds"] > 0 and len(result["cpu_curve"]) == 2
    assert ("zero_std_group_fraction" in result) == (system == "grpo")  # PPO's G = 1 has no groups


@pytest.mark.parametrize(
    ("budget", "curve"), [("max_cpu_seconds", "cpu_curve"), ("max_generated_tokens", "tokens_curve")]
)
@pytest.mark.parametrize("system", ["grpo", "ppo"])
def test_a_budget_ends_the_run_within_one_step_of_it(addition_model_dir, tmp_path, system, budget, curve):
    cls = GRPOConfig if system == "grpo" else PPOConfig
    data = run_config(cls, addition_model_dir, tmp_path, system).model_dump(mode="json")
    amount = 0.3 if budget == "max_cpu_seconds" else 100
    data.update(max_steps=200, **{budget: amount})
    data["data"]["num_eval_problems"] = 2
    save_config(build_config(cls, data), tmp_path / "config.yaml")
    result = measure_run(tmp_path / "config.yaml")
    spent = result[curve]  # cumulative after each step
    assert 1 <= result["steps"] < 200 and len(spent) == result["steps"]
    assert spent[-1] >= amount  # stopped once the budget was spent ...
    assert len(spent) == 1 or spent[-2] < amount  # ... and not a step later
    assert result["cpu_seconds"] >= result["cpu_curve"][-1] > 0
    assert (tmp_path / system / "final").is_dir()  # saved as after max_steps


def test_generated_tokens_count_every_round_of_dynamic_sampling(addition_model_dir, tmp_path):
    from grpokit.tracking import read_metrics
    from grpokit.trainers.grpo import GRPOTrainer

    config = run_config(GRPOConfig, addition_model_dir, tmp_path, "ds", dynamic_sampling=True)
    trainer = GRPOTrainer(config)
    generated = []  # completion tokens of every generate call, in order
    sample = trainer.sampler.generate

    def counting(*args, **kwargs):
        batch = sample(*args, **kwargs)
        generated.append(float(batch.completion_mask.sum()))
        return batch

    trainer.sampler.generate = counting
    result = trainer.train()
    steps = [m for m in read_metrics(result.run_dir) if "reward/mean" in m]
    rounds = [int(m.get("dynamic_sampling/rounds", 1)) for m in steps]
    assert max(rounds) > 1  # the untrained model's groups are mostly all wrong: extra rounds ran
    assert sum(rounds) == len(generated)
    calls = iter(generated)
    for m, n in zip(steps, rounds):
        assert m["completions/generated_tokens"] == pytest.approx(sum(next(calls) for _ in range(n)))
    # More than the N completions a step trains on, as the old mean length x N estimate had it.
    assert sum(m["completions/generated_tokens"] for m in steps) > sum(
        m["completions/mean_length"] * config.num_responses for m in steps
    ) or all(r == 1 for r in rounds)


def test_measure_run_scores_a_users_held_out_rows_with_the_configured_rewards(addition_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{i}+1="}) + "\n" for i in range(8)))
    config = run_config(GRPOConfig, addition_model_dir, tmp_path, "user")
    data = config.model_dump(mode="json")
    data["data"].update(path=str(prompts), task=None)
    data["rewards"] = {
        "reward_funcs": ["length_penalty"],
        "reward_kwargs": {"length_penalty": {"max_chars": 4}},
    }
    save_config(build_config(GRPOConfig, data), tmp_path / "config.yaml")
    result = measure_run(tmp_path / "config.yaml", eval_data=str(prompts))
    assert result["held_out_metric"] == "mean reward" and result["num_held_out"] == 8
    assert -1.0 <= result["held_out"] <= 0.0  # the length penalty's range


# ---------------------------------------------------------------------------------------------------------
# Summary and table
# ---------------------------------------------------------------------------------------------------------


def fake_result(system, seed, rss, reward_curve):
    return {
        "system": system, "seed": seed, "run_dir": f"/runs/{system}-{seed}", "peak_rss_mb": rss,
        "peak_rss_above_baseline_mb": rss - 400.0, "parameters": 2e6, "trainable_parameters": 1e6,
        "parameter_bytes": 2**20, "gradient_bytes": 2**20, "optimizer_bytes": 2**21, "seconds_per_step": 0.5,
        "generated_tokens": 100.0, "final_reward": reward_curve[-1], "reward_curve": reward_curve,
        "held_out": 0.5, "held_out_metric": "accuracy", "kl_to_initial": 0.1, "kl_curve": [0.0, 0.2],
    }  # fmt: skip


def test_summary_means_spreads_and_ratios():
    results = [
        fake_result("grpo", 0, 500.0, [0.1, 0.3]),
        fake_result("grpo", 1, 520.0, [0.2, 0.5]),
        fake_result("ppo", 0, 600.0, [0.0, 0.2]),
        fake_result("ppo", 1, 700.0, [0.1, 0.2]),
    ]
    summary = summarize(results, *build_compare_configs({}), model_dir="/model")
    grpo, ppo = summary["systems"]["grpo"]["stats"], summary["systems"]["ppo"]["stats"]
    rss = grpo["peak_rss_mb"]
    assert rss["mean"] == 510.0 and rss["std"] == pytest.approx(math.sqrt(200))  # sample std of 500, 520
    assert (rss["min"], rss["max"], rss["n"]) == (500.0, 520.0, 2)
    assert ppo["peak_rss_mb"]["mean"] == 650.0
    assert summary["ratios_grpo_over_ppo"]["peak_rss_mb"] == pytest.approx(510 / 650)
    assert summary["ratios_grpo_over_ppo"]["peak_rss_above_baseline_mb"] == pytest.approx(110 / 250)
    assert grpo["state_mb"]["mean"] == 4.0  # (1 + 1 + 2) MiB
    assert grpo["reward_curve_mean"] == pytest.approx([0.15, 0.4])
    assert grpo["kl_mean"]["mean"] == pytest.approx(0.1)  # mean over steps of each run, then over seeds
    assert summary["matching"]["ppo"] == {"prompts_per_step": 64, "completions_per_prompt": 1}
    table = render_markdown(summary)
    assert "| peak RSS (MiB) | 510 ± 14 [500, 520] | 650 ± 71 [600, 700] | 0.78 |" in table
    assert "| held-out accuracy after training | 0.500 ± 0.000" in table
    assert "peak CUDA" not in table  # measured on no run: no row


def test_differences_per_seed_get_a_t_interval_and_equal_budget_rewards():
    results = []
    for seed, (g, p) in enumerate([(0.5, 0.4), (0.7, 0.5), (0.6, 0.6)]):
        for system, held_out in (("grpo", g), ("ppo", p)):
            r = fake_result(system, seed, 500.0, [0.0, 0.5, 1.0])
            r.update(held_out=held_out, tokens_curve=[10.0, 20.0, 30.0 if system == "grpo" else 40.0],
                     cpu_curve=[1.0, 2.0, 3.0])  # fmt: skip
            if system == "grpo":
                r["zero_std_group_fraction"] = 0.8
            results.append(r)
    summary = summarize(results, *build_compare_configs({}), model_dir="/model")
    d = summary["differences_grpo_minus_ppo"]["held_out"]  # per seed: 0.1, 0.2, 0.0
    assert d["mean"] == pytest.approx(0.1) and d["std"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.1 - half, 0.1 + half))
    assert summary["equal_budget_limits"]["reward_at_equal_tokens"] == 30.0  # GRPO spent the fewest
    ppo = summary["systems"]["ppo"]["runs"][0]
    assert ppo["reward_at_equal_tokens"] == pytest.approx(0.25)  # its 2 steps up to 30 tokens
    assert summary["systems"]["grpo"]["runs"][0]["reward_at_equal_tokens"] == pytest.approx(0.5)
    table = render_markdown(summary)
    assert "| held-out accuracy after training | 0.600 ± 0.100" in table
    assert f"| 0.100 ± 0.100 [{0.1 - half:.3f}, {0.1 + half:.3f}] |" in table
    assert "80% of GRPO's groups had the same reward" in table and "dynamic_sampling" in table
    one_seed = render_markdown(summarize(results[:2], *build_compare_configs({}), model_dir="/m"))
    assert "n/a (one seed)" in one_seed


# ---------------------------------------------------------------------------------------------------------
# The whole comparison, through the CLI (fresh subprocesses)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_compare_writes_the_table_plot_and_report(addition_model_dir, tmp_path, capsys):
    from grpokit.cli import main

    out = tmp_path / "cmp"
    status = main([
        "compare", "--model", str(addition_model_dir), "--budget", "steps=2", "--prompts_per_step", "2",
        "--num_generations", "4", "--max_new_tokens", "4", "--num_train_problems", "50",
        "--num_eval_problems", "8", "--device", "cpu", "--ppo.num_iterations", "1", "--seeds", "3",
        "--task", "addition", "--reward_funcs", "[task]",
        "--output-dir", str(out),
    ])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "| peak RSS (MiB) |" in printed and "GRPO: 2 prompts x 4; PPO: 8 prompts x 1" in printed
    assert "| CPU seconds of training" in printed and "- `algorithm.loss_type`: GRPO grpo, PPO ppo" in printed
    summary = json.loads((out / "compare.json").read_text())
    assert summary["seeds"] == [3] and summary["held_out_metric"] == "accuracy"
    for name in ("grpo", "ppo"):
        (run,) = summary["systems"][name]["runs"]
        assert run["seed"] == 3 and run["steps"] == 2 and (out / f"{name}-seed3" / "final").is_dir()
    runs = {name: summary["systems"][name]["runs"][0] for name in ("grpo", "ppo")}
    assert runs["ppo"]["parameters"] > runs["grpo"]["parameters"]  # the value model
    assert (out / "compare.png").stat().st_size > 0
    page = (out / "compare.html").read_text()
    assert "grpo-seed3" in page and "ppo-seed3" in page


def test_a_failing_run_names_itself_and_quotes_its_log(tmp_path, monkeypatch):
    class Finished:
        returncode = 3

    def fake_run(command, stdout, **kwargs):
        stdout.write("Traceback ...\nValueError: boom\n")
        return Finished()

    monkeypatch.setattr(compare.subprocess, "run", fake_run)
    with pytest.raises(
        compare.CompareRunFailed, match=r"(?s)ppo-seed0 failed \(exit status 3\).*ValueError: boom"
    ):
        compare._run_subprocess(tmp_path / "ppo-seed0.yaml", tmp_path / "r.json", tmp_path / "log.txt", None)


def test_torch_threads_are_left_alone():
    # The comparison runs systems one after the other; it must not change the caller's thread setting.
    before = torch.get_num_threads()
    build_compare_configs({})
    assert torch.get_num_threads() == before


def test_moving_average_is_trailing():
    # Windows of 2: [1], [1, 2], [2, 3], [3, 4].
    assert compare_report._moving_average([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert compare_report._moving_average([5.0], 3) == [5.0]
