"""The report in a real browser: headless Chromium driven by Selenium with the system chromedriver.

Set ``GRPOKIT_UPDATE_DOCS_IMAGE=1`` to also refresh ``docs/images/report-samples.png`` (a README
screenshot). ``docs/images/report.png`` shows the report of a real demo run instead: ``grpokit train``,
then a 1280x1600 headless-Chromium screenshot of its ``report.html``.
"""

import json
import math
import os
import random
import shutil
from pathlib import Path

import pytest
import yaml

from grpokit.tracking.report import chart_layout, constant_metrics, write_report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
XSS = '<script>window.__pwned = 1; console.error("pwned")</script><img src=x onerror="window.__pwned = 2">'

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (Debian: chromium)"
)

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
COMPLETIONS = [
    "<think>In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72.</think>\n<answer>72</answer>",
    "<think>Half of 48 is 24, so 48 + 24 = 72 clips.</think>\n<answer>72</answer>",
    "<think>48 + 48 / 2 ... I think 48 * 2 = 96.</think>\n<answer>96</answer>",
    "She sold 72 clips.",
]


CONSTANT = {
    "rewards/unscored_fraction": 0.0,
    "rewards/math_verify/failures": 0.0,
    "clip_fraction": 0.0,
    "ratio_mean": 1.0,
    "loss_mask/token_fraction": 1.0,
    "optimizer_steps": 1.0,
    "faults/nonfinite_skipped": 0.0,
}


def make_realistic_run(run_dir: Path, *, steps: int = 120, seed: int = 0, ceiling: float = 0.8) -> Path:
    """A fake GRPO run whose curves look like a real one: reward rises, entropy falls, KL grows."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    config = {
        "model": {"name_or_path": "tiny-llama", "dtype": "float32"},
        "data": {"dataset": "gsm8k", "answer_column": "answer"},
        "generation": {"num_generations": 4, "max_new_tokens": 256, "temperature": 1.0},
        "rewards": {"functions": ["math_verify", "think_answer_format"], "weights": [1.0, 0.2]},
        "algorithm": {"beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.28, "loss_type": "dapo"},
        "optim": {"lr": 1e-6 * (1 + seed), "max_steps": steps, "seed": seed},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "environment.json").write_text(
        json.dumps({"python": "3.11.7", "torch": "2.13.0", "grpokit": "0.1.0"})
    )
    with open(run_dir / "metrics.jsonl", "w") as f:
        for step in range(steps):
            p = 1 - math.exp(-step / 40)

            def noisy(value, scale):
                return value + rng.gauss(0, scale)  # noqa: B023 (rng is the same object every step)

            row = {
                "step": step,
                "reward/mean": noisy(0.15 + (ceiling - 0.15) * p, 0.04),
                "reward/std": noisy(0.38 - 0.12 * p, 0.02),
                "rewards/math_verify/mean": noisy(0.1 + (ceiling - 0.1) * p, 0.04),
                "rewards/think_answer_format/mean": min(
                    1.0, noisy(0.3 + 0.7 * (1 - math.exp(-step / 15)), 0.03)
                ),
                "kl": abs(noisy(0.0005 + 0.02 * p, 0.002)),
                "clip_fraction_low": abs(noisy(0.01, 0.004)),
                "clip_fraction_high": abs(noisy(0.03, 0.008)),
                "entropy": noisy(1.25 - 0.5 * p, 0.03),
                "completion_length/mean": noisy(185 - 60 * p, 6),
                "completion_length/max": 256,
                "zero_std_group_fraction": min(1.0, abs(noisy(0.08 + 0.3 * p, 0.05))),
                "tokens_per_second/generation": noisy(850, 30),
                "memory/peak_rss_mb": 2100 + 1.5 * step,
                "time/step": noisy(4.2, 0.3),
                "loss": noisy(0.0, 0.02),
                "learning_rate": config["optim"]["lr"] * min(1.0, (step + 1) / 10),
                **CONSTANT,  # metrics that never move: one line, no chart
            }
            if step == 57:
                row["kl"] = float("nan")  # a gap in the curve, as a real divergence would leave
            f.write(json.dumps(row) + "\n")
            if step % 20 == 0 or step == steps - 1:  # held-out accuracy, a row of its own
                accuracy = 0.1 + (ceiling - 0.1) * (1 - math.exp(-step / 35))
                f.write(json.dumps({"step": step, "eval/accuracy": round(accuracy, 3)}) + "\n")
    with open(run_dir / "samples.jsonl", "w") as f:
        for step in range(0, steps, 10):
            rewards = [1.2, 1.2, 0.2, 0.0]
            mean = sum(rewards) / 4
            std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 4)
            completions = list(COMPLETIONS)
            if step == 0:
                completions[3] = XSS  # model output full of markup must show as text
            groups = [
                {
                    "prompt": QUESTION,
                    "answer": "72",
                    "completions": completions,
                    "rewards": rewards,
                    "truncated": [False, False, False, True],
                },
                {
                    "prompt": [
                        {"role": "system", "content": "Think in <think> tags, then answer in <answer> tags."},
                        {"role": "user", "content": "What is 17 + 25?"},
                    ],
                    "answer": "42",
                    "completions": ["<think>17 + 25 = 42</think><answer>42</answer>"] * 4,
                    "rewards": [1.2] * 4,
                },
            ]
            for group in groups:
                rs = group["rewards"]
                mean = sum(rs) / len(rs)
                std = math.sqrt(sum((r - mean) ** 2 for r in rs) / len(rs))
                group["advantages"] = [(r - mean) / (std + 1e-4) for r in rs]
                group["reward_components"] = {
                    "math_verify": [1.0 if r >= 1.0 else 0.0 for r in rs],
                    "think_answer_format": [1.0 if r > 0 else 0.0 for r in rs],
                }
                f.write(json.dumps({"step": step, **group}) + "\n")
    return run_dir


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not Path(CHROMEDRIVER).exists():
        pytest.fail(f"{CHROMEDRIVER} is missing: install the Debian package chromium-driver with chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1200",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def open_report(driver, path: Path) -> list[dict]:
    """Load the report, wait until its script finished, and return the console messages it produced."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: (
            d.execute_script("return document.documentElement.dataset.rendered === 'true'")
            or d.find_elements("css selector", "p.error")
        )
    )
    return driver.get_log("browser")


CHART_STATS = """
return Array.from(document.querySelectorAll('#chart-grid .chart-card')).map((card) => ({
  title: card.dataset.chart,
  drawn: Array.from(card.querySelectorAll('svg.chart path.series:not(.raw)'))
    .filter((p) => (p.getAttribute('d') || '').includes('L') && p.getBBox().width > 0).length,
  legend: Array.from(card.querySelectorAll('.legend button')).map((b) => b.textContent),
  keys: Array.from(card.querySelectorAll('.legend button')).map((b) => b.title),
}));
"""
HEADER = """
return Array.from(document.querySelectorAll('#run-heads .head')).map((card) => ({
  name: card.querySelector('.run-name').textContent,
  trained: Array.from(card.querySelectorAll('.trained dt')).map((t) => t.textContent),
  goal: card.querySelector('.goal-label') && card.querySelector('.goal-label').textContent,
  value: card.querySelector('.goal-value') && card.querySelector('.goal-value').textContent,
  facts: Array.from(card.querySelectorAll('.facts dt')).map((t) => t.textContent),
  warnings: Array.from(card.querySelectorAll('.warnings li')).map((t) => t.textContent),
  top: card.getBoundingClientRect().top,
}));
"""


def test_report_renders_without_errors_and_script_stays_text(browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    run = make_realistic_run(tmp_path / "grpo-gsm8k")
    path = write_report(run)
    messages = open_report(browser, path)
    assert [m for m in messages if m["level"] == "SEVERE"] == []
    assert browser.execute_script("return document.documentElement.dataset.rendered") == "true"

    # the page opens on the result: what was trained on what, accuracy before -> after, time, memory
    (head,) = browser.execute_script(HEADER)
    assert head["name"] == "grpo-gsm8k" and head["top"] < 120
    assert head["trained"] == ["model", "data", "rewards", "trainer"]
    assert head["goal"] == "held-out accuracy eval/accuracy · step 0 → step 119"
    assert head["value"] == "0.1→0.777+0.677"
    assert head["facts"] == ["training time", "peak memory", "logged"]
    assert head["warnings"] == ["⚠ non-finite values (NaN or inf) logged: kl (1 step)"]
    goal_chart = browser.execute_script(
        "const c = document.querySelector('#run-heads .goal-chart');"
        "return [c.dataset.chart, c.querySelectorAll('path.series.raw').length,"
        " c.querySelectorAll('path.series:not(.raw)').length]"
    )
    assert goal_chart == [
        "held-out accuracy and mean reward",
        1,
        2,
    ]  # the reward smoothed, its raw line faint

    # the metrics that never changed are one line, and none of them has a chart
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    constant = constant_metrics(rows)
    assert list(constant) == ["completion_length/max", *CONSTANT]
    line = browser.execute_script("return document.getElementById('constant-metrics').textContent")
    assert line.startswith(
        "constant over the run: completion_length/max 256 · rewards/unscored_fraction 0 · "
    )
    assert [k for k in constant if k in line] == list(constant)
    stats = browser.execute_script(CHART_STATS)
    assert not {key for s in stats for key in s["keys"]} & set(constant)

    # every other chart drew its lines: one per logged key of the group, in the order of the algorithm
    keys = [key for key in rows[0] if key != "step" and key not in constant]
    expected = {chart.title: len(chart.keys) for chart in chart_layout([*keys, "eval/accuracy"])}
    assert {s["title"]: s["drawn"] for s in stats} == expected
    assert [s["title"] for s in stats][:6] == ["eval", "reward", "rewards · mean", "zero_std", "clip", "kl"]

    # the <script> in a completion is shown as text and never ran
    assert browser.execute_script("return window.__pwned") is None
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.completion pre')).map((p) => p.textContent)"
    )
    assert XSS in shown
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#sample-view script, #sample-view img').length"
        )
        == 0
    )

    # the sample browser: best and worst marked, the zero-variance group flagged, chat prompts by role
    assert browser.execute_script("return document.querySelectorAll('.completion.best').length") == 2
    assert browser.execute_script("return document.querySelectorAll('.completion.worst').length") == 1
    badges = browser.execute_script(
        "return Array.from(document.querySelectorAll('.badge')).map((b) => b.textContent)"
    )
    assert badges == ["truncated", "all rewards equal: zero advantage, no learning signal"]
    roles = browser.execute_script(
        "return Array.from(document.querySelectorAll('.role')).map((r) => r.textContent)"
    )
    assert roles == ["prompt", "answer", "system", "user", "answer"]

    browser.save_screenshot(str(tmp_path / "report.png"))
    Select(browser.find_element("id", "step-select")).select_by_visible_text("10")  # past the markup test
    browser.execute_script("window.scrollTo(0, document.getElementById('samples').offsetTop - 50)")
    browser.save_screenshot(str(tmp_path / "report-samples.png"))
    for name in ("report.png", "report-samples.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("GRPOKIT_UPDATE_DOCS_IMAGE") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "report-samples.png", DOCS_IMAGES / "report-samples.png")


def test_step_picker_hover_and_legend(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    path = write_report(make_realistic_run(tmp_path / "run", steps=30))
    assert [m for m in open_report(browser, path) if m["level"] == "SEVERE"] == []

    picker = Select(browser.find_element("id", "step-select"))
    assert [o.text for o in picker.options] == ["0", "10", "20"]
    picker.select_by_visible_text("20")
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.completion pre')).map((p) => p.textContent)"
    )
    assert XSS not in shown and COMPLETIONS[3] in shown  # step 20 holds the plain completions

    overlay = browser.find_element(
        "css selector", "#chart-grid .chart-card[data-chart=reward] svg.chart .overlay"
    )
    ActionChains(browser).move_to_element(overlay).perform()
    tooltip = browser.execute_script(
        "const t = document.querySelector('.tooltip:not([hidden])'); return t && t.textContent"
    )
    assert tooltip is not None and tooltip.startswith("step ") and "mean: " in tooltip
    assert "(smoothed " in tooltip  # smoothing is on from the start

    reward_card = "document.querySelector('#chart-grid .chart-card[data-chart=reward]')"
    browser.execute_script(f"{reward_card}.querySelector('.legend button').click()")
    assert (
        browser.execute_script(f"return {reward_card}.querySelectorAll('path.series:not(.raw)').length") == 1
    )
    # with the slider at 0 only the raw line is drawn
    browser.execute_script(
        "const s = document.getElementById('smoothing'); s.value = '0'; s.dispatchEvent(new Event('input'))"
    )
    assert browser.execute_script(f"return {reward_card}.querySelectorAll('path.series').length") == 1


def test_compare_overlays_runs_with_a_legend(browser, tmp_path):
    a = make_realistic_run(tmp_path / "lr-1e-6", steps=40, seed=0)
    b = make_realistic_run(tmp_path / "lr-2e-6", steps=60, seed=1, ceiling=0.6)
    path = write_report(a, other_runs=[b])
    assert path == a / "compare.html"
    assert [m for m in open_report(browser, path) if m["level"] == "SEVERE"] == []
    stats = {s["title"]: s for s in browser.execute_script(CHART_STATS)}
    assert stats["kl"]["drawn"] == 2 and stats["kl"]["legend"] == ["lr-1e-6", "lr-2e-6"]
    assert stats["reward"]["legend"] == ["mean · lr-1e-6", "std · lr-1e-6", "mean · lr-2e-6", "std · lr-2e-6"]
    heads = browser.execute_script(HEADER)
    assert [h["name"] for h in heads] == ["lr-1e-6", "lr-2e-6"]
    assert all(h["goal"].startswith("held-out accuracy") for h in heads)
    line = browser.execute_script("return document.getElementById('constant-metrics').textContent")
    assert line.startswith("constant over every run: ") and "ratio_mean 1" in line
    differing = browser.execute_script(
        "return Array.from(document.querySelectorAll('#config-view tr.diff th')).map((t) => t.textContent)"
    )
    assert differing == ["optim.lr", "optim.max_steps", "optim.seed"]


def test_empty_flat_and_single_point_runs_render(browser, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    messages = open_report(browser, write_report(empty))
    assert [m for m in messages if m["level"] == "SEVERE"] == []
    texts = browser.execute_script("return document.querySelector('main').innerText")
    assert "no numeric metrics logged" in texts and "no samples logged" in texts
    assert "no goal metric" in texts
    assert browser.execute_script("return document.getElementById('constant-metrics').hidden")

    odd = tmp_path / "odd"
    odd.mkdir()
    # "flat" varies by one ulp only: the chart must still get a sensible range and ticks
    rows = [
        {"step": 0, "single": 1.5, "flat": 0.1},
        {"step": 1, "flat": math.nextafter(0.1, 1)},
        {"step": 2, "flat": 0.1},
    ]
    (odd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    messages = open_report(browser, write_report(odd))
    assert [m for m in messages if m["level"] == "SEVERE"] == []
    stats = {s["title"]: s["drawn"] for s in browser.execute_script(CHART_STATS)}
    assert stats == {"flat": 1, "single": 0}  # one step has no line to draw ...
    assert (
        browser.execute_script("return document.querySelectorAll('svg.chart circle.point').length") == 1
    )  # a dot


EPISODE = [
    {
        "role": "assistant",
        "content": "I will look it up",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": XSS}}}],
        "reward": 0.0,
    },
    {"role": "tool", "name": "search", "content": "HTTP 500", "failed": True},
    {"role": "assistant", "content": "calling again", "tool_calls": [{"name": "search", "arguments": "{}"}]},
    {"role": "tool", "name": "search", "content": "Paris is the capital"},
    {"role": "assistant", "content": XSS, "reward": 1.0},
    {"role": "user", "content": "correct"},
]
MESSAGES = """
return Array.from(document.querySelectorAll('.completion')).map((card) => ({
  pre: Array.from(card.querySelectorAll(':scope > pre')).map((p) => p.textContent),
  messages: Array.from(card.querySelectorAll('.message')).map((m) => ({
    cls: m.className,
    label: m.querySelector('.message-role').textContent,
    reward: m.querySelector('.message-reward') && m.querySelector('.message-reward').textContent,
    content: m.querySelector('.message-content') && m.querySelector('.message-content').textContent,
    calls: Array.from(m.querySelectorAll('.tool-call')).map((c) =>
      [c.querySelector('.tool-name').textContent, c.querySelector('.tool-args').textContent]),
  })),
  raw: card.querySelector('.raw-completion pre') && card.querySelector('.raw-completion pre').textContent,
}));
"""


def test_a_multi_turn_sample_shows_its_conversation(browser, tmp_path):
    run = tmp_path / "agent"
    run.mkdir()
    row = {
        "step": 0,
        "prompt": [{"role": "user", "content": "What is the capital of France?"}],
        "completions": ["decoded: model and environment tokens", "Lyon"],
        "rewards": [1.0, 0.0],
        "advantages": [1.0, -1.0],
        "conversation": [EPISODE, None],
        "turns": [3, 1],
    }
    (run / "samples.jsonl").write_text(json.dumps(row) + "\n")
    assert [m for m in open_report(browser, write_report(run)) if m["level"] == "SEVERE"] == []
    episode, plain = browser.execute_script(MESSAGES)
    assert episode["pre"] == [] and episode["raw"] == "decoded: model and environment tokens"
    assert episode["messages"] == [
        {"cls": "message message-model", "label": "model · turn 1", "reward": "reward 0",
         "content": "I will look it up", "calls": [["search", json.dumps({"query": XSS})]]},
        {"cls": "message message-tool failed", "label": "tool error · search", "reward": None,
         "content": "HTTP 500", "calls": []},
        {"cls": "message message-model", "label": "model · turn 2", "reward": None,
         "content": "calling again", "calls": [["search", "{}"]]},
        {"cls": "message message-tool", "label": "tool result · search", "reward": None,
         "content": "Paris is the capital", "calls": []},
        {"cls": "message message-model", "label": "model · turn 3", "reward": "reward 1",
         "content": XSS, "calls": []},
        {"cls": "message message-environment", "label": "environment", "reward": None,
         "content": "correct", "calls": []},
    ]  # fmt: skip
    assert plain == {"pre": ["Lyon"], "messages": [], "raw": None}  # no conversation: the text, as ever
    # the kinds of message look different (the border that marks each)
    borders = browser.execute_script(
        "return Array.from(document.querySelectorAll('.message')).map((m) => getComputedStyle(m).borderLeftColor)"
    )
    assert len({borders[0], borders[1], borders[3], borders[5]}) == 4 and borders[0] == borders[2]
    assert browser.execute_script("return window.__pwned") is None
    assert (
        browser.execute_script(
            "return document.querySelectorAll('#sample-view script, #sample-view img').length"
        )
        == 0
    )
    heads = browser.execute_script(
        "return Array.from(document.querySelectorAll('.completion-head')).map((h) => h.textContent)"
    )
    assert heads == ["#1reward 1advantage 1turns 3best", "#2reward 0advantage -1turns 1worst"]
