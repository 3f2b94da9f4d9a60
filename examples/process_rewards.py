"""A process reward for the built-in ``addition`` task: each answer digit is one reasoning step.

``digit_steps(prompts, completions, answer)`` returns, per completion, ``[(step_end_token, score), ...]``:
the token index of each digit with 1.0 when it matches the true answer's digit at that position, else 0.0.
The character tokenizer of the built-in model has one token per digit, so character and token indices agree.
"""


def digit_steps(prompts, completions, answer, **_):
    steps = []
    for completion, gold in zip(completions, answer):
        text = completion
        scores = [(i, float(i < len(gold) and ch == gold[i])) for i, ch in enumerate(text[: max(len(gold), 1)])]
        steps.append(scores or [(0, 0.0)])
    return steps
