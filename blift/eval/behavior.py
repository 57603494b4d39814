"""Behavior prediction on released test records: generate, parse, compare with ``targets``.

For every behavior record the model answers the record's own question (greedy,
:func:`blift.eval.scoring.generate`); :func:`blift.eval.parse.parse_behavior` reads the numbers and
comments out of the answer, and they are compared with the record's typed ``targets``:

- **Counts** (``score`` = upvotes, ``num_comments``, ``view_count``, ``like_count``): MAE, RMSE, R²
  and Pearson on a signed log1p scale (``sign(x)·log(1+|x|)``: counts span six orders of
  magnitude, and Reddit scores can be negative), suffixed ``_log``; Spearman (scale-free); and
  ``mae`` in raw units.
- **Ratios** (``upvote_ratio``, ``like_ratio``, fractions in 0..1): MAE, RMSE, R², Spearman, Pearson.
- **Scene replay**: the parsed "Scene k" value pairs with ``targets.scene_replay[k-1]`` (scenes
  the heatmap does not cover are null there and not scored); all scenes of all records are
  pooled into one RMSE and Pearson, and Pearson is also averaged over records where it is
  defined (``per_record_pearson``). A scene the answer leaves out counts as missing.
  ``most_replayed_top1`` is the share of records whose first predicted most replayed scene is
  the true one (0-based on both sides, see :mod:`blift.eval.parse`).
- **Comments** (``comments``): ``perplexity`` is the perplexity of the real comments under
  teacher forcing: the reference answer is scored as the continuation of the prompt and only the
  tokens of its comment lines count (the numbers before them are context, the closing ``</s>``
  is left out); pooled over records, ``exp(Σ NLL / Σ tokens)``. ``answer_perplexity`` is the
  same over the whole reference answer. ``similarity`` is
  :func:`blift.eval.metrics.comment_similarity` (ROUGE-L of each generated comment against its
  best-matching real one, averaged) per record, then averaged over records; an answer without
  parsable comments scores 0 and is counted in ``n_missing``.

Unparsed values are never dropped silently: every regression report carries ``n`` (records with a
target) and ``n_missing`` (of those, how many answers gave no value), and ``unparsed`` counts
answers from which nothing at all could be read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from blift.eval import metrics
from blift.eval.parse import parse_behavior
from blift.eval.scoring import (
    ContinuationScore,
    generate,
    map_batches,
    score_continuations,
    tokenizer_of,
)
from blift.train.prompt import ASSISTANT, EOS, last_answer

log = logging.getLogger("blift.eval.behavior")

COUNT_FIELDS = ("score", "num_comments", "view_count", "like_count")
RATIO_FIELDS = ("upvote_ratio", "like_ratio")
#: The comment header line of the behavior templates ("Top comments, ranked by score:").
_COMMENTS_HEADER = re.compile(r"(?im)^top comments[^\n]*:[ \t]*\n")


@dataclass
class BehaviorPrediction:
    """What the model said about one record, and what it should have said."""

    id: str
    platform: str | None
    generated: str
    parsed: dict[str, Any]
    targets: dict[str, Any]
    answer_nll: float | None = None        # teacher-forced NLL of the reference answer
    answer_tokens: int = 0
    comment_nll: float | None = None       # the part of answer_nll on the comment lines
    comment_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "platform": self.platform, "generated": self.generated, "parsed": self.parsed,
                "targets": self.targets, "answer_nll": self.answer_nll, "answer_tokens": self.answer_tokens,
                "comment_nll": self.comment_nll, "comment_tokens": self.comment_tokens, "notes": self.notes}


# --------------------------------------------------------------------------- comment tokens
def comments_start(answer: str) -> int | None:
    """Character offset in a reference answer where its comment lines begin (None: no header)."""
    m = _COMMENTS_HEADER.search(answer)
    return m.end() if m else None


def comment_token_mask(tokenizer: Any, answer: str, score: ContinuationScore) -> list[bool] | None:
    """Which of the scored continuation tokens lie on the comment lines of ``answer``.

    The collator tokenizes the whole rendered text; the continuation is its tail
    ``answer + </s>`` after ``"ASSISTANT: "``. Re-tokenizing that tail with offsets gives each
    token's characters; the result is trusted only if its last ``n`` ids are exactly the scored
    ids (otherwise None: the record's comment perplexity is skipped and noted)."""
    start = comments_start(answer)
    if start is None:
        return None
    head = f"{ASSISTANT}: "
    enc = tokenizer(head + answer + EOS, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n = score.n_tokens
    if n == 0 or len(ids) < n or tuple(ids[-n:]) != score.token_ids:
        return None
    end = len(head) + len(answer)  # the closing </s> is not part of any comment
    return [len(head) + start <= a < end for a, _ in offsets[-n:]]


# --------------------------------------------------------------------------- metrics
def _regression(y_true: list[Any], y_pred: list[Any], *, log_scale: bool) -> dict[str, Any]:
    """regression_report of one quantity (None = unparsed, counted in ``n_missing``); counts on
    the signed-log1p scale (keys ``mae_log``, ``rmse_log``, ``r2_log``, ``pearson_log``) plus the
    MAE in raw units (``mae``)."""
    if not log_scale:
        return metrics.regression_report(y_true, y_pred)
    report = metrics.regression_report(y_true, y_pred, log1p=True)
    out = {f"{k}_log" if k in ("mae", "rmse", "r2", "pearson") else k: v for k, v in report.items()}
    out["mae"] = metrics.mae(y_true, y_pred)
    return out


def _scene_metrics(preds: Sequence[BehaviorPrediction]) -> dict[str, Any] | None:
    """Pooled per-scene replay RMSE/Pearson, mean per-record Pearson, most-replayed top-1."""
    with_replay = [p for p in preds if any(v is not None for v in (p.targets.get("scene_replay") or []))]
    out: dict[str, Any] = {}
    if with_replay:
        truth = [p.targets["scene_replay"] for p in with_replay]
        guess = [p.parsed.get("scene_replay") for p in with_replay]
        pooled = metrics.regression_report(*metrics.pool_sequences(truth, guess))
        per_record = [metrics.pearson(*metrics.pool_sequences([t], [g])) for t, g in zip(truth, guess)]
        out.update({"rmse": pooled["rmse"], "pearson": pooled["pearson"], "mae": pooled["mae"],
                    "per_record_pearson": metrics.mean(per_record), "n_records": len(with_replay),
                    "n": pooled["n"], "n_missing": pooled["n_missing"]})
    ranked = [p for p in preds if p.targets.get("most_replayed_scenes")]
    if ranked:
        hits = sum(1 for p in ranked if (p.parsed.get("most_replayed_scenes") or [None])[0]
                   == p.targets["most_replayed_scenes"][0])
        out["most_replayed_top1"] = hits / len(ranked)
        out["most_replayed_n"] = len(ranked)
    return out or None


def _comment_metrics(preds: Sequence[BehaviorPrediction]) -> dict[str, Any] | None:
    with_comments = [p for p in preds if p.targets.get("comments")]
    if not with_comments:
        return None
    scored = [p for p in with_comments if p.comment_nll is not None and p.comment_tokens]
    nll = sum(p.comment_nll for p in scored)  # type: ignore[misc]
    tokens = sum(p.comment_tokens for p in scored)
    sims = [metrics.comment_similarity(p.parsed.get("comments"), p.targets["comments"]) for p in with_comments]
    missing = sum(1 for p in with_comments if not p.parsed.get("comments"))
    return {"perplexity": metrics.perplexity(nll, tokens), "perplexity_records": len(scored),
            "perplexity_tokens": tokens, "similarity": metrics.mean(sims), "n": len(with_comments),
            "n_missing": missing}


def behavior_metrics(preds: Sequence[BehaviorPrediction]) -> dict[str, Any]:
    """Metrics per target over predictions (pure: no model), see the module docstring."""
    out: dict[str, Any] = {"n_records": len(preds)}
    for name in COUNT_FIELDS + RATIO_FIELDS:
        rows = [p for p in preds if p.targets.get(name) is not None]
        if rows:
            out[name] = _regression([p.targets[name] for p in rows], [p.parsed.get(name) for p in rows],
                                    log_scale=name in COUNT_FIELDS)
    scenes = _scene_metrics(preds)
    if scenes:
        out["scene_replay"] = scenes
    comments = _comment_metrics(preds)
    if comments:
        out["comments"] = comments
    answered = [p for p in preds if p.answer_nll is not None and p.answer_tokens]
    if answered:
        out["answer_perplexity"] = metrics.perplexity(sum(p.answer_nll for p in answered),  # type: ignore[misc]
                                                      sum(p.answer_tokens for p in answered))
    out["unparsed"] = sum(1 for p in preds if not _anything_parsed(p.parsed))
    return out


def _anything_parsed(parsed: dict[str, Any]) -> bool:
    return any(v not in (None, [], "") for v in parsed.values())


# --------------------------------------------------------------------------- model side
def predict_behavior(model: Any, collator: Any, examples: Sequence[Any], *, max_new_tokens: int = 256,
                     batch_size: int = 4, tokenizer: Any = None
                     ) -> tuple[list[BehaviorPrediction], list[tuple[str, str]]]:
    """Generate and parse an answer for every behavior example, and score its reference answer
    (answer and comment NLL). Examples need ``targets`` and a conversation ending with the
    reference gpt turn. Returns the predictions and ``(record id, reason)`` of the records the
    collator refused (they are not scored: their absence is reported, not counted as a miss)."""
    tok = tokenizer_of(collator, tokenizer)
    done = 0

    def run(chunk: Sequence[Any]) -> list[BehaviorPrediction]:
        nonlocal done
        generated = generate(model, collator, chunk, max_new_tokens=max_new_tokens, batch_size=len(chunk),
                             tokenizer=tok)
        references = [last_answer(e.conversations) for e in chunk]
        scores = score_continuations(model, collator, chunk, references, batch_size=len(chunk))
        out = []
        for example, text, ref, score in zip(chunk, generated, references, scores):
            pred = BehaviorPrediction(example.id, example.platform, text, parse_behavior(text),
                                      dict(example.targets or {}), answer_nll=score.nll, answer_tokens=score.n_tokens)
            if pred.targets.get("comments"):
                mask = comment_token_mask(tok, ref, score)
                if mask is None:
                    pred.notes.append("comment tokens not located in the reference answer")
                else:
                    pred.comment_nll = -sum(lp for lp, m in zip(score.token_logprobs, mask) if m)
                    pred.comment_tokens = sum(mask)
            out.append(pred)
        done += len(chunk)
        log.info("behavior: %d/%d records", done, len(examples))
        return out

    results, failures = map_batches(run, list(examples), batch_size)
    for index, reason in failures:
        log.warning("behavior record %s skipped: %s", examples[index].id, reason)
    return [p for p in results if p is not None], [(examples[i].id, reason) for i, reason in failures]
