"""Token-in/token-out rendering of a multi-turn conversation through the tokenizer's chat template.

The ids the model sampled are never decoded and re-encoded: decode -> encode is not the identity for most
tokenizers (BPE merges differ, whitespace is normalised), and a re-encoded turn would train the policy on
tokens it never sampled. So an episode's token sequence is built by concatenation::

    ids = opening(messages)                     the opening messages, rendered with the generation prompt
        + turn_1                                 the ids the sampler drew, stop token included
        + between_turns(env_messages_1)          what the template puts after an assistant turn for them
        + turn_2 + ...

:meth:`ChatRenderer.between_turns` renders the new messages after a stand-in conversation that ends with an
assistant turn, and keeps what follows that turn's stop token: the template's closing of the assistant
turn (``"\\n"`` after ``<|im_end|>`` in Qwen's), the new messages, and the next generation prompt. Every
template renders a prefix of a conversation the same way at its start, which is what this relies on; a
template that does not (one that rewrites earlier turns once more messages follow, or never closes an
assistant turn with a stop token) gets a :class:`TemplateError` naming what failed, before any training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpokit.agents.environment import Message

__all__ = ["ChatRenderer", "TemplateError"]


class TemplateError(ValueError):
    """The chat template cannot render a turn of the conversation incrementally."""


class ChatRenderer:
    """Renders the opening of an episode and the environment's messages between turns to token ids.

    Args:
        tokenizer: the policy's tokenizer, with a chat template.
        stop_ids: the ids that end an assistant turn (the sampler's stop tokens).
        tools: JSON schemas of the episode's tools, passed to the template as ``tools=`` (None or empty:
            none).
        chat_template_kwargs: extra keyword arguments of ``apply_chat_template``.
    """

    def __init__(
        self,
        tokenizer: Any,
        stop_ids: Sequence[int],
        *,
        tools: list[dict[str, Any]] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "multi-turn episodes render messages through the tokenizer's chat template, and this tokenizer "
                "has none: set tokenizer.chat_template (model.tokenizer_name_or_path may name one that has it)"
            )
        if not stop_ids:
            raise TemplateError("no stop token ids: an assistant turn could never end")
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.tools = list(tools) if tools else None
        self.kwargs = dict(chat_template_kwargs or {})
        self._closing_cache: dict[tuple[str, ...], list[int]] = {}

    def _render(self, messages: list[Message], *, generation_prompt: bool, what: str) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tools=self.tools, add_generation_prompt=generation_prompt, tokenize=False, **self.kwargs
            )
        except Exception as error:  # a Jinja error, or a template that refuses a role: name the turn
            roles = [m.get("role") for m in messages]
            raise TemplateError(f"the chat template cannot render {what} (roles {roles}): {error}") from error
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def opening(self, messages: list[Message]) -> list[int]:
        """The opening messages with the generation prompt: the ids the first turn continues."""
        if not messages:
            raise TemplateError("the environment's reset returned no messages: an episode needs an opening")
        ids = self._render(list(messages), generation_prompt=True, what="the opening messages")
        if not ids:
            raise TemplateError("the opening messages render to zero tokens")
        return ids

    def between_turns(self, messages: list[Message]) -> list[int]:
        """The ids that follow an assistant turn's stop token: the template's closing of that turn, the
        environment's ``messages`` (tool results, feedback) and the next generation prompt.

        Raises:
            TemplateError: the template fails on these messages, renders no stop token at the end of an
                assistant turn, or renders the earlier conversation differently once the messages follow.
        """
        if not messages:
            raise TemplateError("between_turns needs at least one message (the episode would not change)")
        stand_in = self._stand_in(messages)
        before = self._render(stand_in, generation_prompt=False, what="an assistant turn")
        ends = [i for i, token in enumerate(before) if token in self.stop_ids]
        if not ends:
            raise TemplateError(
                "the chat template does not end an assistant turn with a stop token "
                f"(ids {sorted(self.stop_ids)}): the sampler could not tell where a turn ends"
            )
        before = before[: ends[-1] + 1]
        after = self._render(stand_in + list(messages), generation_prompt=True, what="the messages after a turn")
        if after[: len(before)] != before:
            roles = [m.get("role") for m in messages]
            raise TemplateError(
                f"the chat template renders the conversation differently once {roles} messages follow an "
                "assistant turn, so the new tokens cannot be appended to the sampled ones (token-in/token-out "
                "needs a template that renders each prefix of a conversation as the start of the whole)"
            )
        return after[len(before) :]

    @staticmethod
    def _stand_in(messages: list[Message]) -> list[Message]:
        """A short conversation ending with an assistant turn, calling the tools the messages answer (some
        templates name the tool in the result's header)."""
        assistant: Message = {"role": "assistant", "content": "ok"}
        called = [m.get("name") or "tool" for m in messages if m.get("role") == "tool"]
        if called:
            assistant["tool_calls"] = [
                {"type": "function", "function": {"name": name, "arguments": {}}} for name in called
            ]
        return [{"role": "user", "content": "hi"}, assistant]
