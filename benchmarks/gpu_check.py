"""The GPU check in one call: grpokit's GPU tests, grpokit vs TRL on the same card, and the largest model that fits.

    scripts/gpu-check.sh                                      # on a machine with one CUDA GPU (docs/gpu.md)
    python benchmarks/gpu_check.py --device cpu --dry-run --out /tmp/gpu-check   # tiny shapes on CPU, seconds
    python benchmarks/gpu_check.py --download-wheels wheels   # beforehand, where there is network

Three parts, each result written as soon as it is known (``<out>/results.json`` and ``<out>/summary.md``), all
within ``--budget-s`` (450 s by default: the whole check stays under 8 minutes; what the budget left out is
recorded as not run, never estimated):

1. ``tests``: ``pytest -m gpu tests/gpu`` (sampler/trainer log-probs in fp32 and bf16, the fused LM head, a bf16
   training step with float32 state, checkpoint -> resume, LoRA), each test's outcome from the JUnit XML.
2. ``comparison``: grpokit's and TRL's GRPOTrainer on the same work: a Qwen2 model built from a config with
   random weights (Qwen2.5-0.5B's shapes and 1.5B's, vocabulary 151,936), B prompts x G completions x T tokens
   (8 x 8 x 256, forced length: ``min_new_tokens = max_new_tokens``), bf16 autocast over float32 weights and
   Adam states, beta 0 (no reference model; TRL's default), one policy update per step. Per system: seconds
   per step (median after the warm-up step), generation tokens/s, peak ``torch.cuda.max_memory_allocated``
   (weights included), and each grpokit/TRL ratio. Without TRL the entry says ``trl not installed``.
3. ``capacity``: the largest rung of a ladder of Qwen2.5 shapes (0.5B .. 32B) on which one full-parameter
   GRPO step at that batch fits, and one LoRA step (r 16, all linear layers), for both systems: a bisection
   over the ladder, each attempt a fresh process, a rung that runs out of memory bounding it from above.

Both systems get the same model object (same seed, built on the device: nothing is written to disk or read
back), the same tokenizer (a 512-token BPE; sampled ids beyond it decode to nothing), the same prompts and
the same reward: seeded noise in [0, 1), so that every group has non-zero advantages and the whole update
runs (the check is about speed and memory, not learning). Every run is a fresh subprocess, so each peak is
its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workload import _tokenizer_corpus, addition_rows  # noqa: E402 - after the path setup

ROOT = Path(__file__).resolve().parent.parent

# Qwen2.5's published shapes (config.json of each Hub model); vocabularies as there.
_QWEN_VOCAB, _QWEN_VOCAB_UNTIED = 151_936, 152_064
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=_QWEN_VOCAB, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=_QWEN_VOCAB, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                       intermediate_size=11008, vocab_size=_QWEN_VOCAB, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18944, vocab_size=_QWEN_VOCAB_UNTIED, tie_word_embeddings=False),
    "qwen2.5-14b": dict(hidden_size=5120, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                        intermediate_size=13824, vocab_size=_QWEN_VOCAB_UNTIED, tie_word_embeddings=False),
    "qwen2.5-32b": dict(hidden_size=5120, num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                        intermediate_size=27648, vocab_size=_QWEN_VOCAB_UNTIED, tie_word_embeddings=False),
    # The dry run's shapes: the same code paths in seconds on a CPU.
    "tiny-a": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, vocab_size=1024, tie_word_embeddings=True),
    "tiny-b": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=192, vocab_size=1024, tie_word_embeddings=False),
}  # fmt: skip
COMPARE_SHAPES = ["qwen2.5-0.5b", "qwen2.5-1.5b"]
LADDER = ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b"]
DRY_COMPARE_SHAPES, DRY_LADDER = ["tiny-a"], ["tiny-a", "tiny-b"]
LORA = {"r": 16, "alpha": 32, "target_modules": "all-linear"}
SYSTEMS = ("trl", "grpokit")
# What the wheels directory must hold for a Python that has torch, transformers, accelerate and peft.
WHEEL_PACKAGES = ["pydantic>=2.6", "pyyaml>=6", "tqdm>=4.66", "psutil>=5.9", "pytest>=8", "trl>=1.0"]
WHEEL_EXCLUDE = ("torch", "triton", "nvidia-", "cuda-")  # the GPU machine's own builds


# ---------------------------------------------------------------------------------------------------------
# Worker side: one run of one system, in a fresh process
# ---------------------------------------------------------------------------------------------------------


class NoiseReward:
    """Seeded noise in [0, 1) per completion: non-zero advantages in every group, the same stream for both."""

    __name__ = "noise_reward"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return [self.rng.random() for _ in completions]


class StepClock:
    """Seconds per step and in generation; on CUDA each mark synchronizes first, so kernels are counted."""

    def __init__(self, device: Any) -> None:
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.generation: list[float] = []

    def step_started(self) -> None:
        self.sync()
        self.starts.append(time.perf_counter())
        self.generation.append(0.0)

    def step_ended(self) -> None:
        self.sync()
        self.ends.append(time.perf_counter())

    def wrap(self, obj: Any, name: str) -> None:
        original = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.sync()
                if self.generation:
                    self.generation[-1] += time.perf_counter() - start

        setattr(obj, name, timed)

    def steps(self) -> list[dict[str, float]]:
        return [
            {"seconds": end - start, "generation_seconds": gen}
            for start, end, gen in zip(self.starts, self.ends, self.generation)
        ]


def build_model(spec: dict[str, Any], device: Any) -> Any:
    """The shape's Qwen2 with random float32 weights, initialised on ``device`` from a fixed seed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    config = Qwen2Config(
        **SHAPES[spec["shape"]], max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(spec["seed"])
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def run_grpokit(spec: dict[str, Any], model: Any, clock: StepClock) -> Any:
    import grpokit.models.loading as loading
    from grpokit.config import GRPOConfig, build_config
    from grpokit.trainers.grpo import GRPOTrainer

    loading.load_model = lambda *args, **kwargs: model  # the model built above, not weights from disk
    config = build_config(
        GRPOConfig,
        {
            "seed": spec["seed"],
            "max_steps": spec["steps"],
            "model": {
                "name_or_path": spec["model_dir"], "device": spec["device"],
                "mixed_precision": "bf16" if spec["precision"] == "bf16" else "no",
                "lora": {"r": LORA["r"], "alpha": LORA["alpha"]} if spec["lora"] else {},
            },
            "data": {"prompts_per_step": spec["prompts"]},
            "generation": {"max_new_tokens": spec["tokens"], "min_new_tokens": spec["tokens"], "temperature": 1.0},
            "optim": {"learning_rate": 1e-6, "max_grad_norm": 1.0},
            "algorithm": {"num_generations": spec["generations"], "beta": 0.0, "num_iterations": 1,
                          "loss_aggregation": "sequence_mean", "advantage_estimator": "grpo"},
            "checkpoint": {"save_steps": 0},
            "logging": {"quiet": True, "output_dir": tempfile.mkdtemp(prefix="gpu-check-grpokit-"),
                        "report_to": [], "report": False},
        },
    )  # fmt: skip

    class TimedTrainer(GRPOTrainer):
        def collect_rollouts(self, timer: Any) -> Any:
            clock.step_started()
            return super().collect_rollouts(timer)

        def log(self, run: Any, step: int, record: Any) -> Any:
            clock.step_ended()
            return super().log(run, step, record)

        def save_final(self) -> Any:  # the check keeps no weights (TRL's side: save_strategy="no")
            return self.run_dir

    trainer = TimedTrainer(config, reward_funcs=[NoiseReward(spec["seed"])], dataset=addition_rows())
    clock.wrap(trainer.sampler, "generate")
    trainer.train()
    return trainer.model


def run_trl(spec: dict[str, Any], model: Any, clock: StepClock) -> Any:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    N = spec["prompts"] * spec["generations"]
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="gpu-check-trl-"), seed=spec["seed"], max_steps=spec["steps"],
        per_device_train_batch_size=N, gradient_accumulation_steps=1, generation_batch_size=N,
        num_generations=spec["generations"], max_completion_length=spec["tokens"],
        generation_kwargs={"min_new_tokens": spec["tokens"]}, temperature=1.0, beta=0.0, num_iterations=1,
        loss_type="grpo", scale_rewards="group", learning_rate=1e-6, lr_scheduler_type="constant",
        max_grad_norm=1.0, bf16=spec["precision"] == "bf16", use_cpu=spec["device"] == "cpu",
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                                 target_modules=LORA["target_modules"], task_type="CAUSAL_LM")  # fmt: skip

    class Steps(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock.step_started()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock.step_ended()

    trainer = GRPOTrainer(
        model=model, reward_funcs=NoiseReward(spec["seed"]), args=args,
        train_dataset=Dataset.from_list(addition_rows()),
        processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]), callbacks=[Steps()],
        peft_config=peft_config,
    )  # fmt: skip
    clock.wrap(trainer, "_generate")
    trainer.train()
    return trainer.model


def is_out_of_memory(text: str) -> bool:
    return "out of memory" in text.lower() or "OutOfMemoryError" in text


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from grpokit.models.device import peak_cuda_mb, peak_rss_mb, reset_peak_memory

    device = torch.device(spec["device"])
    if device.type == "cpu":
        torch.set_num_threads(1)
    elif spec.get("memory_fraction"):
        torch.cuda.set_per_process_memory_fraction(spec["memory_fraction"])
    reset_peak_memory()
    clock = StepClock(device)
    out: dict[str, Any] = {"spec": spec}
    started = time.perf_counter()
    try:
        model = build_model(spec, device)
        out["parameters"] = sum(p.numel() for p in model.parameters())
        trained = (run_trl if spec["system"] == "trl" else run_grpokit)(spec, model, clock)
        out["trainable_parameters"] = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        out["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - every failure is a result here; out of memory is the expected one
        chain = f"{type(err).__name__}: {err} {err.__cause__!r} {err.__context__!r}"
        out["status"] = "oom" if isinstance(err, torch.OutOfMemoryError) or is_out_of_memory(chain) else "error"
        out["error"] = chain[-2000:]
    out["seconds_total"] = time.perf_counter() - started
    out["steps"] = clock.steps()
    out["peak_cuda_mb"] = peak_cuda_mb()
    out["peak_rss_mb"] = peak_rss_mb()
    if out["status"] == "ok":
        measured = out["steps"][spec["warmup"] :] or out["steps"]
        tokens = spec["prompts"] * spec["generations"] * spec["tokens"]
        out["step_s"] = statistics.median(s["seconds"] for s in measured)
        gen = statistics.median(s["generation_seconds"] for s in measured)
        out["generation_tokens_per_s"] = tokens / gen if gen > 0 else None
        out["steps_measured"] = len(measured)
    return out


# ---------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def spawn(spec: dict[str, Any], budget: Budget, cap_s: float) -> dict[str, Any]:
    """One worker in a fresh process; its result, or why there is none (``timeout``, ``error``, ``oom``)."""
    timeout = min(cap_s, budget.left() - 5)
    if timeout < 15:
        return {"spec": spec, "status": "not_run", "reason": "time budget spent"}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    command = [sys.executable, __file__, "--worker", json.dumps(spec), "--result", str(result_path)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        result: dict[str, Any] = {"spec": spec, "status": "timeout", "reason": f"no result in {timeout:.0f} s"}
    else:
        if result_path.exists() and result_path.stat().st_size:
            result = json.loads(result_path.read_text())
        else:
            status = "oom" if is_out_of_memory(proc.stderr) else "error"
            result = {"spec": spec, "status": status, "error": proc.stderr[-2000:], "returncode": proc.returncode}
    result_path.unlink(missing_ok=True)
    result["wall_s"] = time.perf_counter() - started
    mode = "lora" if spec["lora"] else "full"
    print(f"  {spec['system']:8s} {spec['shape']:13s} {mode}: {result['status']} ({result['wall_s']:.0f} s)", flush=True)
    return result


def run_tests(out: Path, budget: Budget, cap_s: float) -> dict[str, Any]:
    """``pytest -m gpu tests/gpu``, each test's outcome read from its JUnit XML."""
    if importlib.util.find_spec("pytest") is None:
        return {"status": "not_run", "reason": "pytest not installed"}
    xml_path = out / "pytest-gpu.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu",
               f"--junitxml={xml_path}", "-o", "junit_family=xunit1"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    timeout = min(cap_s, budget.left() - 5)
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"pytest gave no result in {timeout:.0f} s"}
    tests = []
    if xml_path.exists():
        for case in ET.parse(xml_path).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome, message = tag.replace("failure", "failed"), node.get("message", "")[:500]
                    break
            tests.append({"name": case.get("name"), "outcome": outcome, "message": message,
                          "seconds": float(case.get("time", 0))})  # fmt: skip
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    status = "ok" if proc.returncode == 0 and counts["passed"] else "failed" if proc.returncode else "skipped"
    return {"status": status, "returncode": proc.returncode, "counts": counts, "tests": tests,
            "seconds": time.perf_counter() - started, "output_tail": proc.stdout[-3000:]}  # fmt: skip


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def run_comparison(plan: dict[str, Any], budget: Budget) -> list[dict[str, Any]]:
    entries = []
    memory_key = "peak_cuda_mb" if plan["device"] != "cpu" else "peak_rss_mb"
    for shape in plan["compare_shapes"]:
        entry: dict[str, Any] = {"shape": shape, "memory_metric": memory_key}
        for system in SYSTEMS:
            if system == "trl" and not trl_available():
                entry[system] = {"status": "skipped", "reason": "trl not installed"}
                continue
            spec = {**plan["spec"], "system": system, "shape": shape, "lora": False}
            entry[system] = spawn(spec, budget, plan["attempt_cap_s"])
        g, t = entry["grpokit"], entry["trl"]
        ok = g.get("status") == "ok" and t.get("status") == "ok"
        entry["ratio_grpokit_over_trl"] = {
            key: ratio(g.get(key), t.get(key)) if ok else None
            for key in ("step_s", "generation_tokens_per_s", memory_key)
        }
        entries.append(entry)
    return entries


def bisect_ladder(
    plan: dict[str, Any], system: str, lora: bool, lo: int, hi: int, budget: Budget
) -> dict[str, Any]:
    """The largest rung of the ladder on which one step fits: a bisection between ``ladder[lo]``, known to fit
    (-1: none known), and ``ladder[hi]``, known not to (``len(ladder)``: none known). Memory is assumed to
    grow up the ladder."""
    ladder = plan["ladder"]
    known = {"fits": ladder[lo] if lo >= 0 else None, "does_not_fit": ladder[hi] if hi < len(ladder) else None}
    attempts = []
    stopped = None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        spec = {**plan["spec"], "system": system, "shape": ladder[mid], "lora": lora, "steps": 1, "warmup": 0}
        result = spawn(spec, budget, plan["attempt_cap_s"])
        attempts.append({"shape": ladder[mid], "status": result["status"], "peak_cuda_mb": result.get("peak_cuda_mb"),
                         "peak_rss_mb": result.get("peak_rss_mb"), "wall_s": result.get("wall_s"),
                         "parameters": result.get("parameters"),
                         "trainable_parameters": result.get("trainable_parameters"),
                         "error": result.get("error", result.get("reason", ""))[-500:]})  # fmt: skip
        if result["status"] == "ok":
            lo = mid
        elif result["status"] == "oom":
            hi = mid
        else:
            stopped = f"{ladder[mid]}: {result['status']}"
            break
    return {
        "largest_fitting": ladder[lo] if lo >= 0 else None,
        "smallest_not_fitting": ladder[hi] if hi < len(ladder) else None,
        "complete": stopped is None,
        "stopped": stopped,
        "known_before": known,
        "attempts": attempts,
    }


def run_capacity(plan: dict[str, Any], comparison: list[dict[str, Any]], budget: Budget) -> dict[str, Any]:
    """Per system: LoRA first, then full-parameter. What is known narrows each search: a full-parameter step of
    the comparison fits, so a LoRA step (less memory: no base gradients or Adam states) does too; a rung where
    LoRA does not fit is one where the full step does not either."""
    ladder = plan["ladder"]
    out: dict[str, Any] = {"ladder": ladder, "full": {}, "lora": {}}
    for system in SYSTEMS:
        if system == "trl" and not trl_available():
            for mode in ("lora", "full"):
                out[mode][system] = {"status": "skipped", "reason": "trl not installed"}
            continue
        fits = -1  # the comparison's full-parameter runs: the same step at the same batch
        for entry in comparison:
            if entry.get(system, {}).get("status") == "ok" and entry["shape"] in ladder:
                fits = max(fits, ladder.index(entry["shape"]))
        lora = out["lora"][system] = bisect_ladder(plan, system, True, fits, len(ladder), budget)
        lora_fails = lora["smallest_not_fitting"]
        hi = ladder.index(lora_fails) if lora_fails else len(ladder)
        out["full"][system] = bisect_ladder(plan, system, False, fits, hi, budget)
    return out


def environment(device: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for name in ("torch", "transformers", "accelerate", "peft", "pydantic", "trl", "datasets", "grpokit"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "device": device,
                           "versions": versions, "cuda_available": torch.cuda.is_available()}  # fmt: skip
    if device != "cpu" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_mib=props.total_memory / 2**20, cuda=torch.version.cuda,
                   capability=f"{props.major}.{props.minor}", bf16_supported=torch.cuda.is_bf16_supported())  # fmt: skip
    return env


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def render_summary(report: dict[str, Any]) -> str:
    env, w = report["environment"], report["workload"]
    where = env.get("gpu") or "CPU"
    lines = [f"# grpokit GPU check: {where}", ""]
    if report["dry_run"]:
        lines += ["**Dry run** (tiny shapes on the CPU): it checks that the script works; none of its numbers "
                  "is a GPU figure.", ""]  # fmt: skip
    lines += [f"Command: `{report['command']}`  ", f"Run: {report['started']} to {report.get('finished', '(unfinished)')}, "
              f"budget {report['budget_s']:.0f} s  ", f"Versions: {env['versions']}  ",
              f"Workload: {w['prompts']} prompts x {w['generations']} completions x {w['tokens']} tokens, "
              f"{w['precision']} autocast over float32 weights, beta 0, {w['steps']} steps ({w['warmup']} warm-up)", ""]  # fmt: skip
    tests = report.get("tests", {})
    lines += ["## GPU tests (`pytest -m gpu tests/gpu`)", ""]
    if "counts" in tests:
        c = tests["counts"]
        lines += [f"{tests['status']}: {c['passed']} passed, {c['failed']} failed, {c['error']} errors, "
                  f"{c['skipped']} skipped", "", "| test | outcome | s | message |", "|---|---|---|---|"]  # fmt: skip
        for t in tests["tests"]:
            lines.append(f"| {t['name']} | {t['outcome']} | {t['seconds']:.1f} | {t['message'][:120]} |")
    else:
        lines.append(f"{tests.get('status', 'not run')}: {tests.get('reason', 'not in --parts')}")
    lines += ["", "## grpokit vs TRL", ""]
    for entry in report.get("comparison", []):
        mem = entry["memory_metric"]
        lines += [f"### {entry['shape']}", "", f"| system | status | s/step | gen tok/s | {mem} | parameters |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for system in SYSTEMS:
            r = entry[system]
            if r.get("status") != "ok":
                lines.append(f"| {system} | {r.get('status')}: {r.get('reason', r.get('error', ''))[:160]} | | | | |")
                continue
            lines.append(f"| {system} | ok | {_fmt(r['step_s'], '.3f')} | {_fmt(r['generation_tokens_per_s'], '.0f')} | "
                         f"{_fmt(r.get(mem), '.0f')} | {_fmt(r.get('parameters'), ',')} |")  # fmt: skip
        q = entry["ratio_grpokit_over_trl"]
        lines += [f"| **grpokit/TRL** | | {_fmt(q['step_s'])} | {_fmt(q['generation_tokens_per_s'])} | {_fmt(q[mem])} | |", ""]
    capacity = report.get("capacity")
    if capacity:
        lines += ["## Largest shape that fits one GRPO step", "", f"Ladder: {', '.join(capacity['ladder'])}", "",
                  "| mode | system | largest fitting | smallest not fitting | complete | attempts |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for mode in ("full", "lora"):
            for system in SYSTEMS:
                r = capacity.get(mode, {}).get(system, {})
                if "attempts" not in r:
                    lines.append(f"| {mode} | {system} | {r.get('status', 'not run')}: {r.get('reason', '')} | | | |")
                    continue
                tried = ", ".join(f"{a['shape']} {a['status']}" for a in r["attempts"]) or "-"
                complete = "yes" if r["complete"] else f"no ({r['stopped']})"
                lines.append(f"| {mode} | {system} | {_fmt(r['largest_fitting'])} | "
                             f"{_fmt(r['smallest_not_fitting']) if r['smallest_not_fitting'] else 'none on the ladder'} | "
                             f"{complete} | {tried} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "summary.md").write_text(render_summary(report))


def download_wheels(dest: Path, python_version: str | None, platform_tag: str | None) -> None:
    """Wheels of WHEEL_PACKAGES and their dependencies, less torch and the CUDA libraries: what the GPU machine
    installs with ``pip install --no-index --find-links``. Resolves first (metadata only), then downloads."""
    target = ["--python-version", python_version] if python_version else []
    target += ["--platform", platform_tag] if platform_tag else []
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--only-binary=:all:", "--target", str(Path(tmp) / "t"), *target, "--report",
                        str(report_path), *WHEEL_PACKAGES], check=True)  # fmt: skip
        resolved = json.loads(report_path.read_text())["install"]
    pins = [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in resolved
            if not item["metadata"]["name"].lower().startswith(WHEEL_EXCLUDE)]  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *target,
                    "--dest", str(dest), *pins], check=True)  # fmt: skip
    print(f"{len(pins)} wheels in {dest} (torch, triton and the nvidia/cuda wheels left out)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and batch: the script's own check")
    parser.add_argument("--out", default="gpu-check", help="directory for results.json and summary.md")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole check")
    parser.add_argument("--parts", nargs="+", default=["tests", "comparison", "capacity"],
                        choices=["tests", "comparison", "capacity"])  # fmt: skip
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="steps per comparison run (the first is warm-up)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--memory-fraction", type=float, default=None,
                        help="cap each worker's CUDA memory at this fraction of the card (capacity of a smaller card)")
    parser.add_argument("--download-wheels", metavar="DIR", help="download the wheels a GPU machine needs, and exit")
    parser.add_argument("--wheel-python", help="with --download-wheels: the GPU machine's Python, e.g. 3.11")
    parser.add_argument("--wheel-platform", help="with --download-wheels: e.g. manylinux_2_28_x86_64")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.result).write_text(json.dumps(run_worker(json.loads(args.worker))))
        return {}
    if args.download_wheels:
        download_wheels(Path(args.download_wheels), args.wheel_python, args.wheel_platform)
        return {}

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        # Said plainly, in the result files too: no GPU, no GPU figures.
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        message = (f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU here, so there are no GPU "
                   "figures; the CPU dry run is --device cpu --dry-run")  # fmt: skip
        (out / "results.json").write_text(json.dumps({"status": "no_gpu", "message": message}, indent=1))
        (out / "summary.md").write_text(f"# grpokit GPU check: no GPU\n\n{message}\n")
        parser.exit(2, f"gpu_check.py: {message}\n")
    if args.device == "cpu" and not args.dry_run:
        parser.error("--device cpu runs only as a --dry-run: CPU numbers are not what this check is for")
    budget = Budget(args.budget_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        args.prompts, args.generations, args.tokens, args.steps = 2, 2, 4, 2
    model_dir = tempfile.mkdtemp(prefix="gpu-check-tokenizer-")
    from grpokit.models import train_bpe_tokenizer

    train_bpe_tokenizer(_tokenizer_corpus(), vocab_size=512).save_pretrained(model_dir)
    workload = {"prompts": args.prompts, "generations": args.generations, "tokens": args.tokens,
                "steps": args.steps, "warmup": 1 if args.steps > 1 else 0, "precision": args.precision}  # fmt: skip
    plan = {
        "device": args.device,
        "compare_shapes": DRY_COMPARE_SHAPES if args.dry_run else COMPARE_SHAPES,
        "ladder": DRY_LADDER if args.dry_run else LADDER,
        "attempt_cap_s": 60.0 if args.dry_run else 150.0,
        "spec": {**workload, "device": args.device, "model_dir": model_dir, "seed": 0,
                 "memory_fraction": args.memory_fraction},  # fmt: skip
    }
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dry_run": args.dry_run,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "budget_s": args.budget_s,
        "environment": environment(args.device),
        "workload": workload,
        "shapes": {name: SHAPES[name] for name in dict.fromkeys(plan["compare_shapes"] + plan["ladder"])},
        "trl": "installed" if trl_available() else "trl not installed",
    }
    write(report, out)
    if "tests" in args.parts:
        print("GPU tests", flush=True)
        report["tests"] = run_tests(out, budget, 60.0 if args.dry_run else 180.0)
        write(report, out)
    comparison: list[dict[str, Any]] = []
    if "comparison" in args.parts:
        print("grpokit vs TRL", flush=True)
        comparison = report["comparison"] = run_comparison(plan, budget)
        write(report, out)
    if "capacity" in args.parts:
        print("largest shape that fits", flush=True)
        report["capacity"] = run_capacity(plan, comparison, budget)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write(report, out)
    print((out / "summary.md").read_text())
    return report


if __name__ == "__main__":
    main()
