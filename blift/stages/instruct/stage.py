"""The ``instruct`` stage: image posts and videos to instruction records (behavior + content control).

The stage writes the ``instructions`` table and, beside it, ``scene_behavior``: each scene's
replay values and words (:mod:`blift.stages.instruct.scene_behavior`, the same functions the
video records use), for every item with ``scenes`` rows, so the release joins them instead of
recomputing them. Items are dispatched by ``media_kind``:
``image`` / ``gallery`` take the image path described here; ``video`` takes the video path of
:mod:`blift.stages.instruct.video_records` (scene-by-scene verbalization, replay targets, a token
budget); any other kind is dropped (``not_image``: neither image nor video).

Per eligible image item it writes up to two records, in the order of ``tasks``:

* ``<uid>:behavior`` – human: image, subreddit, title, verbalized image, question; assistant:
  upvotes, upvote ratio, comment count and the top-k top-level comments ranked by score.
* ``<uid>:content`` – the control of the paper's ablation: same context, the assistant
  describes the image; no behavior anywhere (``targets`` is null).

Choices (the paper does not say):

* **Paired records.** An item is eligible for *both* tasks or for none: it needs an ok image, an
  attributes row for that image, a score, and at least ``min_comments`` usable comments. An item
  with too few comments is dropped whole (reason ``few_comments``) rather than given a content
  record alone, so the behavior and the content sets cover exactly the same images and the
  ablation compares like with like. This holds even when ``tasks`` asks for one task only.
* **Galleries.** The first ok image (lowest media ``index`` with status ok and an ``image/*``
  MIME type) is the record's ``<image>``; it is the only entry of ``media``. The rest are not
  used (counted as ``gallery_images_unused``).
* **Comments.** Top-level (depth 0) comments only, since replies answer a comment, not the
  post. Stickied or moderator/admin-distinguished ones are skipped (they are announcements,
  not audience reaction). Ranked by score, highest first, ties by comment id; ``None`` scores
  rank last. Text is whitespace-collapsed and cut at ``max_comment_chars`` at a word boundary
  with ``…``; ``targets.comments`` holds exactly the texts shown in the answer.
* **Caption.** Used only when the ``caption`` stage wrote a ``captions`` row for the image
  (``scene`` null): its caption and keywords join the description. Without one there is no
  caption text (``attributes.caption`` is used only if some older run filled it).

**Any source.** Templates are picked per item by platform and media kind: the platform pairs
(Reddit images, Reddit video posts, YouTube videos) take items of their platform that have the
behavior they state; every other item (a table or folder source, a Reddit post without a score
such as the published BLIFT corpus, a video whose likes are hidden) takes the generic pair
(``generic_image_*`` / ``generic_video_*``), which states whatever the item has
(:mod:`blift.stages.instruct.behavior_values`): named values by their meaning, replay per scene,
top comments. Each behavior record also carries its named values typed (``instructions.behavior``).
``fallback_generic: false`` drops such items instead (``other_platform``, ``no_score``, ...).

Drop reasons (rows of ``dropped``, table ``items``): ``not_image``, ``other_platform`` (only
with ``fallback_generic: false``), ``no_media``, ``no_attributes``, ``no_score`` (idem),
``few_comments``, ``no_behavior`` (a generic item with no value and no comment); videos add
theirs (see :mod:`blift.stages.instruct.video_records`). A
record whose non-optional template value is missing (e.g. no title) becomes an ``invalid``
error row. Secondary inputs that a pipeline does not produce (videos, scenes, transcripts,
captions, frames) are read as empty tables by the runner.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from blift import schemas
from blift.errors import ConfigError, ErrorClass, InvalidRecord
from blift.ids import split_of
from blift.stage import RecordFailure, ShardInput, Stage, StageConfig, StageResult
from blift.stages.instruct.behavior_values import (
    NamedValue,
    asked_for,
    behavior_lines,
    named_values,
)
from blift.stages.instruct.scene_behavior import scene_behavior_rows
from blift.stages.instruct.templates import (
    MissingValue,
    Template,
    load_template,
    template_path,
)
from blift.stages.instruct.token_budget import make_counter, tokenizer_fingerprint
from blift.stages.instruct.validate import check_record
from blift.stages.instruct.verbalize import (
    describe_image,
    format_count,
    format_ratio,
    shorten,
    source_context,
    subreddit_name,
    tidy,
)
from blift.stages.instruct.video_records import (
    GENERIC_VIDEO_BEHAVIOR_VALUES,
    GENERIC_VIDEO_CONTENT_VALUES,
    REDDIT_VIDEO_BEHAVIOR_VALUES,
    REDDIT_VIDEO_CONTENT_VALUES,
    VIDEO_BEHAVIOR_VALUES,
    VIDEO_CONTENT_VALUES,
    VideoRecords,
    VideoRows,
)

#: Values each kind of record provides to its template. A content record gets no behavior, so
#: a content template that asks for a score fails at setup, naming its file.
CONTENT_VALUES = frozenset({"subreddit", "title", "image_description"})
BEHAVIOR_VALUES = CONTENT_VALUES | {"score", "upvote_ratio", "num_comments", "comments", "num_listed"}
GENERIC_CONTENT_VALUES = frozenset({"source", "community", "title", "image_description"})
GENERIC_BEHAVIOR_VALUES = GENERIC_CONTENT_VALUES | {"asked", "behavior", "comments_block", "num_listed"}
ANY_PLATFORM = "any"
IMAGE_KINDS = ("image", "gallery")
_MOD_DISTINCTIONS = ("moderator", "admin", "special")
_ITEM_COLUMNS = ("uid", "platform", "media_kind", "title", "text", "community", "score", "upvote_ratio",
                 "num_comments", "collected_at", "view_count", "like_count", "comment_count", "subscriber_count",
                 "heatmap")
_MEDIA_COLUMNS = ("uid", "index", "status", "reason", "path", "mime", "width", "height", "duration_s", "has_audio")
_COMMENT_COLUMNS = ("uid", "comment_id", "depth", "text", "score", "like_count", "stickied", "distinguished")
_VIDEO_COLUMNS = ("uid", "duration_s", "channel_name", "file_status", "file_reason", "file_error", "view_count",
                  "like_count", "comment_count", "heatmap")
_BEHAVIOR_COLUMNS = ("uid", "name", "value", "kind", "scale_min", "scale_max")
_TRANSCRIPT_COLUMNS = ("uid", "media_index", "status", "segments")
_CAPTION_COLUMNS = ("uid", "media_index", "scene", "caption", "keywords")
_GONE = {"[deleted]", "[removed]"}


Task = Literal["behavior", "content"]


class InstructConfig(StageConfig):
    behavior_template: str = "reddit_image_behavior"
    content_template: str = "reddit_image_content"
    top_k_comments: int = Field(5, ge=1, description="comments listed in a behavior answer")
    min_comments: int = Field(1, ge=1, description="usable top-level comments an item needs (both tasks)")
    max_comment_chars: int = Field(500, ge=20, description="longer comments are cut at a word with …")
    split_validation: float = Field(0.05, ge=0.0, le=1.0)
    split_test: float = Field(0.05, ge=0.0, le=1.0)
    tasks: list[Task] = Field(default_factory=lambda: list[Task](["behavior", "content"]))
    video_behavior_template: str = "youtube_video_behavior"
    video_content_template: str = "youtube_video_content"
    max_tokens: int = Field(1500, ge=64, description=(
        "video records: token budget of each turn that holds the verbalization (a 2048 context minus "
        "room for the answer); see blift.stages.instruct.token_budget for the truncation policy"))
    tokenizer: str | None = Field(None, description=(
        "count tokens with this local tokenizer (folder or cached name, loaded offline); "
        "default: a documented LLaMA-like estimate"))
    reddit_video_behavior_template: str = "reddit_video_behavior"
    reddit_video_content_template: str = "reddit_video_content"
    generic_image_behavior_template: str = "generic_image_behavior"
    generic_image_content_template: str = "generic_image_content"
    generic_video_behavior_template: str = "generic_video_behavior"
    generic_video_content_template: str = "generic_video_content"
    annotation_behavior_template: str = "video_annotations_behavior"
    annotation_content_template: str = "video_annotations_content"
    annotation_records: bool = Field(True, description=(
        "a video no file of which was fetched but whose scenes a corpus annotated (captions, on-screen "
        "text, a transcript: LCBM's CBC) gets text-only records from those annotations; false: no_media"))
    fallback_generic: bool = Field(True, description=(
        "an item of another platform than the platform templates', or one without the behavior they "
        "state (a Reddit post without a score, a video whose likes are hidden), gets the generic "
        "templates' records, which say whatever behavior is known; false: dropped (other_platform, "
        "no_score, no_views, no_likes)"))
    most_replayed_k: int = Field(3, ge=1, description="video records: how many most replayed scenes to name")
    require_heatmap: bool = Field(False, description="video records: drop videos without a heatmap (no_heatmap)")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError("tasks must name behavior and/or content, each once")
        return value

    @model_validator(mode="after")
    def _splits(self) -> "InstructConfig":
        if self.split_validation + self.split_test >= 1.0:
            raise ValueError("split_validation + split_test must leave room for train (< 1)")
        return self


def _score_key(comment: dict[str, Any], field: str = "score") -> tuple[int, int, str]:
    score = comment.get(field)
    return (score is None, -(score or 0), str(comment["comment_id"]))


class InstructStage(Stage):
    name = "instruct"
    version = 3  # v2: video records; image captions from the captions table; v3: any source (generic templates)
    inputs = {"items_clean": "items", "comments_clean": "comments", "media": "media", "attributes": "attributes",
              "videos": "videos", "scenes": "scenes", "transcripts": "transcripts", "captions": "captions",
              "frames": "frames", "behavior": "behavior"}
    outputs = {"instructions": "instructions", "scene_behavior": "scene_behavior"}
    resources = "cpu"
    Config = InstructConfig

    config: InstructConfig

    @classmethod
    def fingerprint(cls, config: StageConfig) -> dict[str, Any]:
        """The templates' bytes (editing a template redoes the records it produced) and the
        tokenizer that the video token budget counts with."""
        assert isinstance(config, InstructConfig)
        refs = (config.behavior_template, config.content_template, config.video_behavior_template,
                config.video_content_template, config.reddit_video_behavior_template,
                config.reddit_video_content_template, config.generic_image_behavior_template,
                config.generic_image_content_template, config.generic_video_behavior_template,
                config.generic_video_content_template, config.annotation_behavior_template,
                config.annotation_content_template)
        out: dict[str, Any] = {ref: hashlib.sha256(template_path(ref)[0].read_bytes()).hexdigest()[:16] for ref in refs}
        out["tokenizer"] = tokenizer_fingerprint(config.tokenizer)
        return out

    def _load(self, slots: tuple[tuple[str, str, str, frozenset[str]], ...], media_kind: str,
              platform: str | None = None, text_only: bool = False) -> dict[str, Template]:
        """The templates of one media kind, checked against their slot, kind, values and, when
        given, platform (``any`` for the generic ones)."""
        loaded: dict[str, Template] = {}
        for task, slot, ref, provided in slots:
            if task not in self.config.tasks:
                continue
            template = load_template(ref)
            if template.task != task:
                raise ConfigError(f"{template.path}: is a {template.task!r} template, configured as {slot}")
            if template.media_kind != media_kind:
                raise ConfigError(f"{template.path}: media_kind {template.media_kind!r}, configured as {slot} "
                                  f"(which needs a {media_kind} template)")
            if template.media_token == text_only:
                raise ConfigError(f"{template.path}: configured as {slot}, which needs a template "
                                  f"{'without' if text_only else 'with'} the media token (media_token: "
                                  f"{str(not text_only).lower()})")
            if platform is not None and template.platform != platform:
                raise ConfigError(f"{template.path}: platform {template.platform!r}, configured as {slot} "
                                  f"(which needs a {platform!r} template)")
            if platform is None and template.platform == ANY_PLATFORM:
                raise ConfigError(f"{template.path}: a generic (platform any) template, configured as {slot}; "
                                  f"generic templates go in the generic_* slots")
            template.check_provides(provided)
            loaded[task] = template
        platforms = {t.platform for t in loaded.values()}
        if len(platforms) != 1:
            raise ConfigError(f"{media_kind} templates are for different platforms: {sorted(platforms)}")
        return loaded

    def setup(self) -> None:
        """Load and cross-check the templates once per worker (a bad template fails here, early)."""
        cfg = self.config
        self.templates: dict[str, Template] = self._load((
            ("behavior", "behavior_template", cfg.behavior_template, BEHAVIOR_VALUES),
            ("content", "content_template", cfg.content_template, CONTENT_VALUES),
        ), "image")
        self.platform = next(iter(self.templates.values())).platform
        self.generic_templates: dict[str, Template] = self._load((
            ("behavior", "generic_image_behavior_template", cfg.generic_image_behavior_template,
             GENERIC_BEHAVIOR_VALUES),
            ("content", "generic_image_content_template", cfg.generic_image_content_template, GENERIC_CONTENT_VALUES),
        ), "image", ANY_PLATFORM)
        self.video_templates: dict[str, Template] = self._load((
            ("behavior", "video_behavior_template", cfg.video_behavior_template, VIDEO_BEHAVIOR_VALUES),
            ("content", "video_content_template", cfg.video_content_template, VIDEO_CONTENT_VALUES),
        ), "video")
        reddit_video = self._load((
            ("behavior", "reddit_video_behavior_template", cfg.reddit_video_behavior_template,
             REDDIT_VIDEO_BEHAVIOR_VALUES),
            ("content", "reddit_video_content_template", cfg.reddit_video_content_template,
             REDDIT_VIDEO_CONTENT_VALUES),
        ), "video", "reddit")
        generic_video = self._load((
            ("behavior", "generic_video_behavior_template", cfg.generic_video_behavior_template,
             GENERIC_VIDEO_BEHAVIOR_VALUES),
            ("content", "generic_video_content_template", cfg.generic_video_content_template,
             GENERIC_VIDEO_CONTENT_VALUES),
        ), "video", ANY_PLATFORM)
        annotations = self._load((
            ("behavior", "annotation_behavior_template", cfg.annotation_behavior_template,
             GENERIC_VIDEO_BEHAVIOR_VALUES - {"scene_replay", "most_replayed"}),
            ("content", "annotation_content_template", cfg.annotation_content_template, GENERIC_VIDEO_CONTENT_VALUES),
        ), "video", ANY_PLATFORM, text_only=True) if cfg.annotation_records else {}
        video_platform = next(iter(self.video_templates.values())).platform
        if video_platform == "reddit":
            raise ConfigError("video_behavior_template / video_content_template are Reddit templates; Reddit "
                              "video templates go in reddit_video_behavior_template / reddit_video_content_template")
        self.counter = make_counter(cfg.tokenizer)
        self.videos = VideoRecords(
            {video_platform: self.video_templates, "reddit": reddit_video, ANY_PLATFORM: generic_video},
            cfg.tasks, counter=self.counter, max_tokens=cfg.max_tokens, fallback_generic=cfg.fallback_generic,
            annotations=annotations,
            most_replayed_k=cfg.most_replayed_k, top_k_comments=cfg.top_k_comments, min_comments=cfg.min_comments,
            require_heatmap=cfg.require_heatmap, split_validation=cfg.split_validation, split_test=cfg.split_test,
        )

    def describe(self) -> str:
        loaded = [*getattr(self, "templates", {}).values(), *getattr(self, "generic_templates", {}).values()]
        videos = getattr(self, "videos", None)
        if videos is not None:
            loaded += [t for pair in (*videos.pairs.values(), videos.annotations) for t in pair.values()]
        names = ", ".join(f"{t.name} v{t.version}" for t in loaded)
        counter = getattr(self, "counter", None)
        tokens = f"; video budget {self.config.max_tokens} tokens by {counter.name}" if counter else ""
        return f"{self.name} ({names or 'templates not loaded'}{tokens})"

    # ------------------------------------------------------------------ shard

    def process(self, shard: ShardInput) -> StageResult:
        if not hasattr(self, "templates"):
            self.setup()
        items = self._rows(shard, "items_clean", _ITEM_COLUMNS)
        media = _by_uid(self._rows(shard, "media", _MEDIA_COLUMNS))
        attributes = _by_uid(self._rows(shard, "attributes"))
        comments = _by_uid(self._rows(shard, "comments_clean", _COMMENT_COLUMNS))
        captions = _by_uid(self._rows(shard, "captions", _CAPTION_COLUMNS))
        behavior_rows = _by_uid(self._rows(shard, "behavior", _BEHAVIOR_COLUMNS))
        has_video = any(i.get("media_kind") == "video" for i in items) or _has_rows(shard, "scenes")
        # video-only inputs are only converted when the shard holds a video (or scenes of some item)
        videos = {v["uid"]: v for v in self._rows(shard, "videos", _VIDEO_COLUMNS)} if has_video else {}
        scenes = _by_uid(self._rows(shard, "scenes")) if has_video else {}
        transcripts = _by_uid(self._rows(shard, "transcripts", _TRANSCRIPT_COLUMNS)) if has_video else {}
        frames = _by_uid(self._rows(shard, "frames")) if has_video else {}
        rows: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        errors: list[RecordFailure] = []
        behavior: list[dict[str, Any]] = []
        behavior_done: set[str] = set()  # an item listed twice gets its scenes' rows once
        counters: dict[str, int] = defaultdict(int)
        for item in items:
            uid = item["uid"]
            kind = item.get("media_kind")
            if uid in scenes and uid not in behavior_done:  # records or not: the release shows every scene
                behavior_done.add(uid)
                behavior += scene_behavior_rows(uid, item.get("heatmap"), scenes[uid], transcripts.get(uid, []))
            try:
                if kind in IMAGE_KINDS:
                    records, reason, detail = self._item(item, media.get(uid, []), attributes.get(uid, []),
                                                         comments.get(uid, []), counters, captions.get(uid, []),
                                                         behavior_rows.get(uid, []))
                elif kind == "video":
                    video_rows = VideoRows(
                        media=media.get(uid, []), video=videos.get(uid), scenes=scenes.get(uid, []),
                        transcripts=transcripts.get(uid, []), captions=captions.get(uid, []),
                        attributes=attributes.get(uid, []), frames=frames.get(uid, []), comments=comments.get(uid, []),
                        behavior=behavior_rows.get(uid, []),
                    )
                    records, reason, detail = self.videos.build(
                        item, video_rows, lambda cs, field: self._top_comments(cs, counters, field), counters)
                else:
                    records, reason, detail = [], "not_image", f"media_kind {kind!r} (neither image nor video)"
            except MissingValue as exc:
                errors.append(RecordFailure(uid, ErrorClass.INVALID, "MissingValue", f"{uid}: {exc}"))
                continue
            except InvalidRecord as exc:
                errors.append(RecordFailure(uid, ErrorClass.INVALID, exc.error_type, str(exc)))
                continue
            if reason:
                dropped.append({"stage": self.name, "table": "items", "uid": uid, "record_id": uid,
                                "reason": reason, "detail": detail})
                continue
            for rec in records:
                check_record(rec)  # an invalid record here is a bug: stop loudly
                counters[rec["task"]] += 1
            rows.extend(records)
        where = f"{self.name} shard {shard.shard_id}: "
        out = {"instructions": schemas.get("instructions").from_rows(rows, where=where),
               "scene_behavior": schemas.get("scene_behavior").from_rows(behavior, where=where)}
        return StageResult(tables=out, records_in=len(items), dropped=dropped, errors=errors, counters=dict(counters))

    @staticmethod
    def _rows(shard: ShardInput, dataset: str, columns: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Rows of one input, only the columns used (``raw`` and unused timestamps cost time to convert)."""
        table = shard.tables.get(dataset)
        if table is None:
            return []
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        return table.to_pylist()

    # ------------------------------------------------------------------ one item

    def _item(self, item: dict[str, Any], media: list[dict[str, Any]], attributes: list[dict[str, Any]],
              comments: list[dict[str, Any]], counters: dict[str, int], captions: Sequence[dict[str, Any]] = (),
              behavior: Sequence[dict[str, Any]] = ()) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """(records, None, None) for an eligible image item, else ([], reason, detail).

        The platform templates take an item of their platform that has a score; any other item
        (another platform, or no score: the published BLIFT corpus) takes the generic templates
        when ``fallback_generic`` is on, which state whatever behavior it has."""
        uid = item["uid"]
        own = item.get("platform") == self.platform
        if not own and not self.config.fallback_generic:
            return [], "other_platform", f"platform {item.get('platform')!r}; image templates are for {self.platform!r}"
        images = sorted(
            (m for m in media if m.get("status") == "ok" and m.get("path")
             and str(m.get("mime") or "").startswith("image/")),
            key=lambda m: m["index"],
        )
        if not images:
            statuses = ", ".join(sorted({f"{m.get('status')}:{m.get('reason') or m.get('mime')}" for m in media}))
            return [], "no_media", f"no downloaded image ({statuses or 'no media rows'})"
        image = images[0]
        attrs = next((a for a in attributes if a.get("media_index") == image["index"] and a.get("scene") is None), None)
        if attrs is None:
            return [], "no_attributes", f"no attributes row for media index {image['index']}"
        generic = not own or item.get("score") is None
        if generic and not self.config.fallback_generic:
            return [], "no_score", "the item has no score"
        top, usable = self._top_comments(comments, counters)
        values = named_values(item, behavior)
        if generic:
            if not values and not top:
                return [], "no_behavior", "no behavior value and no usable top-level comment"
        elif usable < self.config.min_comments:
            return [], "few_comments", f"{usable} usable top-level comment(s) < min_comments {self.config.min_comments}"
        if len(images) > 1:
            counters["gallery_images_unused"] += len(images) - 1

        shown = {**attrs, "width": attrs.get("width") or image.get("width"),
                 "height": attrs.get("height") or image.get("height")}
        caption = next((c for c in captions if c.get("media_index") == image["index"] and c.get("scene") is None), None)
        if caption is not None:
            shown.update(caption=caption.get("caption"), keywords=caption.get("keywords"))
            counters["image_captions_used"] += 1
        description = describe_image(shown) or None
        if generic:
            context: dict[str, Any] = {**source_context(item), "image_description": description}
            templates = self.generic_templates
            counters["generic_records"] += 1
        else:
            context = {"subreddit": subreddit_name(item.get("community")), "title": tidy(item.get("title")) or None,
                       "image_description": description}
            templates = self.templates
        base = {
            "uid": uid,
            "platform": item["platform"],
            "media_kind": "image",
            "media": [image["path"]],
            "split": split_of(uid, self.config.split_validation, self.config.split_test),
            "collected_at": item["collected_at"],
        }
        records = []
        for task in self.config.tasks:
            template = templates[task]
            named: list[dict[str, Any]] | None = None
            if task == "behavior":
                if generic:
                    vals, targets = generic_values(item, values, top, template)
                else:
                    vals, targets = self._behavior_values(item, top, template)
                vals.update(context)
                named = [v.target() for v in values]
            else:
                vals, targets = dict(context), None
            records.append({"id": f"{uid}:{task}", "task": task, "template": template.name,
                            "template_version": template.version, "conversations": template.render(vals),
                            "targets": targets, "behavior": named, **base})
        return records, None, None

    def _top_comments(self, comments: list[dict[str, Any]], counters: dict[str, int], field: str = "score"
                      ) -> tuple[list[tuple[dict[str, Any], str]], int]:
        """Top-k usable top-level comments as (row, shown text), and how many usable ones were seen.

        Ranked by ``field`` (``score`` on Reddit, ``like_count`` on YouTube), highest first.
        Stickied / pinned and moderator comments are skipped. Comments are ranked first and tidied
        lazily: the scan stops once both ``top_k_comments`` and ``min_comments`` are met, so the
        count is exact whenever it is below ``min_comments``.
        """
        candidates = []
        skipped = "comments_skipped_moderator" if field == "score" else "comments_skipped_pinned"
        for c in comments:
            if c.get("depth") != 0:
                continue
            if c.get("stickied") or (c.get("distinguished") or "") in _MOD_DISTINCTIONS:
                counters[skipped] += 1
                continue
            candidates.append(c)
        candidates.sort(key=lambda c: _score_key(c, field))
        need = max(self.config.top_k_comments, self.config.min_comments)
        top: list[tuple[dict[str, Any], str]] = []
        usable = 0
        for c in candidates:
            text = tidy(c.get("text"))
            if not text or text in _GONE:
                continue
            usable += 1
            if len(top) < self.config.top_k_comments:
                shown = shorten(text, self.config.max_comment_chars)
                counters["comments_shortened"] += shown != text
                top.append((c, shown))
            if usable >= need:
                break
        return top, usable

    def _behavior_values(self, item: dict[str, Any], top: list[tuple[dict[str, Any], str]], template: Template
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
        ratio = item.get("upvote_ratio")
        values = {
            "score": format_count(item["score"]),
            "upvote_ratio": format_ratio(ratio) if ratio is not None else None,
            "num_comments": format_count(item["num_comments"]) if item.get("num_comments") is not None else None,
            "comments": "\n".join(template.render_comment(i, text, c.get("score"))
                                  for i, (c, text) in enumerate(top, start=1)),
            "num_listed": str(len(top)),
        }
        targets = {
            "score": item["score"],
            "upvote_ratio": ratio,
            "num_comments": item.get("num_comments"),
            "view_count": None,
            "like_count": None,
            "like_ratio": None,
            "comments": [text for _, text in top],
            "comment_scores": [c.get("score") for c, _ in top],
        }
        return values, targets


def generic_values(item: dict[str, Any], values: list[NamedValue], top: list[tuple[dict[str, Any], str]],
                   template: Template) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values and typed targets of a generic behavior record: every known value, top comments."""
    lines = [template.render_comment(i, text, c.get("score") if c.get("score") is not None else c.get("like_count"))
             for i, (c, text) in enumerate(top, start=1)]
    vals = {
        "asked": asked_for(values, bool(top)),
        "behavior": behavior_lines(values) or None,
        "comments_block": "Top comments:\n" + "\n".join(lines) if lines else None,
        "num_listed": str(len(top)),
    }
    return vals, item_targets(item, top)


def item_targets(item: dict[str, Any], top: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """The typed targets a generic record can state from the items columns (null when unknown)."""
    views, likes = item.get("view_count"), item.get("like_count")
    comment_count = item.get("num_comments") if item.get("num_comments") is not None else item.get("comment_count")
    return {
        "score": item.get("score"), "upvote_ratio": item.get("upvote_ratio"), "num_comments": comment_count,
        "view_count": views, "like_count": likes,
        "like_ratio": likes / views if views and likes is not None and views > 0 else None,
        "comments": [text for _, text in top],
        "comment_scores": [c.get("score") if c.get("score") is not None else c.get("like_count") for c, _ in top],
    }


def _has_rows(shard: ShardInput, dataset: str) -> bool:
    """Whether an input holds rows (one the pipeline does not produce is absent or empty)."""
    table = shard.tables.get(dataset)
    return table is not None and table.num_rows > 0


def _by_uid(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["uid"]].append(row)
    return out
