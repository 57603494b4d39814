"""Toxicity scoring behind one small interface (``ToxicityScorer``).

Two backends:

* ``profanity-check`` (the default backend; the ``clean`` stage scores toxicity only when its
  ``toxicity_threshold`` is set, and it is not by default): ``alt-profanity-check``, a TF-IDF +
  calibrated linear SVM whose weights ship inside the wheel. Offline, ~200k short texts/s, English only, and it scores
  profanity rather than every kind of toxicity; good enough to drop the worst comments.
* ``detoxify``: the transformer classifiers the BLIFT work used, only when a checkpoint file is
  configured. detoxify 0.5.4 always calls ``<Config>.from_pretrained(arch.args.model_type)``,
  which asks the Hugging Face Hub for e.g. ``bert-base-uncased`` unless ``model_type`` names a
  local folder. :class:`DetoxifyScorer` therefore takes a local folder holding the transformers
  config and tokenizer (``config_dir``) and points ``model_type`` at it, so nothing is fetched.

``score`` returns one value in 0..1 per text (higher = more toxic); empty text scores 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, Sequence

from blift.errors import ConfigError

log = logging.getLogger(__name__)


class ToxicityScorer(Protocol):
    """Batched toxicity: one probability-like score in 0..1 per text."""

    name: str

    def score(self, texts: list[str]) -> list[float]: ...


class NoToxicityScorer:
    """Scores every text 0 (toxicity filtering switched off)."""

    name = "none"

    def score(self, texts: list[str]) -> list[float]:
        return [0.0] * len(texts)


class ProfanityCheckScorer:
    """alt-profanity-check's bundled model (TF-IDF + calibrated linear SVM), one call per batch.

    The model is used as shipped; only the feature extraction is re-done: scikit-learn's
    ``TfidfVectorizer.transform`` tokenizes and counts in a Python loop per token, which cost
    more than everything else in cleaning. The same features (lower-cased ``\\w\\w+`` tokens
    looked up in the shipped vocabulary, times ``idf_``, L2-normalised) are built with Arrow and
    numpy; tests check they equal the vectorizer's. A vectorizer configured differently (a
    future release) falls back to its own ``transform``. (``profanity_check.predict_prob``
    itself also loops per row through ``np.apply_along_axis``.)"""

    name = "profanity-check"

    def __init__(self, fast_features: bool = True) -> None:
        import pyarrow as pa
        from profanity_check import (
            profanity_check as pc,  # loads the joblib files (~1.5 s)
        )

        self._vectorizer = pc.vectorizer
        self._model = pc.model
        classes = list(getattr(self._model, "classes_", [0, 1]))
        self._col = classes.index(1) if 1 in classes else len(classes) - 1
        self._vocab = None
        if fast_features and self._plain_unigram_tfidf(self._vectorizer):
            vocab = self._vectorizer.vocabulary_
            self._vocab = pa.array(sorted(vocab, key=vocab.get), type=pa.string())
            self._idf = self._vectorizer.idf_

    @staticmethod
    def _plain_unigram_tfidf(vec: Any) -> bool:
        """True when the vectorizer's features are exactly what :meth:`features` rebuilds."""
        p = vec.get_params()
        return (
            p.get("analyzer") == "word" and p.get("lowercase") is True and p.get("ngram_range") == (1, 1)
            and p.get("token_pattern") == r"(?u)\b\w\w+\b" and p.get("tokenizer") is None
            and p.get("preprocessor") is None and p.get("strip_accents") is None
            and not p.get("binary") and not p.get("sublinear_tf") and p.get("use_idf") is True
            and p.get("norm") == "l2" and hasattr(vec, "idf_")
        )

    def features(self, texts: list[str]) -> Any:
        """The model's input matrix for ``texts``."""
        if self._vocab is None:
            return self._vectorizer.transform([t or "" for t in texts])
        from blift.text_vectors import count_matrix, l2_normalize

        X, _ = count_matrix(texts, vocabulary=self._vocab)
        X.data *= self._idf[X.indices]
        return l2_normalize(X)

    def score(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        probs = self._model.predict_proba(self.features(texts))
        return [float(p) for p in probs[:, self._col]]


# detoxify's own renaming of its checkpoints' class names.
_CLASS_NAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}


class DetoxifyScorer:
    """A detoxify checkpoint (``{"config": {...}, "state_dict": ...}``) run through transformers.

    ``config_dir`` is a local folder with the transformers ``config.json`` and tokenizer files
    of the checkpoint's base model (``save_pretrained`` of e.g. ``bert-base-uncased``). It may be
    left out only when the checkpoint's ``arch.args.model_type`` already names such a folder.
    The score is the ``toxicity`` class (the maximum over classes if a checkpoint lacks it)."""

    name = "detoxify"

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        config_dir: str | Path | None = None,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        import torch
        from detoxify.detoxify import get_model_and_tokenizer

        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"clean: detoxify_checkpoint {str(path)!r} is not a file")
        # A detoxify checkpoint is a pickled dict (config + state_dict), not a bare tensor file.
        loaded = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
            raise ConfigError(f"clean: {path} is not a detoxify checkpoint (needs 'config' and 'state_dict')")
        try:
            args = dict(loaded["config"]["arch"]["args"])
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"clean: {path}: detoxify checkpoint config lacks {exc}") from exc
        if config_dir is not None:
            if not Path(config_dir).is_dir():
                raise ConfigError(f"clean: detoxify config_dir {str(config_dir)!r} is not a folder")
            args["model_type"] = str(config_dir)
        elif not Path(str(args.get("model_type", ""))).is_dir():
            raise ConfigError(
                f"clean: {path} names base model {args.get('model_type')!r}, which detoxify would "
                "fetch from the Hugging Face Hub; set detoxify_config_dir to a local folder with "
                "that model's config.json and tokenizer files"
            )
        self.model, self.tokenizer = get_model_and_tokenizer(**args, state_dict=loaded["state_dict"])
        self.model.to(device).eval()
        self.class_names = [_CLASS_NAMES.get(c, c) for c in classes]
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        log.info("detoxify scorer: %s on %s (%s)", path.name, device, ", ".join(self.class_names))

    def score(self, texts: list[str]) -> list[float]:
        import torch

        col = self.class_names.index("toxicity") if "toxicity" in self.class_names else None
        out: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = [t or "" for t in texts[start : start + self.batch_size]]
                enc = self.tokenizer(batch, return_tensors="pt", truncation=True, padding=True,
                                     max_length=self.max_length).to(self.device)
                probs = torch.sigmoid(self.model(**enc)[0].float())
                vals = probs[:, col] if col is not None else probs.max(dim=1).values
                out.extend(float(v) for v in vals.cpu())
        return out


def make_scorer(name: str = "profanity-check", **kwargs: Any) -> ToxicityScorer:
    """Build a toxicity scorer: ``profanity-check`` (default), ``detoxify`` (needs ``checkpoint``) or ``none``."""
    if name == ProfanityCheckScorer.name:
        return ProfanityCheckScorer()
    if name == NoToxicityScorer.name:
        return NoToxicityScorer()
    if name == DetoxifyScorer.name:
        if not kwargs.get("checkpoint"):
            raise ConfigError("clean: toxicity_backend 'detoxify' needs detoxify_checkpoint (a local .ckpt file)")
        return DetoxifyScorer(**kwargs)
    raise ConfigError(f"toxicity backend {name!r} is unknown; choose profanity-check, detoxify or none")


def score_all(scorer: ToxicityScorer, texts: Sequence[str], batch_size: int = 8192) -> list[float]:
    """Run a scorer over many texts in bounded batches."""
    out: list[float] = []
    for start in range(0, len(texts), batch_size):
        out.extend(scorer.score(list(texts[start : start + batch_size])))
    return out
