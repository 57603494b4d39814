"""Rules every instruction record obeys, so that LLaVA-style trainers read it as intended.

LLaVA / LLaMA-VID move the ``<image>`` token to the start of the first human turn followed by a
newline and mask all but the assistant turns; a record with two tokens, a stray token in an
answer, or turns out of order trains on the wrong tokens without any error. The instruct stage
checks each record it emits here and raises on a problem: an invalid record is a bug there.

Video records add: one media entry (the frames ``.npy`` or the video file); behavior targets
with views, likes and ``like_ratio == likes / views``; replay values in 0..1; the most replayed
scenes distinct, with values, in decreasing order and not skipping a scene replayed more; no
Reddit targets. Image records must not carry scene replay targets.
"""

from __future__ import annotations

from typing import Any, Mapping

from blift.stages.instruct.verbalize import IMAGE_TOKEN

SPLITS = ("train", "validation", "test")
TASKS = ("behavior", "content")
_BEHAVIOR_FIELDS = ("score", "upvote_ratio", "num_comments", "view_count", "like_count", "like_ratio",
                    "comments", "comment_scores", "scene_replay", "most_replayed_scenes")
_MEDIA_KINDS = ("image", "video")


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
    if media or rec.get("media_kind") == "image":
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
    kind = rec.get("media_kind")
    if kind is not None and kind not in _MEDIA_KINDS:
        problems.append(f"media_kind {kind!r} is not one of {_MEDIA_KINDS}")
    if kind == "video" and len(media) > 1:  # none: a video known by its annotations alone (text only)
        problems.append(f"video record with {len(media)} media entries, expected one (frames .npy or video file)")

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
            stated = [f for f in _BEHAVIOR_FIELDS if targets.get(f) not in (None, [])]
            if not stated and not rec.get("behavior"):
                problems.append("behavior record states no behavior (no target and no named value)")
            if kind == "video":
                problems.extend(_video_target_problems(targets))
            elif targets.get("scene_replay") is not None or targets.get("most_replayed_scenes") is not None:
                problems.append(f"{kind} record carries scene replay targets")
    return problems


def _video_target_problems(targets: Mapping[str, Any]) -> list[str]:
    """A video behavior record's numbers agree with each other (views, likes, ratio, replay).

    Which numbers a record has depends on its source (a YouTube video: views and likes; an
    r/videos post: a score, and its video's counts when the host has them; any source: what it
    recorded), so only their agreement is checked."""
    problems = []
    views, likes, ratio = targets.get("view_count"), targets.get("like_count"), targets.get("like_ratio")
    if ratio is not None and (views is None or likes is None):
        problems.append("like_ratio without view_count and like_count")
    elif (views is not None and views < 0) or (likes is not None and likes < 0):
        problems.append(f"view_count {views} / like_count {likes} out of range")
    elif ratio is not None and views is not None and likes is not None and abs(ratio - likes / views) > 1e-9:
        problems.append(f"like_ratio {ratio} is not like_count / view_count ({likes}/{views})")
    replay, ranked = targets.get("scene_replay"), targets.get("most_replayed_scenes")
    if replay is None:
        if ranked is not None:
            problems.append("most_replayed_scenes without scene_replay")
        return problems
    bad = [v for v in replay if v is not None and not 0.0 <= v <= 1.0 + 1e-9]
    if bad:
        problems.append(f"scene_replay values outside 0..1: {bad[:3]}")
    if not ranked:
        if any(v is not None for v in replay):
            problems.append("scene_replay has values but most_replayed_scenes is empty")
        return problems
    if len(set(ranked)) != len(ranked) or any(not 0 <= i < len(replay) or replay[i] is None for i in ranked):
        problems.append(f"most_replayed_scenes {ranked} do not name distinct scenes with a replay value")
    elif any(replay[a] < replay[b] for a, b in zip(ranked, ranked[1:])):
        problems.append(f"most_replayed_scenes {ranked} are not in decreasing replay order")
    elif any(v is not None and v > replay[ranked[-1]] and i not in ranked for i, v in enumerate(replay)):
        problems.append(f"most_replayed_scenes {ranked} leave out a scene replayed more")
    return problems


def check_record(rec: Mapping[str, Any]) -> None:
    """Raise :class:`InvalidInstruction` naming the record and every problem found."""
    problems = validate_record(rec)
    if problems:
        raise InvalidInstruction(f"instruction record {rec.get('id')!r} is invalid: " + "; ".join(problems))
