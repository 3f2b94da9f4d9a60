"""Built-in verifiable tasks, registered by name: problems, a flawed teacher, and the true checker.

A task is what the demo needs to show what RL is for: users run RL because they can *check* answers but
do not have perfect demonstrations. So each task comes with

- ``make_problems(n, seed, split)``: rows with ``prompt`` and ``answer`` columns; ``split="train"`` and
  ``split="test"`` are disjoint by a fixed rule (a hash of the problem), whatever the seeds;
- ``teacher_completion(row)``: a demonstration from a *systematically flawed* teacher, so imitation
  learns the flaw and plateaus, while RL with the true checker can fix it;
- ``teacher_is_wrong(row)``: whether the teacher's demonstration fails the checker (to report accuracy
  separately on the problems the teacher gets right and on those it gets wrong);
- ``check(prompt, completion, answer)``: exact final-answer match, the reward.

Tasks (see :mod:`grpokit.data.tasks.addition`): ``addition`` (3-digit ``a+b``; the teacher drops the
carry from the tens into the hundreds) and ``addition5`` (the same with 5-digit operands, harder); and
(:mod:`grpokit.data.tasks.chain`) ``chain``, ``a+b+c`` written as two checked steps (partial sum, total),
whose ``step_scores`` give a process reward (the built-in ``task_steps``).
"""

from grpokit.data.tasks.addition import AdditionTask
from grpokit.data.tasks.base import SPLITS, Task, get_task, list_tasks, register_task
from grpokit.data.tasks.chain import ChainTask

__all__ = ["SPLITS", "AdditionTask", "ChainTask", "Task", "get_task", "list_tasks", "register_task"]

register_task("addition")(lambda: AdditionTask(3, "addition"))
register_task("addition5")(lambda: AdditionTask(5, "addition5"))
register_task("chain")(lambda: ChainTask("chain"))
