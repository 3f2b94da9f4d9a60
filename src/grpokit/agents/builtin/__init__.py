"""The built-in environments, registered by name (``env.name``), each with the demo's flawed teacher.

- ``calculator`` (:mod:`~grpokit.agents.builtin.calculator`): 3-digit x 2-digit products with a ``calc``
  tool; the teacher calls the tool on 30% of problems and guesses the rest.
- ``guess_number`` (:mod:`~grpokit.agents.builtin.guess_number`): find a number in 1..16 in 5 guesses from
  "higher" / "lower"; the teacher scans upwards, with 30% random guesses.

Each class offers ``make_rows(n, seed, split)`` (its problems, ``train`` or ``test``), so a run needs no
dataset; ``grpokit demo --preset agent_calculator`` / ``agent_guess_number`` warms a tiny model up on the
teacher and trains it with GRPO in the environment (:mod:`grpokit.apps.agent_demo`).
"""

from grpokit.agents.builtin.base import ALPHABET, TeacherEpisode
from grpokit.agents.builtin.calculator import CalculatorEnv, CalculatorTeacher, evaluate_expression
from grpokit.agents.builtin.guess_number import GuessNumberEnv, GuessNumberTeacher

__all__ = [
    "ALPHABET",
    "TEACHERS",
    "CalculatorEnv",
    "CalculatorTeacher",
    "GuessNumberEnv",
    "GuessNumberTeacher",
    "TeacherEpisode",
    "evaluate_expression",
]

TEACHERS = {"calculator": CalculatorTeacher, "guess_number": GuessNumberTeacher}
"""The flawed teacher of each built-in environment (its default arguments are the demo's)."""
