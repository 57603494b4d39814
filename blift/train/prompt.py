"""Render BLIFT conversations into the text a LLaVA-family model is trained and scored on.

The template is LLaVA's ``vicuna_v1`` (LLaMA-VID's ``imgsp_v1``, which the Behavior-LLaVA authors
trained with): a system sentence, then ``USER: <human> ASSISTANT: <gpt></s>`` per exchange, with
" " after a user turn and ``</s>`` after an assistant turn. The media token (``<image>`` or
``<video>``) is moved to the start of the first human turn and followed by a newline, as
LLaVA's ``preprocess`` does, so a record that put it elsewhere still trains the same way.

Supervision is decided here, in characters, not in the collator: :func:`render` returns the
spans of the assistant answers (each with its closing ``</s>``, so the model learns to stop) and
everything outside them is context. Training, likelihood scoring and generation all call this one
function, so a prompt at evaluation is the prompt at training byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
USER, ASSISTANT = "USER", "ASSISTANT"
EOS = "</s>"
MEDIA_TOKENS = ("<image>", "<video>")
HUMAN_ROLES = frozenset({"human", "user"})
GPT_ROLES = frozenset({"gpt", "assistant"})


class ConversationError(ValueError):
    """A conversation that cannot be rendered (empty, roles out of order, unknown role)."""


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: ``text`` and the character spans ``[start, end)`` of ``text``
    that are supervised (assistant answers with their ``</s>``)."""

    text: str
    assistant_spans: tuple[tuple[int, int], ...]


def _turns(conversations: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(role, value) pairs with roles normalised to human/gpt; checks alternation, human first."""
    if not conversations:
        raise ConversationError("conversation has no turns")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conversations):
        role = str(turn.get("from") or turn.get("role") or "").lower()
        value = turn.get("value", turn.get("content"))
        if role not in HUMAN_ROLES | GPT_ROLES:
            raise ConversationError(f"turn {i}: unknown role {role!r} (expected human/gpt)")
        if not isinstance(value, str):
            raise ConversationError(f"turn {i}: value must be a string, got {type(value).__name__}")
        role = "human" if role in HUMAN_ROLES else "gpt"
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            raise ConversationError(f"turn {i}: expected a {expected} turn, got {role} "
                                    "(turns must alternate, human first)")
        turns.append((role, value))
    return turns


def _move_media_token(turns: list[tuple[str, str]], media_token: str | None) -> list[tuple[str, str]]:
    """Strip every media token and put ``media_token`` + newline at the start of the first human
    turn (``None``: a text-only record, tokens stripped)."""
    out = []
    for i, (role, value) in enumerate(turns):
        for token in MEDIA_TOKENS:
            value = value.replace(token + "\n", "").replace(token, "")
        value = value.strip()
        if i == 0 and media_token:
            value = f"{media_token}\n{value}"
        out.append((role, value))
    return out


def render(conversations: Sequence[Mapping[str, str]], *, media_token: str | None = "<image>",
           system: str = SYSTEM) -> Rendered:
    """The whole conversation as training text, with its assistant spans.

    ``media_token``: the token(s) the model's processor expands into media features, placed at
    the start of the first human turn (pass ``"<image>" * n`` for n images, ``"<video>"`` for a
    video model, ``None`` for text only)."""
    turns = _move_media_token(_turns(conversations), media_token)
    parts = [system + " "] if system else []
    spans: list[tuple[int, int]] = []
    pos = len(parts[0]) if parts else 0
    for role, value in turns:
        if role == "human":
            piece = f"{USER}: {value} "
            parts.append(piece)
            pos += len(piece)
        else:
            head = f"{ASSISTANT}: "
            parts.append(head)
            pos += len(head)
            answer = value + EOS
            parts.append(answer)
            spans.append((pos, pos + len(answer)))
            pos += len(answer)
    return Rendered("".join(parts), tuple(spans))


def render_prompt(conversations: Sequence[Mapping[str, str]], *, media_token: str | None = "<image>",
                  system: str = SYSTEM) -> str:
    """The prompt for the *last* assistant answer: every turn before it, then ``ASSISTANT:``.

    A conversation ending in a human turn is prompted as is; one ending in a gpt turn has that
    answer left out (it is what the model is asked to produce or what a candidate is scored as)."""
    turns = list(conversations)
    if turns and str(turns[-1].get("from") or turns[-1].get("role") or "").lower() in GPT_ROLES:
        turns = turns[:-1]
    rendered = render(turns, media_token=media_token, system=system)
    return rendered.text + f"{ASSISTANT}:"


def last_answer(conversations: Sequence[Mapping[str, str]]) -> str:
    """The value of the final gpt turn (the reference answer of a record)."""
    turns = _turns(conversations)
    if turns[-1][0] != "gpt":
        raise ConversationError("conversation does not end with a gpt turn")
    return turns[-1][1]
