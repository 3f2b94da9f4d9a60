"""Prompt datasets (files, ``datasets``, memory), preference pairs, a resumable batch iterator, and built-in
tasks."""

from grpokit.data.iterator import PromptIterator
from grpokit.data.preferences import PreferencePair, load_preference_pairs
from grpokit.data.prompts import SUPPORTED_FORMATS, PromptDataset, load_prompts, screen_prompt_lengths
from grpokit.data.tasks import AdditionTask, Task, get_task, list_tasks, register_task

__all__ = [
    "SUPPORTED_FORMATS",
    "AdditionTask",
    "PreferencePair",
    "PromptDataset",
    "PromptIterator",
    "Task",
    "get_task",
    "list_tasks",
    "load_preference_pairs",
    "load_prompts",
    "register_task",
    "screen_prompt_lengths",
]
