"""Instruction records for videos: a behavior record and its content-only control.

Three template pairs: YouTube videos (below), Reddit video posts (Reddit's score, ratio and
comments; the linked video's counts and most-replayed graph from its ``videos`` row), and the
generic pair for any other source or a video lacking what its platform pair states (see
:mod:`blift.stages.instruct.behavior_values`); the choice is :meth:`VideoRecords._mode`.

Per eligible video the instruct stage writes, in the order of ``tasks``:

* ``<uid>:behavior`` – human: the video token, channel, title, the scene-by-scene
  verbalization (:mod:`blift.stages.instruct.video_verbalize`) and the question; assistant: views,
  likes, like ratio, comment count, the replay value of each scene, the most replayed scenes
  and the top-k top-level comments ranked by likes.
* ``<uid>:content`` – the control: same context, the assistant gives the verbalization; no
  behavior anywhere (``targets`` is null).

Choices (the paper does not say):

* **Pairing.** As for images, a video is eligible for both tasks or for none, so behavior and
  control cover the same videos. Drop reasons, checked in this order: ``other_platform``
  (the video templates are for another platform), ``no_media`` (no downloaded video file),
  ``no_scenes`` (the scenes stage found none / did not run), ``no_views`` (views missing or 0:
  no like ratio), ``no_likes`` (likes hidden), ``no_heatmap`` (only with
  ``require_heatmap``), ``few_comments``, ``over_budget`` (the verbalization cannot be made to
  fit ``max_tokens``, see :mod:`blift.stages.instruct.token_budget`). Scenes not numbered 0..n-1 or
  heatmap values outside 0..1 make the record ``invalid`` (an error row), as does a missing title.
* **Media.** The first ok media row with a ``video/*`` MIME type (lowest ``index``). The record's
  ``media`` is the frames ``.npy`` of that file when the scenes stage wrote one (what LLaMA-VID
  reads), else the video file; ``<image>`` is the media token for both (LLaMA-VID uses it for
  video too).
* **Numbers.** Views, likes and comment count are exact integers. The like ratio is likes /
  views as a percentage with one decimal, half up (``"2.0%"``, the paper's example format);
  ``targets.like_ratio`` is the unrounded fraction. Replay values are the time-weighted mean of
  the heatmap over each scene (:mod:`blift.stages.instruct.replay`), shown with two decimals
  (``"0.06"``); scenes the heatmap does not cover are left out of the text and are ``null`` in
  ``targets.scene_replay``. Without a heatmap both replay lines are left out and both replay
  targets are null. ``targets.most_replayed_scenes`` holds 0-based scene numbers (as in the
  ``scenes`` table), most replayed first; the text numbers scenes from 1, like the
  verbalization.
* **Comments.** Top-level comments ranked by ``like_count`` (ties by comment id); pinned ones are
  skipped (usually the uploader's own). ``targets.comment_scores`` are their like counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from blift.errors import InvalidRecord
from blift.ids import split_of
from blift.stages.instruct.behavior_values import NamedValue, asked_for, behavior_lines, named_values
from blift.stages.instruct.replay import most_replayed, scene_replay
from blift.stages.instruct.scene_behavior import scene_spans
from blift.stages.instruct.templates import Template, placeholders_of
from blift.stages.instruct.token_budget import Fitted, TokenCounter, fit
from blift.stages.instruct.verbalize import format_count, format_ratio, source_context, subreddit_name, tidy
from blift.stages.instruct.video_verbalize import build_annotation_text, build_video_text, format_duration

#: Values each kind of video record provides to its template.
VIDEO_CONTENT_VALUES = frozenset({"channel", "title", "duration", "video_description"})
VIDEO_BEHAVIOR_VALUES = VIDEO_CONTENT_VALUES | {
    "views", "likes", "like_ratio", "num_comments", "subscribers", "scene_replay", "most_replayed", "comments",
    "num_listed",
}
REDDIT_VIDEO_CONTENT_VALUES = frozenset({"subreddit", "title", "duration", "video_description"})
REDDIT_VIDEO_BEHAVIOR_VALUES = REDDIT_VIDEO_CONTENT_VALUES | {
    "score", "upvote_ratio", "num_comments", "views", "likes", "scene_replay", "most_replayed", "comments",
    "num_listed",
}
GENERIC_VIDEO_CONTENT_VALUES = frozenset({"source", "community", "title", "duration", "video_description"})
GENERIC_VIDEO_BEHAVIOR_VALUES = GENERIC_VIDEO_CONTENT_VALUES | {
    "asked", "behavior", "comments_block", "scene_replay", "most_replayed", "num_listed",
}
DESCRIPTION = "video_description"
ANY = "any"

TopComments = Callable[[list[dict[str, Any]], str], tuple[list[tuple[dict[str, Any], str]], int]]


@dataclass
class VideoRows:
    """Every input row about one video item."""

    media: list[dict[str, Any]] = field(default_factory=list)
    video: dict[str, Any] | None = None  # the `videos` row
    scenes: list[dict[str, Any]] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    captions: list[dict[str, Any]] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    behavior: list[dict[str, Any]] = field(default_factory=list)  # named values (schemas/behavior.yaml)


def format_percent(ratio: float) -> str:
    """A fraction as a percentage with one decimal, half up: ``0.02`` -> ``"2.0%"``."""
    return f"{math.floor(ratio * 1000 + 0.5) / 10:.1f}%"


def format_replay(value: float) -> str:
    """A 0..1 replay value with two decimals, half up: ``0.0625`` -> ``"0.06"``."""
    return f"{math.floor(value * 100 + 0.5) / 100:.2f}"


def _first_video(media: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [m for m in media
          if m.get("status") == "ok" and m.get("path") and str(m.get("mime") or "").startswith("video/")]
    return min(ok, key=lambda m: m["index"]) if ok else None


def _no_media_detail(media: list[dict[str, Any]], video: dict[str, Any] | None) -> str:
    statuses = ", ".join(sorted({f"{m.get('status')}:{m.get('reason') or m.get('mime')}" for m in media}))
    detail = f"no downloaded video ({statuses or 'no media rows'})"
    if video is not None and video.get("file_status") != "ok":
        detail += (f"; collector file_status {video.get('file_status')}:"
                   f"{video.get('file_reason') or video.get('file_error')}")
    return detail


class VideoRecords:
    """Builds the records of one video item; one instance per stage worker."""

    def __init__(self, pairs: dict[str, dict[str, Template]], tasks: Sequence[str], *, counter: TokenCounter,
                 max_tokens: int, most_replayed_k: int, top_k_comments: int, min_comments: int,
                 require_heatmap: bool, split_validation: float, split_test: float,
                 fallback_generic: bool = True, annotations: dict[str, Template] | None = None) -> None:
        """``pairs``: the templates (task -> template) of each platform, ``any`` for the generic
        ones; the platform whose templates state views and likes is the one not named reddit."""
        self.pairs = pairs
        self.annotations = annotations or {}
        self.tasks = tasks
        self.fallback_generic = fallback_generic
        self.counter = counter
        self.max_tokens = max_tokens
        self.most_replayed_k = most_replayed_k
        self.top_k_comments = top_k_comments
        self.min_comments = min_comments
        self.require_heatmap = require_heatmap
        self.splits = (split_validation, split_test)
        # which turns of each template hold the verbalization: those are what the budget measures
        self._measured = {
            t.name: [i for i, (_, text) in enumerate(t.turns) if DESCRIPTION in placeholders_of(text)] or [0]
            for pair in (*pairs.values(), self.annotations) for t in pair.values()
        }

    def _mode(self, item: dict[str, Any], rows: VideoRows) -> tuple[str | None, str | None, str | None]:
        """(platform key of the templates to use, drop reason, detail): the item's own platform's
        templates when it has the behavior they state, else the generic ones (``fallback_generic``)."""
        platform = item.get("platform")
        if platform == ANY or platform not in self.pairs:
            if self.fallback_generic:
                return ANY, None, None
            known = sorted(p for p in self.pairs if p != ANY)
            return None, "other_platform", f"platform {platform!r}; video templates are for {known}"
        missing: tuple[str, str] | None = None
        if platform == "reddit":
            if item.get("score") is None:
                missing = ("no_score", "the item has no score")
        else:
            views, likes = item.get("view_count"), item.get("like_count")
            if not views or views <= 0:
                missing = ("no_views", f"view_count {views!r}")
            elif likes is None or likes < 0:
                missing = ("no_likes", f"like_count {likes!r} (likes hidden or unknown)")
        if missing is None:
            return str(platform), None, None
        if self.fallback_generic:
            return ANY, None, None
        return None, *missing

    def build(self, item: dict[str, Any], rows: VideoRows, top_comments: TopComments, counters: dict[str, int]
              ) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """(records, None, None) for an eligible video, else ([], reason, detail)."""
        uid = item["uid"]
        mode, reason, detail = self._mode(item, rows)
        if mode is None:
            return [], reason, detail
        templates = self.pairs[mode]
        media = _first_video(rows.media)
        if media is None:
            if self.annotations and _annotated(rows):
                return self._from_annotations(item, rows, top_comments, counters)
            return [], "no_media", _no_media_detail(rows.media, rows.video)
        index = media["index"]
        scenes = sorted((s for s in rows.scenes if s.get("media_index") == index), key=lambda s: s["scene"])
        if not scenes:
            return [], "no_scenes", f"no scenes rows for media index {index}"
        numbers = [s["scene"] for s in scenes]
        if numbers != list(range(len(scenes))):
            raise InvalidRecord(f"{uid}: scenes of media index {index} are numbered {numbers[:10]}, expected 0..n-1",
                                error_type="BadScenes")
        video = rows.video or {}
        heatmap = item.get("heatmap") or video.get("heatmap") or []
        bad = [h.get("value") for h in heatmap if h.get("value") is not None and not 0.0 <= h["value"] <= 1.0]
        if bad:
            raise InvalidRecord(f"{uid}: heatmap values outside 0..1: {bad[:3]}", error_type="BadHeatmap")
        if self.require_heatmap and not heatmap:
            return [], "no_heatmap", "the video has no most-replayed heatmap (require_heatmap is set)"
        ranking = "score" if mode == "reddit" or (mode == ANY and item.get("platform") != "youtube") else "like_count"
        top, usable = top_comments(rows.comments, ranking)
        values = named_values(item, rows.behavior)
        if mode == ANY:
            if not values and not top and not heatmap:
                return [], "no_behavior", "no behavior value, no usable top-level comment and no heatmap"
        elif usable < self.min_comments:
            return [], "few_comments", f"{usable} usable top-level comment(s) < min_comments {self.min_comments}"

        duration = media.get("duration_s") or video.get("duration_s")
        transcript = next((t for t in rows.transcripts if t.get("media_index") == index), None)
        text = build_video_text(
            scenes=scenes, media=media, duration_s=duration, transcript=transcript,
            captions=[c for c in rows.captions if c.get("media_index") == index],
            attributes=[a for a in rows.attributes if a.get("media_index") == index],
        )
        spans = scene_spans(scenes)
        duration = duration or spans[-1][1]
        context: dict[str, Any] = {"title": tidy(item.get("title")) or None, "duration": format_duration(duration)}
        if mode == "reddit":
            context["subreddit"] = subreddit_name(item.get("community"))
        elif mode == ANY:
            context.update(source_context(item, video.get("channel_name")))
        else:
            context["channel"] = tidy(item.get("community") or video.get("channel_name")) or None
        replay = scene_replay(heatmap, spans)
        means = [r.mean for r in replay]
        has_replay = any(m is not None for m in means)
        if not heatmap:
            counters["video_no_heatmap"] += 1
        replay_means = means if has_replay else None
        if mode == "reddit":
            vals, targets = self._reddit_behavior(item, video, top, replay_means, scenes, templates)
        elif mode == ANY:
            vals, targets = self._generic_behavior(item, values, top, replay_means, scenes, templates)
            counters["generic_records"] += 1
        else:
            vals, targets = self._behavior(item, top, replay_means, scenes, templates)

        fitted = self._fit(templates, text, context, vals, counters)
        if not fitted.fits:
            return [], "over_budget", self._over_budget(fitted)
        context[DESCRIPTION] = fitted.text

        frames = sorted((f for f in rows.frames if f.get("media_index") == index),
                        key=lambda f: (f.get("sampling") != "scenes", f.get("path") or ""))
        counters["video_media_frames" if frames else "video_media_file"] += 1
        counters["video_scene_captions"] += sum(1 for s in text.scenes if s.caption)
        base = {
            "uid": uid, "platform": item["platform"], "media_kind": "video",
            "media": [frames[0]["path"] if frames else media["path"]],
            "split": split_of(uid, *self.splits), "collected_at": item["collected_at"],
        }
        return self._records(templates, base, context, vals, targets, values), None, None

    def _from_annotations(self, item: dict[str, Any], rows: VideoRows, top_comments: TopComments,
                          counters: dict[str, int]) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """Text-only records of a video no file of which was fetched, from the annotations a corpus
        published for it (per-scene captions and on-screen text, a transcript; LCBM's CBC).

        There are no scene times, so the replay graph cannot be put on scenes: its values stay in
        the items row (and the release), not in these records; fetching the video gives scenes
        and then the usual records."""
        uid = item["uid"]
        video = rows.video or {}
        annotated = [r for r in (*rows.captions, *rows.attributes) if r.get("scene") is not None
                     and r.get("media_index", 0) == 0]
        numbers = sorted({int(r["scene"]) for r in annotated})
        ranking = "like_count" if item.get("platform") == "youtube" else "score"
        top, _ = top_comments(rows.comments, ranking)
        values = named_values(item, rows.behavior)
        if not values and not top:
            return [], "no_behavior", "no behavior value and no usable top-level comment"
        transcript = next((t for t in rows.transcripts if t.get("media_index", 0) == 0), None)
        text = build_annotation_text(
            scene_numbers=numbers, duration_s=video.get("duration_s"), transcript=transcript,
            captions=[c for c in rows.captions if c.get("media_index", 0) == 0],
            attributes=[a for a in rows.attributes if a.get("media_index", 0) == 0],
        )
        duration = video.get("duration_s")
        context: dict[str, Any] = {**source_context(item, video.get("channel_name")),
                                   "duration": format_duration(duration) if duration else None}
        vals, targets = self._generic_behavior(item, values, top, None, [], self.annotations)
        vals.pop("scene_replay", None)
        vals.pop("most_replayed", None)
        fitted = self._fit(self.annotations, text, context, vals, counters)
        if not fitted.fits:
            return [], "over_budget", self._over_budget(fitted)
        context[DESCRIPTION] = fitted.text
        counters["video_annotation_records"] += 1
        if item.get("heatmap") or video.get("heatmap"):
            counters["video_annotation_replay_not_on_scenes"] += 1
        base = {"uid": uid, "platform": item["platform"], "media_kind": "video", "media": [],
                "split": split_of(uid, *self.splits), "collected_at": item["collected_at"]}
        return self._records(self.annotations, base, context, vals, targets, values), None, None

    # ------------------------------------------------------------------ parts

    def _records(self, templates: dict[str, Template], base: dict[str, Any], context: dict[str, Any],
                 vals: dict[str, Any], targets: dict[str, Any], values: list[NamedValue]) -> list[dict[str, Any]]:
        """The records of one video, one per task: behavior with its values and targets, content
        with the context alone."""
        named = [v.target() for v in values]
        records = []
        for task in self.tasks:
            template = templates[task]
            behavior = task == "behavior"
            rendered = {**context, **vals} if behavior else dict(context)
            records.append({"id": f"{base['uid']}:{task}", "task": task, "template": template.name,
                            "template_version": template.version, "conversations": template.render(rendered),
                            "targets": targets if behavior else None, "behavior": named if behavior else None,
                            **base})
        return records

    def _over_budget(self, fitted: Fitted) -> str:
        return (f"verbalization still {fitted.tokens} tokens > max_tokens {self.max_tokens} "
                f"after every truncation step ({self.counter.name})")

    def _replay_values(self, means: list[float | None] | None, scenes: list[dict[str, Any]]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The replay placeholders and targets every video template shares."""
        ranked = most_replayed(means, self.most_replayed_k) if means is not None else None
        values = {
            "scene_replay": ", ".join(f"Scene {scenes[i]['scene'] + 1}: {format_replay(m)}"
                                      for i, m in enumerate(means) if m is not None) if means is not None else None,
            "most_replayed": ", ".join(str(scenes[i]["scene"] + 1) for i in ranked) if ranked else None,
        }
        targets = {
            "scene_replay": list(means) if means is not None else None,
            "most_replayed_scenes": [int(scenes[i]["scene"]) for i in ranked] if ranked else None,
        }
        return values, targets

    def _reddit_behavior(self, item: dict[str, Any], video: dict[str, Any], top: list[tuple[dict[str, Any], str]],
                         means: list[float | None] | None, scenes: list[dict[str, Any]],
                         templates: dict[str, Template]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A Reddit video post: Reddit's score, ratio and comments; the linked video's own counts
        and most-replayed graph (its ``videos`` row) when its host has them."""
        template = templates.get("behavior")
        ratio = item.get("upvote_ratio")
        views, likes = video.get("view_count"), video.get("like_count")
        replay, replay_targets = self._replay_values(means, scenes)
        values = {
            "score": format_count(item["score"]),
            "upvote_ratio": format_ratio(ratio) if ratio is not None else None,
            "num_comments": format_count(item["num_comments"]) if item.get("num_comments") is not None else None,
            "views": format_count(views) if views is not None else None,
            "likes": format_count(likes) if likes is not None else None,
            **replay,
            "comments": "\n".join(template.render_comment(i, text, c.get("score")) if template else text
                                  for i, (c, text) in enumerate(top, start=1)),
            "num_listed": str(len(top)),
        }
        targets = {
            "score": item["score"], "upvote_ratio": ratio, "num_comments": item.get("num_comments"),
            "view_count": views, "like_count": likes,
            "like_ratio": likes / views if views and likes is not None and views > 0 else None,
            "comments": [text for _, text in top], "comment_scores": [c.get("score") for c, _ in top],
            **replay_targets,
        }
        return values, targets

    def _generic_behavior(self, item: dict[str, Any], named: list[NamedValue], top: list[tuple[dict[str, Any], str]],
                          means: list[float | None] | None, scenes: list[dict[str, Any]],
                          templates: dict[str, Template]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Any source: every known named value, the replay of each scene, top comments."""
        template = templates.get("behavior")
        replay, replay_targets = self._replay_values(means, scenes)
        lines = [template.render_comment(i, text, _comment_score(c)) if template else text
                 for i, (c, text) in enumerate(top, start=1)]
        values = {
            "asked": asked_for(named, bool(top), with_replay=replay["scene_replay"] is not None),
            "behavior": behavior_lines(named) or None,
            **replay,
            "comments_block": "Top comments:\n" + "\n".join(lines) if lines else None,
            "num_listed": str(len(top)),
        }
        views, likes = item.get("view_count"), item.get("like_count")
        comment_count = item.get("num_comments") if item.get("num_comments") is not None else item.get("comment_count")
        targets = {
            "score": item.get("score"), "upvote_ratio": item.get("upvote_ratio"), "num_comments": comment_count,
            "view_count": views, "like_count": likes,
            "like_ratio": likes / views if views and likes is not None and views > 0 else None,
            "comments": [text for _, text in top], "comment_scores": [_comment_score(c) for c, _ in top],
            **replay_targets,
        }
        return values, targets

    def _behavior(self, item: dict[str, Any], top: list[tuple[dict[str, Any], str]], means: list[float | None] | None,
                  scenes: list[dict[str, Any]], templates: dict[str, Template]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
        views, likes = int(item["view_count"]), int(item["like_count"])
        comment_count = item.get("comment_count")
        if comment_count is None:
            comment_count = item.get("num_comments")
        ranked = most_replayed(means, self.most_replayed_k) if means is not None else None
        template = templates.get("behavior")
        comment_lines = [template.render_comment(i, text, c.get("like_count")) if template else text
                         for i, (c, text) in enumerate(top, start=1)]
        values = {
            "views": format_count(views),
            "likes": format_count(likes),
            "like_ratio": format_percent(likes / views),
            "num_comments": format_count(comment_count) if comment_count is not None else None,
            "subscribers": format_count(item["subscriber_count"]) if item.get("subscriber_count") is not None else None,
            "scene_replay": ", ".join(f"Scene {scenes[i]['scene'] + 1}: {format_replay(m)}"
                                      for i, m in enumerate(means) if m is not None) if means is not None else None,
            "most_replayed": ", ".join(str(scenes[i]["scene"] + 1) for i in ranked) if ranked else None,
            "comments": "\n".join(comment_lines),
            "num_listed": str(len(top)),
        }
        targets = {
            "score": None, "upvote_ratio": None,
            "num_comments": comment_count,
            "view_count": views, "like_count": likes, "like_ratio": likes / views,
            "comments": [text for _, text in top],
            "comment_scores": [c.get("like_count") for c, _ in top],
            "scene_replay": list(means) if means is not None else None,
            "most_replayed_scenes": [int(scenes[i]["scene"]) for i in ranked] if ranked else None,
        }
        return values, targets

    def _fit(self, templates: dict[str, Template], text: Any, context: dict[str, Any], values: dict[str, Any],
             counters: dict[str, int]) -> Fitted:
        """Shorten the verbalization until every turn that holds it fits ``max_tokens`` (each
        shortening step counted)."""

        def measure(description: str) -> int:
            worst = 0
            for task, template in templates.items():
                vals = {**context, **values, DESCRIPTION: description} if task == "behavior" else \
                    {**context, DESCRIPTION: description}
                turns = template.render(vals)
                worst = max(worst, *(self.counter.count(turns[i]["value"]) for i in self._measured[template.name]))
            return worst

        fitted = fit(text, measure, self.max_tokens)
        for step in fitted.steps:
            counters[f"budget_{step}"] += 1
        return fitted


def _annotated(rows: VideoRows) -> bool:
    """Whether a corpus published annotations of the video: per-scene captions or on-screen text."""
    return any(r.get("scene") is not None for r in (*rows.captions, *rows.attributes))


def _comment_score(comment: dict[str, Any]) -> int | None:
    score = comment.get("score")
    return score if score is not None else comment.get("like_count")

