"""Content-understanding tasks: multiple choice by answer-option likelihood, free text by generation.

A task file (:func:`blift.eval.tasks.load_task`) holds items with media, a question and either
``options`` (multiple choice) or reference answers (free text). Each item becomes a one-turn
conversation ``<media>\\n<question>`` (plus the options, one per line, for multiple choice) and
goes through the same collator as training, so prompts match the training template.

**Multiple choice** is scored zero-shot the way the paper scored emotion and memorability: every
option is teacher-forced as the assistant's whole answer (with its closing ``</s>``: the option is
the complete answer, not the start of a longer one) and the option with the highest summed
log-probability is the prediction. That summed score is the **primary** metric (``accuracy``):
it is the model's probability of giving exactly that answer. Summed log-probability favours short
options, so ``accuracy_norm`` (per-token mean log-probability, the length-normalised variant
used by lm-eval-harness's ``acc_norm``) is reported beside it; compare checkpoints on the same
one. Items without a gold answer are scored but not counted (``n_unlabeled``).

**Free text**: greedy generation, then SQuAD exact match and token F1 against the references
(best over several).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blift.eval import metrics
from blift.eval.scoring import generate, map_batches, score_continuations
from blift.train.data import Example, even_indices

log = logging.getLogger("blift.eval.content")

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class TaskOutput:
    """Metrics of one task on one checkpoint, and one prediction row per item."""

    name: str
    kind: str                                   # "multiple_choice" | "free_text"
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


def question_text(item: Any) -> str:
    """The human turn of an item: its question, and for multiple choice its options, one a line."""
    text = str(item.question).strip()
    if item.options:
        text += "\nOptions:\n" + "\n".join(f"- {o}" for o in item.options)
        text += "\nAnswer with one of the options."
    return text


def task_example(item: Any, *, num_frames: int = 8) -> Example:
    """An item as a collator :class:`Example` (no gpt turn: the answer is scored or generated)."""
    if item.frames is not None:
        frames = np.asarray(item.frames)
        kind, images, frames = "video", [], frames[even_indices(len(frames), num_frames)]
    elif item.image is not None:
        kind, images, frames = "image", [item.image], None
    else:
        kind, images, frames = "none", [], None
    token = "<image>\n" if kind != "none" else ""
    return Example(id=str(item.id), task="content", media_kind=kind,
                   conversations=[{"from": "human", "value": token + question_text(item)}],
                   images=images, frames=frames, targets=None)


def gold_index(item: Any) -> int | None:
    """The index of the correct option: an int answer as is; a string answer matched to an option
    (exactly, then after SQuAD normalisation, then as a letter "B" / "(B)"); None without an answer.
    A string that matches nothing raises ValueError naming the item."""
    answer, options = item.answer, list(item.options or [])
    if answer is None:
        return None
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        if not 0 <= int(answer) < len(options):
            raise ValueError(f"item {item.id}: answer index {answer} outside the {len(options)} options")
        return int(answer)
    text = str(answer).strip()
    if text in options:
        return options.index(text)
    normalised = [metrics.normalize_answer(o) for o in options]
    if metrics.normalize_answer(text) in normalised:
        return normalised.index(metrics.normalize_answer(text))
    letter = text.strip("()").upper()
    if len(letter) == 1 and letter in LETTERS[: len(options)]:
        return LETTERS.index(letter)
    raise ValueError(f"item {item.id}: answer {answer!r} is none of the options {options}")


def multiple_choice(model: Any, collator: Any, name: str, items: Sequence[Any], *, batch_size: int = 4,
                    num_frames: int = 8) -> TaskOutput:
    """Answer-option likelihood over every option of every item (see the module docstring)."""
    pairs: list[tuple[int, Example, str]] = []   # (item index, its example, one option)
    for i, item in enumerate(items):
        example = task_example(item, num_frames=num_frames)
        pairs.extend((i, example, str(option)) for option in item.options)

    def run(chunk: Sequence[tuple[int, Example, str]]) -> list[Any]:
        return score_continuations(model, collator, [e for _, e, _ in chunk], [o for _, _, o in chunk],
                                   batch_size=len(chunk))

    scores, failures = map_batches(run, pairs, batch_size)
    summed: list[list[float]] = [[] for _ in items]
    mean: list[list[float]] = [[] for _ in items]
    for (i, _, _), score in zip(pairs, scores):
        summed[i].append(score.logprob if score is not None else math.nan)
        mean[i].append(score.mean_logprob if score is not None else math.nan)
    failed = {pairs[k][0]: reason for k, reason in failures}
    rows: list[dict[str, Any]] = []
    hits = hits_norm = labelled = 0
    for i, item in enumerate(items):
        if i in failed:
            rows.append({"id": str(item.id), "skipped": failed[i]})
            continue
        pick, pick_norm = int(np.argmax(summed[i])), int(np.argmax(mean[i]))
        gold = gold_index(item)
        if gold is not None:
            labelled += 1
            hits += pick == gold
            hits_norm += pick_norm == gold
        rows.append({"id": str(item.id), "prediction": item.options[pick], "prediction_index": pick,
                     "prediction_norm_index": pick_norm, "gold_index": gold,
                     "logprobs": summed[i], "mean_logprobs": mean[i]})
    result: dict[str, Any] = {
        "accuracy": hits / labelled if labelled else math.nan,
        "accuracy_norm": hits_norm / labelled if labelled else math.nan,
        "n": labelled, "n_unlabeled": len(items) - len(failed) - labelled}
    if failed:
        result["skipped"] = len(failed)
        log.warning("task %s: %d item(s) skipped, e.g. %s", name, len(failed), next(iter(failed.values())))
    log.info("task %s: multiple choice, %d items, accuracy %.3f", name, len(items), result["accuracy"])
    return TaskOutput(name, "multiple_choice", result, rows)


def references(item: Any) -> list[str]:
    refs = [str(r) for r in (item.references or []) if r is not None]
    if not refs and item.answer is not None:
        refs = [str(item.answer)]
    return refs


def free_text(model: Any, collator: Any, name: str, items: Sequence[Any], *, max_new_tokens: int = 256,
              batch_size: int = 4, num_frames: int = 8) -> TaskOutput:
    """Generate an answer per item; SQuAD exact match and token F1 against its references."""
    examples = [task_example(item, num_frames=num_frames) for item in items]

    def run(chunk: Sequence[Example]) -> list[str]:
        return generate(model, collator, chunk, max_new_tokens=max_new_tokens, batch_size=len(chunk))

    answers, failures = map_batches(run, examples, batch_size)
    failed = dict(failures)
    rows: list[dict[str, Any]] = []
    em: list[float] = []
    f1: list[float] = []
    for i, (item, answer) in enumerate(zip(items, answers)):
        if answer is None:
            rows.append({"id": str(item.id), "skipped": failed[i]})
            continue
        refs = references(item)
        row: dict[str, Any] = {"id": str(item.id), "prediction": answer, "references": refs}
        if refs:
            row["exact_match"] = metrics.exact_match(answer, refs)
            row["f1"] = metrics.token_f1(answer, refs)
            em.append(row["exact_match"])
            f1.append(row["f1"])
        rows.append(row)
    result: dict[str, Any] = {"exact_match": metrics.mean(em), "f1": metrics.mean(f1), "n": len(em),
                              "n_unlabeled": len(items) - len(failed) - len(em)}
    if failed:
        result["skipped"] = len(failed)
        log.warning("task %s: %d item(s) skipped, e.g. %s", name, len(failed), next(iter(failed.values())))
    log.info("task %s: free text, %d items, EM %.3f F1 %.3f", name, len(items), result["exact_match"], result["f1"])
    return TaskOutput(name, "free_text", result, rows)


def evaluate_task(model: Any, collator: Any, name: str, items: Sequence[Any], *, max_new_tokens: int = 256,
                  batch_size: int = 4, num_frames: int = 8) -> list[TaskOutput]:
    """Score a task file's items: its multiple-choice items by likelihood, its free-text ones by
    generation (a file may mix both; each kind gets its own result, ``name`` and ``name:free_text``
    when both occur)."""
    mc = [item for item in items if item.options]
    ft = [item for item in items if not item.options]
    out = []
    if mc:
        out.append(multiple_choice(model, collator, name, mc, batch_size=batch_size, num_frames=num_frames))
    if ft:
        out.append(free_text(model, collator, f"{name}:free_text" if mc else name, ft,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, num_frames=num_frames))
    return out
