"""Rules every instruction record obeys, so that LLaVA-style trainers read it as intended.

LLaVA / LLaMA-VID move the ``<image>`` token to the start of the first human turn followed by a
newline and mask all but the assistant turns; a record with two tokens, a stray token in an
answer, or turns out of order trains on the wrong tokens without any error. The instruct stage
checks each record it emits here and raises on a problem: an invalid record is a bug there.
"""

from __future__ import annotations

from typing import Any, Mapping

from blift.instruct.verbalize import IMAGE_TOKEN

SPLITS = ("train", "validation", "test")
TASKS = ("behavior", "content")
_BEHAVIOR_FIELDS = ("score", "upvote_ratio", "num_comments", "view_count", "like_count", "like_ratio",
                    "comments", "comment_scores")


class InvalidInstruction(AssertionError):
    """An emitted instruction record breaks a rule (a bug in a template or in the stage)."""


def validate_record(rec: Mapping[str, Any]) -> list[str]:
    """Problems with one record (an empty list when it is valid)."""
    problems: list[str] = []
    turns = rec.get("conversations") or []
    if not turns:
        return ["no conversation turns"]
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            problems.append(f"turn {i}: role {turn.get('from')!r}, expected {expected!r} (roles alternate from human)")
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            problems.append(f"turn {i}: empty text")
    if turns[-1].get("from") != "gpt":
        problems.append("the last turn is not the assistant's (gpt)")

    media = rec.get("media") or []
    tokens = sum(str(t.get("value") or "").count(IMAGE_TOKEN) for t in turns)
    if rec.get("media_kind") in ("image", "video") or media:
        if not media:
            problems.append(f"{rec.get('media_kind')} record with an empty media list")
        if tokens != 1:
            problems.append(f"{IMAGE_TOKEN} appears {tokens} times, expected exactly once")
        first = str(turns[0].get("value") or "")
        if not first.startswith(IMAGE_TOKEN + "\n"):
            problems.append(f"the first human turn must start with {IMAGE_TOKEN!r} followed by a newline")
    elif tokens:
        problems.append(f"{IMAGE_TOKEN} in a record without media")

    task = rec.get("task")
    if task not in TASKS:
        problems.append(f"task {task!r} is not one of {TASKS}")
    if rec.get("uid") and task and rec.get("id") != f"{rec['uid']}:{task}":
        problems.append(f"id {rec.get('id')!r} is not '<uid>:<task>'")
    if rec.get("split") not in SPLITS:
        problems.append(f"split {rec.get('split')!r} is not one of {SPLITS}")

    targets = rec.get("targets")
    if task == "content" and targets is not None:
        present = [f for f in _BEHAVIOR_FIELDS if targets.get(f) is not None]
        if present:
            problems.append(f"content (control) record carries behavior targets: {present}")
    if task == "behavior":
        if targets is None:
            problems.append("behavior record without targets")
        else:
            comments, scores = targets.get("comments"), targets.get("comment_scores")
            if (comments is None) != (scores is None) or (comments is not None and len(comments) != len(scores)):
                problems.append("targets.comments and targets.comment_scores differ in length")
    return problems


def check_record(rec: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidInstruction` naming the record and every problem found."""
    problems = validate_record(rec)
    if problems:
        raise InvalidInstruction(f"instruction record {rec.get('id')!r} is invalid: " + "; ".join(problems))
