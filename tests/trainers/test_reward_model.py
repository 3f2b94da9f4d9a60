"""Reward-model training end to end on the tiny model: ``grpokit rm`` learns an easy preference, its final
model is a reward for ``grpokit train``, a killed run resumes to the same model, LoRA saves a merged model."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from grpokit.cli import main

MACHINE_KEYS = ("time/",)


def pair(rng):
    """The preferred side holds an 'a' (the alphabet's other letters never do): an easy, learnable rule."""
    base = "".join(rng.choice("bcdefgh") for _ in range(rng.randint(3, 6)))
    cut = rng.randint(0, len(base))
    return {"prompt": "h ", "chosen": base[:cut] + "a" + base[cut:], "rejected": base}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    rng = random.Random(0)
    rows = [pair(rng) for _ in range(56)]
    for name, part in (("train", rows[:40]), ("eval", rows[40:])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return root


def rm_args(tiny_model_dir, pairs, out, run_name, *extra):
    return [
        "rm", "--model", str(tiny_model_dir), "--train_file", str(pairs / "train.jsonl"),
        "--eval_file", str(pairs / "eval.jsonl"), "--output_dir", str(out), "--run_name", run_name,
        "--pairs_per_step", "8", "--learning_rate", "3e-3", "--quiet", "--report_to", "[]", *extra,
    ]  # fmt: skip


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rm_learns_from_a_pairs_file_and_grpo_trains_against_it(tiny_model_dir, pairs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    args = rm_args(tiny_model_dir, pairs, tmp_path / "runs", "rm", "--max_steps", "30", "--eval_steps", "10")
    assert main(args) == 0
    run = tmp_path / "runs" / "rm"
    metrics = rows_of(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 31))
    for key in ("train/loss", "train/accuracy", "train/reward_mean", "train/reward_std", "train/chosen_mean",
                "train/rejected_mean", "train/grad_norm", "train/lr"):  # fmt: skip
        assert key in metrics[0], key
    assert [m["step"] for m in metrics if "eval/accuracy" in m] == [10, 20, 30]
    assert metrics[0]["train/accuracy"] < 0.75  # the untrained head does not know the rule
    assert metrics[-1]["eval/accuracy"] >= 0.9  # 16 held-out pairs; chance is 0.5
    assert metrics[-1]["train/loss"] < metrics[0]["train/loss"] / 4
    assert (run / "report.html").is_file()

    # Plain transformers loads the final model; its config carries the reward normalisation.
    final = run / "final"
    config = json.loads((final / "config.json").read_text())
    center, scale = config["reward_center"], config["reward_scale"]
    assert scale > 0
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    tokenizer = AutoTokenizer.from_pretrained(final)

    def raw(texts):
        with torch.no_grad():
            return [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]

    train_rows = rows_of(pairs / "train.jsonl")
    texts = [r["prompt"] + r[side] for r in train_rows for side in ("chosen", "rejected")]
    rewards = torch.tensor(raw(texts), dtype=torch.float64)
    assert center == pytest.approx(rewards.mean().item(), abs=1e-5)  # the training texts are the reference
    assert scale == pytest.approx(rewards.std().item(), rel=1e-4)

    # GRPO against it from the command line; the rewards it logs are the normalised scores.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["h ", "b ", "c "]))
    train = [
        "train", "--model", str(tiny_model_dir), "--path", str(prompts), "--task", "null",
        "--reward_model", str(final), "--max_steps", "2", "--prompts_per_step", "2", "--num_generations", "2",
        "--max_new_tokens", "5", "--output_dir", str(tmp_path / "runs"), "--run_name", "grpo", "--quiet",
        "--report_to", "[]", "--report", "false",
    ]  # fmt: skip
    assert main(train) == 0
    samples = rows_of(tmp_path / "runs" / "grpo" / "samples.jsonl")
    seen = [(g["prompt"] + c, r) for g in samples for c, r in zip(g["completions"], g["rewards"])]
    assert seen
    expected = [(x - center) / scale for x in raw([text for text, _ in seen])]
    assert [r for _, r in seen] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_a_bad_row_is_named_before_the_model_loads(pairs, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"chosen": "ab", "rejected": "b"})
        + "\n"
        + json.dumps({"chosen": "ab", "rejected": ""})
        + "\n"
    )
    # The model path does not exist: the row's error must come first.
    args = [
        "rm",
        "--model",
        str(tmp_path / "no-model"),
        "--train_file",
        str(bad),
        "--output_dir",
        str(tmp_path),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{bad}: row 1 (line 2): column 'rejected' is empty" in err
    bad.write_text(json.dumps({"chosen": "ab"}) + "\n")
    assert main(args) == 2
    assert f"{bad}: row 0 (line 1): column 'rejected' is missing" in capsys.readouterr().err


def test_config_errors_name_the_field(tiny_model_dir, pairs, tmp_path, capsys):
    args = rm_args(tiny_model_dir, pairs, tmp_path, "x", "--eval_fraction", "0.2")
    assert main(args) == 2
    assert "set data.eval_file or data.eval_fraction, not both" in capsys.readouterr().err
    assert main(["rm", "--model", str(tiny_model_dir), "--output_dir", str(tmp_path)]) == 2
    assert "--train_file" in capsys.readouterr().err


def _start(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "grpokit", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_run(tiny_model_dir, pairs, tmp_path):
    extra = [
        "--max_steps",
        "40",
        "--eval_steps",
        "10",
        "--save_steps",
        "4",
        "--save_total_limit",
        "null",
        "--mini_batch_size",
        "4",
    ]  # two optimizer steps per step: Adam state and minibatch RNG matter
    assert main(rm_args(tiny_model_dir, pairs, tmp_path / "runs", "reference", *extra)) == 0
    args = rm_args(tiny_model_dir, pairs, tmp_path / "runs", "killed", *extra)
    run = tmp_path / "runs" / "killed"
    process = _start(args[:])
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-000012").is_dir():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed_at = len(rows_of(run / "metrics.jsonl"))
    assert killed_at < 40 and not (run / "final").exists()  # it really stopped mid-run
    assert main(["rm", "--resume", str(run), "--output_dir", str(tmp_path / "runs"), "--quiet"]) == 0

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith(MACHINE_KEYS)} for r in rows]

    reference = tmp_path / "runs" / "reference"
    assert strip(rows_of(run / "metrics.jsonl")) == strip(rows_of(reference / "metrics.jsonl"))
    assert (run / "final" / "model.safetensors").read_bytes() == (
        reference / "final" / "model.safetensors"
    ).read_bytes()
    assert (
        json.loads((run / "final" / "config.json").read_text())["reward_center"]
        == json.loads((reference / "final" / "config.json").read_text())["reward_center"]
    )


def test_lora_trains_adapters_and_head_and_saves_a_merged_model(tiny_model_dir, pairs, tmp_path):
    from grpokit.config import RewardModelConfig, build_config
    from grpokit.rewards.reward_model import RewardModel
    from grpokit.trainers.reward_model import RewardModelTrainer

    def config(run_name, max_steps=4, resume=None):
        return build_config(RewardModelConfig, {
            "max_steps": max_steps,
            "model": {"name_or_path": str(tiny_model_dir), "device": "cpu", "lora": {"r": 4}},
            "data": {"train_file": str(pairs / "train.jsonl"), "eval_fraction": 0.25, "pairs_per_step": 8},
            "optim": {"learning_rate": 3e-3}, "checkpoint": {"save_steps": 2, "resume": resume},
            "logging": {"output_dir": str(tmp_path), "run_name": run_name, "quiet": True, "report_to": [],
                        "report": False},
        })  # fmt: skip

    trainer = RewardModelTrainer(config("lora"))
    assert len(trainer.train_pairs) == 30 and len(trainer.eval_pairs) == 10
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    result = trainer.train()
    checkpoint = tmp_path / "lora" / "checkpoints" / "step-000004"
    assert (checkpoint / "adapter_config.json").is_file()  # checkpoints hold the adapters and head
    from safetensors.torch import load_file

    saved = load_file(checkpoint / "adapter_model.safetensors")
    assert any("score" in name for name in saved)
    assert any(
        "lora_B" in name and t.abs().sum() > 0 for name, t in saved.items()
    )  # B starts at 0: it trained
    assert not (result.final_dir / "adapter_config.json").exists()  # final is a full, merged model
    assert "eval/accuracy" in result.last_metrics
    rm = RewardModel(result.final_dir)
    assert rm.normalization == (result.reward_center, result.reward_scale)
    scores = rm(["h "] * 4, ["bca", "bc", "dae", "de"])
    assert len(set(scores)) == 4
    assert all(torch.isfinite(torch.tensor(scores)))
    # A LoRA run stopped after step 2 resumes from its adapters to the same merged model.
    RewardModelTrainer(config("lora-resumed", max_steps=2)).train()
    resumed = RewardModelTrainer(config("lora-resumed", resume=str(tmp_path / "lora-resumed")))
    assert resumed.start_step == 2
    assert (resumed.train().final_dir / "model.safetensors").read_bytes() == (
        result.final_dir / "model.safetensors"
    ).read_bytes()


def test_rm_help_and_print_config(tiny_model_dir, pairs, capsys):
    from grpokit.config import RewardModelConfig, field_paths

    assert main(["rm", "--help"]) == 0
    text = capsys.readouterr().out
    for path in field_paths(RewardModelConfig):
        assert f"--{path}" in text, path
    assert main(["rm", "--model", str(tiny_model_dir), "--train_file", "x.jsonl", "--margin_column", "null",
                 "--enabled", "--print-config"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert (
        "margin_column: null" in printed and "train_file: x.jsonl" in printed and "enabled: true" in printed
    )


# -- data parallelism: 2 forked CPU processes (gloo) train like 1 ------------------------------------------------


def _dp_config(tiny_model_dir, pairs, out, run_name):
    from grpokit.config import RewardModelConfig, build_config

    return build_config(RewardModelConfig, {
        "max_steps": 3, "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"train_file": str(pairs / "train.jsonl"), "eval_file": str(pairs / "eval.jsonl"),
                 "pairs_per_step": 8},
        "optim": {"learning_rate": 3e-3, "mini_batch_size": 4, "gradient_accumulation_steps": 2,
                  "shuffle_minibatches": False},
        "logging": {"output_dir": str(out), "run_name": run_name, "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip


def _dp_child(rank, port, config):
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    from grpokit.trainers.reward_model import train_reward_model

    try:
        train_reward_model(config)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_two_processes_train_like_one(tiny_model_dir, pairs, tmp_path):
    import socket

    from safetensors.torch import load_file

    from grpokit.trainers.reward_model import train_reward_model

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    two = _dp_config(tiny_model_dir, pairs, tmp_path, "two")
    context = torch.multiprocessing.start_processes(
        _dp_child, args=(port, two), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=1.0):
            assert time.monotonic() < deadline, "2-process run did not finish in 120 s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    one = train_reward_model(_dp_config(tiny_model_dir, pairs, tmp_path, "one"))
    one_rows, two_rows = rows_of(one.run_dir / "metrics.jsonl"), rows_of(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two_rows] == [1, 2, 3, 3]  # the last row: the final held-out evaluation
    for a, b in zip(one_rows, two_rows):
        for key in ("train/loss", "train/accuracy", "train/reward_std", "train/grad_norm", "eval/accuracy"):
            assert (key in a) == (key in b)
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
        assert a.get("train/optimizer_steps") == b.get("train/optimizer_steps")
    expected, actual = (
        load_file(one.final_dir / "model.safetensors"),
        load_file(tmp_path / "two" / "final" / "model.safetensors"),
    )
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=2e-5, msg=name)
    center = json.loads((tmp_path / "two" / "final" / "config.json").read_text())["reward_center"]
    assert center == pytest.approx(one.reward_center, abs=1e-5)


def test_chat_pairs_are_encoded_with_the_chat_template_as_the_reward_scores_them():
    from grpokit.data import PreferencePair
    from grpokit.models.tiny import build_char_tokenizer
    from grpokit.trainers.reward_model import encode_pairs

    tokenizer = build_char_tokenizer("abcdefghu<>:\n ")
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}\n{% endfor %}"
    user = [{"role": "user", "content": "ab"}]
    pairs = [PreferencePair("cc", "d", user, 0.5), PreferencePair("ab", "ba")]
    encoded = encode_pairs(tokenizer, pairs)
    assert tokenizer.decode(encoded.chosen[0]) == "<u>ab\n<a>cc\n"
    assert tokenizer.decode(encoded.rejected[0]) == "<u>ab\n<a>d\n"
    assert tokenizer.decode(encoded.chosen[1]) == "ab"
    assert encoded.margins.tolist() == [0.5, 0.0]
    assert encoded.row_tokens().tolist() == [len("<u>ab\n<a>cc\n") + len("<u>ab\n<a>d\n"), 4]


def test_rows_given_in_memory_and_num_processes_checked_before_launch(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    from grpokit.config import RewardModelConfig, build_config
    from grpokit.trainers.reward_model import RewardModelTrainer

    rng = random.Random(1)
    rows = [pair(rng) for _ in range(8)]
    config = build_config(RewardModelConfig, {
        "max_steps": 2, "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"pairs_per_step": 4, "chosen_column": "chosen"}, "normalization": {"enabled": False},
        "logging": {"output_dir": str(tmp_path), "run_name": "mem", "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip
    result = RewardModelTrainer(config, dataset=rows).train()
    assert len(rows_of(result.run_dir / "metrics.jsonl")) == 2
    assert "reward_center" not in json.loads((result.final_dir / "config.json").read_text())

    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("launched"))
    args = ["rm", "--model", str(tiny_model_dir), "--train_file", "p.jsonl", "--pairs_per_step", "3"]
    assert main([*args, "--num_processes", "2"]) == 2
    assert "data.pairs_per_step (3) must be divisible by --num_processes (2)" in capsys.readouterr().err


def test_normalisation_statistics_come_from_the_configured_reference_file(tiny_model_dir, pairs, tmp_path):
    from grpokit.config import RewardModelConfig, build_config
    from grpokit.rewards.reward_model import RewardModel
    from grpokit.trainers.reward_model import train_reward_model

    config = build_config(RewardModelConfig, {
        "max_steps": 2, "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"train_file": str(pairs / "train.jsonl"), "pairs_per_step": 8},
        "normalization": {"reference_file": str(pairs / "eval.jsonl")},
        "logging": {"output_dir": str(tmp_path), "run_name": "ref", "quiet": True, "report_to": [], "report": False},
    })  # fmt: skip
    result = train_reward_model(config)
    rm = RewardModel(result.final_dir)
    rm.normalization = None  # raw logits
    reference = rows_of(pairs / "eval.jsonl")
    raw = torch.tensor(
        rm(
            [r["prompt"] for r in reference] * 2,
            [r["chosen"] for r in reference] + [r["rejected"] for r in reference],
        ),
        dtype=torch.float64,
    )
    assert result.reward_center == pytest.approx(raw.mean().item(), abs=1e-5)
    assert result.reward_scale == pytest.approx(raw.std().item(), rel=1e-4)
