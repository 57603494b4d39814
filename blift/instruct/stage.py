"""The ``instruct`` stage: Reddit image posts to instruction records (behavior + content control).

Per eligible item it writes up to two records, in the order of ``tasks``:

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
* **Caption.** Used only when a captioning stage filled it (see :mod:`blift.instruct.verbalize`).

Drop reasons (rows of ``dropped``, table ``items``): ``not_image``, ``other_platform``,
``no_media``, ``no_attributes``, ``no_score``, ``few_comments``. A record whose non-optional
template value is missing (e.g. no title) becomes an ``invalid`` error row.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from blift import schemas
from blift.errors import ConfigError, ErrorClass
from blift.ids import split_of
from blift.instruct.templates import MissingValue, Template, load_template, template_path
from blift.instruct.validate import check_record
from blift.instruct.verbalize import describe_image, format_count, format_ratio, shorten, tidy
from blift.stage import RecordFailure, ShardInput, Stage, StageConfig, StageResult

#: Values each kind of record provides to its template. A content record gets no behavior, so
#: a content template that asks for a score fails at setup, naming its file.
CONTENT_VALUES = frozenset({"subreddit", "title", "image_description"})
BEHAVIOR_VALUES = CONTENT_VALUES | {"score", "upvote_ratio", "num_comments", "comments", "num_listed"}
IMAGE_KINDS = ("image", "gallery")
_MOD_DISTINCTIONS = ("moderator", "admin", "special")
_ITEM_COLUMNS = ("uid", "platform", "media_kind", "title", "community", "score", "upvote_ratio", "num_comments",
                 "collected_at")
_MEDIA_COLUMNS = ("uid", "index", "status", "reason", "path", "mime", "width", "height")
_COMMENT_COLUMNS = ("uid", "comment_id", "depth", "text", "score", "stickied", "distinguished")
_GONE = {"[deleted]", "[removed]"}


class InstructConfig(StageConfig):
    behavior_template: str = "reddit_image_behavior"
    content_template: str = "reddit_image_content"
    top_k_comments: int = Field(5, ge=1, description="comments listed in a behavior answer")
    min_comments: int = Field(1, ge=1, description="usable top-level comments an item needs (both tasks)")
    max_comment_chars: int = Field(500, ge=20, description="longer comments are cut at a word with …")
    split_validation: float = Field(0.05, ge=0.0, le=1.0)
    split_test: float = Field(0.05, ge=0.0, le=1.0)
    tasks: list[Literal["behavior", "content"]] = Field(default_factory=lambda: ["behavior", "content"])

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


def _subreddit(community: Any) -> str | None:
    name = tidy(community)
    for prefix in ("/r/", "r/"):
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
    return name or None


def _score_key(comment: dict[str, Any]) -> tuple[int, int, str]:
    score = comment.get("score")
    return (score is None, -(score or 0), str(comment["comment_id"]))


class InstructStage(Stage):
    name = "instruct"
    version = 1
    inputs = {"items_clean": "items", "comments_clean": "comments", "media": "media", "attributes": "attributes"}
    outputs = {"instructions": "instructions"}
    resources = "cpu"
    Config = InstructConfig

    config: InstructConfig

    @classmethod
    def fingerprint(cls, config: StageConfig) -> dict[str, Any]:
        """The templates' bytes: editing a template redoes the records it produced."""
        return {ref: hashlib.sha256(template_path(ref)[0].read_bytes()).hexdigest()[:16]
                for ref in (config.behavior_template, config.content_template)}

    def setup(self) -> None:
        """Load and cross-check the templates once per worker (a bad template fails here, early)."""
        self.templates: dict[str, Template] = {}
        for task, ref, provided in (
            ("behavior", self.config.behavior_template, BEHAVIOR_VALUES),
            ("content", self.config.content_template, CONTENT_VALUES),
        ):
            if task not in self.config.tasks:
                continue
            template = load_template(ref)
            if template.task != task:
                raise ConfigError(f"{template.path}: is a {template.task!r} template, configured as {task}_template")
            if template.media_kind != "image":
                raise ConfigError(f"{template.path}: media_kind {template.media_kind!r}; this stage writes image records")
            template.check_provides(provided)
            self.templates[task] = template
        platforms = {t.platform for t in self.templates.values()}
        if len(platforms) != 1:
            raise ConfigError(f"templates are for different platforms: {sorted(platforms)}")
        self.platform = platforms.pop()

    def describe(self) -> str:
        names = ", ".join(f"{t.name} v{t.version}" for t in getattr(self, "templates", {}).values())
        return f"{self.name} ({names or 'templates not loaded'})"

    # ------------------------------------------------------------------ shard

    def process(self, shard: ShardInput) -> StageResult:
        if not hasattr(self, "templates"):
            self.setup()
        items = self._rows(shard, "items_clean", _ITEM_COLUMNS)
        media = _by_uid(self._rows(shard, "media", _MEDIA_COLUMNS))
        attributes = _by_uid(self._rows(shard, "attributes"))
        comments = _by_uid(self._rows(shard, "comments_clean", _COMMENT_COLUMNS))
        rows: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        errors: list[RecordFailure] = []
        counters: dict[str, int] = defaultdict(int)
        for item in items:
            uid = item["uid"]
            try:
                records, reason, detail = self._item(item, media.get(uid, []), attributes.get(uid, []),
                                                     comments.get(uid, []), counters)
            except MissingValue as exc:
                errors.append(RecordFailure(uid, ErrorClass.INVALID, "MissingValue", f"{uid}: {exc}"))
                continue
            if reason:
                dropped.append({"stage": self.name, "table": "items", "uid": uid, "record_id": uid,
                                "reason": reason, "detail": detail})
                continue
            for rec in records:
                check_record(rec)  # an invalid record here is a bug: stop loudly
                counters[rec["task"]] += 1
            rows.extend(records)
        table = schemas.get("instructions").from_rows(rows, where=f"{self.name} shard {shard.shard_id}: ")
        return StageResult(tables={"instructions": table}, records_in=len(items), dropped=dropped,
                           errors=errors, counters=dict(counters))

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
              comments: list[dict[str, Any]], counters: dict[str, int]
              ) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """(records, None, None) for an eligible item, else ([], reason, detail)."""
        uid = item["uid"]
        if item.get("platform") != self.platform:
            return [], "other_platform", f"platform {item.get('platform')!r}; templates are for {self.platform!r}"
        if item.get("media_kind") not in IMAGE_KINDS:
            return [], "not_image", f"media_kind {item.get('media_kind')!r}"
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
        if item.get("score") is None:
            return [], "no_score", "the item has no score"
        top, usable = self._top_comments(comments, counters)
        if usable < self.config.min_comments:
            return [], "few_comments", f"{usable} usable top-level comment(s) < min_comments {self.config.min_comments}"
        if len(images) > 1:
            counters["gallery_images_unused"] += len(images) - 1

        description = describe_image({**attrs, "width": attrs.get("width") or image.get("width"),
                                      "height": attrs.get("height") or image.get("height")})
        context: dict[str, Any] = {
            "subreddit": _subreddit(item.get("community")),
            "title": tidy(item.get("title")) or None,
            "image_description": description or None,
        }
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
            template = self.templates[task]
            if task == "behavior":
                values, targets = self._behavior_values(item, top, template)
                values.update(context)
            else:
                values, targets = dict(context), None
            records.append({"id": f"{uid}:{task}", "task": task, "template": template.name,
                            "template_version": template.version, "conversations": template.render(values),
                            "targets": targets, **base})
        return records, None, None

    def _top_comments(self, comments: list[dict[str, Any]], counters: dict[str, int]
                      ) -> tuple[list[tuple[dict[str, Any], str]], int]:
        """Top-k usable top-level comments as (row, shown text), and how many usable ones were seen.

        Comments are ranked first and tidied lazily: the scan stops once both ``top_k_comments``
        and ``min_comments`` are met, so the count is exact whenever it is below ``min_comments``.
        """
        candidates = []
        for c in comments:
            if c.get("depth") != 0:
                continue
            if c.get("stickied") or (c.get("distinguished") or "") in _MOD_DISTINCTIONS:
                counters["comments_skipped_moderator"] += 1
                continue
            candidates.append(c)
        candidates.sort(key=_score_key)
        need = max(self.config.top_k_comments, self.config.min_comments)
        top, usable = [], 0
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


def _by_uid(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["uid"]].append(row)
    return out
