"""Evaluation metrics: plain functions of numbers and strings (numpy / scipy, no model downloads).

Missing values: every paired metric takes ``(y_true, y_pred)`` sequences that may hold ``None``
or NaN; a pair where either side is missing is left out (:func:`paired`). A metric that is
undefined on what is left (no pairs; fewer than two for a correlation; a constant side for a
correlation or R²) is ``nan``, never an exception or a warning. :func:`regression_report` counts
the predictions that were left out (``n_missing``) so a model that fails to answer is visible
instead of silently scored on its easy cases.

Formulas (``t`` true, ``p`` predicted, ``n`` pairs):

* ``mae``  = mean(|t - p|)
* ``rmse`` = sqrt(mean((t - p)^2))
* ``r2``   = 1 - sum((t - p)^2) / sum((t - mean(t))^2): the coefficient of determination of the
  predictions as they are (not the squared Pearson correlation; it is negative for predictions
  worse than always answering the mean, and ``nan`` when ``t`` is constant).
* ``pearson``  = cov(t, p) / (sd(t) sd(p))  (``scipy.stats.pearsonr``)
* ``spearman`` = Pearson correlation of the ranks, ties given their average rank
  (``scipy.stats.spearmanr``)
* ``perplexity`` = exp(nll_sum / n_tokens), natural log: the per-token perplexity of a text
  whose summed negative log-likelihood is ``nll_sum`` nats over ``n_tokens`` tokens. Pool texts
  by summing both before calling it (a token-weighted mean, as language-model perplexity is).
* ``exact_match`` / ``token_f1``: SQuAD v1.1 (lower case, punctuation and the articles a/an/the
  removed, whitespace collapsed; F1 over the bag of tokens, best over the references).
* ``text_similarity`` = ROUGE-L F1 (beta 1) on the same normalised tokens:
  LCS / len(a) and LCS / len(b) combined harmonically. Chosen over TF-IDF cosine because it
  needs no corpus statistics (a score does not change with the rest of the test set), rewards
  word order, and is checkable by hand.
"""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


# ------------------------------------------------------------------ numbers

def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def to_array(values: Iterable[Any]) -> np.ndarray:
    """A float array; ``None`` and anything not numeric become NaN."""
    return np.array([_as_float(v) for v in values], dtype=np.float64)


def paired(y_true: Iterable[Any], y_pred: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite, as two float arrays (inputs must be equally long)."""
    t, p = to_array(y_true), to_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}: they must be paired")
    keep = np.isfinite(t) & np.isfinite(p)
    return t[keep], p[keep]


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log(1 + |x|): log1p that also takes the negative scores of Reddit posts."""
    return np.sign(values) * np.log1p(np.abs(values))


def mae(y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    """Mean absolute error over the complete pairs."""
    t, p = paired(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else math.nan


def rmse(y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    """Root mean squared error over the complete pairs."""
    t, p = paired(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else math.nan


def r2(y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (``nan`` for < 2 pairs or constant truth)."""
    t, p = paired(y_true, y_pred)
    if t.size < 2:
        return math.nan
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return math.nan
    return 1.0 - float(np.sum((t - p) ** 2)) / ss_tot


def _correlation(fn: Any, y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    t, p = paired(y_true, y_pred)
    if t.size < 2 or np.all(t == t[0]) or np.all(p == p[0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(t, p)[0])
    return value if math.isfinite(value) else math.nan


def pearson(y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    """Pearson's r over the complete pairs (``nan`` when undefined)."""
    return _correlation(stats.pearsonr, y_true, y_pred)


def spearman(y_true: Iterable[Any], y_pred: Iterable[Any]) -> float:
    """Spearman's rho (average ranks for ties) over the complete pairs (``nan`` when undefined)."""
    return _correlation(stats.spearmanr, y_true, y_pred)


def regression_report(y_true: Iterable[Any], y_pred: Iterable[Any], *, log1p: bool = False) -> dict[str, Any]:
    """MAE, RMSE, R², Spearman and Pearson of one predicted quantity, with its coverage.

    Records without a true value are not part of the evaluation (``n_no_target``). Records with a
    true value but no usable prediction (unparsed: ``None``/NaN) are counted in ``n_missing`` and
    left out of the metrics; ``coverage`` = n / (n + n_missing). With ``log1p`` both sides go
    through :func:`signed_log1p` first (counts such as upvotes and views span orders of magnitude;
    Spearman is unchanged by it).
    """
    t, p = to_array(y_true), to_array(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values, y_pred {p.size}: they must be paired")
    has_target = np.isfinite(t)
    has_pred = np.isfinite(p)
    n = int(np.sum(has_target & has_pred))
    n_missing = int(np.sum(has_target & ~has_pred))
    if log1p:
        t, p = signed_log1p(t), signed_log1p(p)
    return {
        "mae": mae(t, p),
        "rmse": rmse(t, p),
        "r2": r2(t, p),
        "spearman": spearman(t, p),
        "pearson": pearson(t, p),
        "n": n,
        "n_missing": n_missing,
        "n_no_target": int(np.sum(~has_target)),
        "coverage": n / (n + n_missing) if n + n_missing else math.nan,
    }


def pool_sequences(true_seqs: Sequence[Sequence[Any] | None], pred_seqs: Sequence[Sequence[Any] | None]
                   ) -> tuple[list[float], list[float]]:
    """Flatten per-record sequences (e.g. per-scene replay values) into pooled, position-aligned
    pairs. Position i of record r's prediction pairs with position i of its truth; a prediction
    that is shorter, ``None`` or has ``None`` at i gives NaN there (counted as missing by
    :func:`regression_report`); extra predicted positions are ignored; a ``None`` truth sequence
    contributes nothing."""
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"{len(true_seqs)} true sequences, {len(pred_seqs)} predicted: they must be paired")
    t_out: list[float] = []
    p_out: list[float] = []
    for truth, pred in zip(true_seqs, pred_seqs):
        if truth is None:
            continue
        pred = list(pred or [])
        for i, value in enumerate(truth):
            t_out.append(_as_float(value))
            p_out.append(_as_float(pred[i]) if i < len(pred) else math.nan)
    return t_out, p_out


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(nll_sum / n_tokens) with natural-log NLL; ``nan`` for no tokens."""
    if n_tokens <= 0 or not math.isfinite(nll_sum):
        return math.nan
    try:
        return math.exp(nll_sum / n_tokens)
    except OverflowError:
        return math.inf


# ------------------------------------------------------------------ text

def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in str(text).lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _refs(refs: str | Sequence[str] | None) -> list[str]:
    if refs is None:
        return []
    if isinstance(refs, str):
        return [refs]
    return [str(r) for r in refs if r is not None]


def exact_match(pred: str, refs: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    p = normalize_answer(pred or "")
    return float(any(p == normalize_answer(r) for r in _refs(refs)))


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)  # both empty: 1, one empty: 0 (SQuAD 2.0 convention)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, ref: str | Sequence[str]) -> float:
    """SQuAD token F1 between prediction and reference (the best over several references)."""
    tokens = normalize_answer(pred or "").split()
    scores = [_f1(tokens, normalize_answer(r).split()) for r in _refs(ref)]
    return max(scores) if scores else math.nan


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def text_similarity(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts on SQuAD-normalised tokens (0..1; 0 when either is empty)."""
    ta, tb = normalize_answer(a or "").split(), normalize_answer(b or "").split()
    lcs = lcs_length(ta, tb)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(ta), lcs / len(tb)
    return 2 * precision * recall / (precision + recall)


def comment_similarity(generated: Sequence[str] | None, references: Sequence[str] | None) -> float:
    """How close generated comments are to the real ones: the mean, over generated comments, of
    each one's best :func:`text_similarity` against any real comment. No generated comments (the
    model did not answer) scores 0.0; no real comments is ``nan`` (nothing to compare with)."""
    refs = [r for r in (references or []) if r]
    if not refs:
        return math.nan
    gens = [g for g in (generated or []) if g]
    if not gens:
        return 0.0
    return float(np.mean([max(text_similarity(g, r) for r in refs) for g in gens]))


def asr_words(text: str) -> list[str]:
    """Lower case, hyphens split, punctuation but apostrophes dropped: the words WER counts."""
    return re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " ")).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance over the reference length (ASR checks)."""
    ref, hyp = asr_words(reference), asr_words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))


def mean(values: Iterable[Any]) -> float:
    """Mean of the finite values (``nan`` without any)."""
    arr = to_array(values)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan
