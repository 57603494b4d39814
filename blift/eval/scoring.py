"""Model calls of the evaluation: continuation log-likelihoods and greedy generation.

Both go through :class:`blift.train.collator.VlmCollator` so that what is scored or prompted here
is the training text byte for byte (same prompt rendering, same media-token expansion):

- :func:`score_continuations` teacher-forces ``continuation i`` as the assistant answer to the
  prompt of ``example i`` (``VlmCollator.scoring_batch``, labels only on the continuation) and
  returns the log-probability of every continuation token. Answer-option likelihood (multiple
  choice) and comment perplexity are built on it.
- :func:`generate` decodes greedily from the left-padded prompts of ``VlmCollator.prompt_batch``.

Log-probabilities are computed in float32 from the model's logits whatever the model dtype, and
only at the labelled positions (a full ``(batch, length, vocab)`` log-softmax of a 7B model at 2048
tokens would cost gigabytes for nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch

from blift.errors import InvalidRecord

IGNORE = -100
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of one continuation given its prompt (natural log)."""

    logprob: float                       # sum over the continuation's tokens (its closing </s> included)
    token_logprobs: tuple[float, ...]    # one per continuation token, in order
    token_ids: tuple[int, ...]           # the continuation's token ids (to map tokens back to text)

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def nll(self) -> float:
        return -self.logprob

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-likelihood (per token); NaN for an empty continuation."""
        return self.logprob / self.n_tokens if self.n_tokens else math.nan


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def map_batches(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], batch_size: int
                ) -> tuple[list[R | None], list[tuple[int, str]]]:
    """``fn`` over ``items`` in batches; a batch that raises :class:`InvalidRecord` (the collator's
    error for one bad record: unreadable media, a prompt over ``max_length``) is redone one item
    at a time, so only the bad items are lost. Returns the results (None where an item failed)
    and ``(index, reason)`` of every failed item."""
    results: list[R | None] = []
    failures: list[tuple[int, str]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        try:
            results.extend(fn(chunk))
            continue
        except InvalidRecord:
            pass
        for offset, item in enumerate(chunk):
            try:
                results.extend(fn([item]))
            except InvalidRecord as exc:
                results.append(None)
                failures.append((start + offset, str(exc)))
    return results, failures


def model_inputs(batch: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The tensors of a collator batch on the model's device; floating media tensors in the
    model's dtype (the collator builds them in float32)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        value = value.to(device)
        if value.is_floating_point() and key.startswith("pixel_values"):
            value = value.to(dtype)
        out[key] = value
    return out


def tokenizer_of(collator: Any, tokenizer: Any = None) -> Any:
    if tokenizer is not None:
        return tokenizer
    if getattr(collator, "tokenizer", None) is not None:
        return collator.tokenizer
    processor = getattr(collator, "processor", None)
    if processor is None:
        raise ValueError("the collator has no 'processor' attribute; pass tokenizer= explicitly")
    return getattr(processor, "tokenizer", processor)


@torch.inference_mode()
def score_continuations(model: torch.nn.Module, collator: Any, examples: Sequence[Any],
                        continuations: Sequence[str], *, batch_size: int = 4,
                        include_eos: bool = True) -> list[ContinuationScore]:
    """Teacher-forced log-likelihood of ``continuations[i]`` as the answer to ``examples[i]``
    (with the closing ``</s>`` unless ``include_eos`` is false)."""
    if len(examples) != len(continuations):
        raise ValueError(f"{len(examples)} examples but {len(continuations)} continuations")
    scores: list[ContinuationScore] = []
    pairs = list(zip(examples, continuations))
    for chunk in batched(pairs, batch_size):
        batch = collator.scoring_batch([e for e, _ in chunk], [c for _, c in chunk], include_eos=include_eos)
        labels = batch["labels"]
        inputs = model_inputs({k: v for k, v in batch.items() if k != "labels"}, model)
        logits = model(**inputs).logits
        # token t is predicted from position t-1
        target = labels[:, 1:].to(logits.device)
        mask = target != IGNORE
        picked = logits[:, :-1][mask].float().log_softmax(-1)          # (n_labelled, vocab)
        token_lp = picked.gather(-1, target[mask].unsqueeze(-1)).squeeze(-1).cpu()
        counts = mask.sum(dim=1).tolist()
        ids = target[mask].cpu().tolist()
        start = 0
        for n in counts:
            lp = token_lp[start:start + n]
            scores.append(ContinuationScore(float(lp.sum()), tuple(lp.tolist()), tuple(ids[start:start + n])))
            start += n
    return scores


@torch.inference_mode()
def generate(model: torch.nn.Module, collator: Any, examples: Sequence[Any], *, max_new_tokens: int = 256,
             batch_size: int = 4, tokenizer: Any = None) -> list[str]:
    """Greedy answers to the prompts of ``examples`` (special tokens stripped)."""
    tok = tokenizer_of(collator, tokenizer)
    eos = getattr(model.generation_config, "eos_token_id", None) or tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    answers: list[str] = []
    for chunk in batched(list(examples), batch_size):
        inputs = model_inputs(collator.prompt_batch(list(chunk)), model)
        # nn.Module types attributes it does not know as Tensor | Module; this is the Hugging Face
        # model's (or its PEFT wrapper's) generate method.
        model_generate = cast("Callable[..., torch.Tensor]", model.generate)
        out = model_generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=eos, pad_token_id=pad)
        new = out[:, inputs["input_ids"].shape[1]:]
        answers.extend(text.strip() for text in tok.batch_decode(new, skip_special_tokens=True))
    return answers
