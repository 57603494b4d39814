"""Text columns as word vectors: one Arrow (RE2) tokenizing pass and a sparse term matrix built
with numpy, instead of scikit-learn's per-token Python loop.

Tokens equal scikit-learn's ``(?u)\\b\\w\\w+\\b`` ones (lower-cased words of 2+ characters), so a
vocabulary fitted by scikit-learn (the shipped profanity model's) maps onto these matrices; the
clean stage's near-duplicate pass and the profanity scorer share them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

StrColumn: TypeAlias = pa.Array | pa.ChunkedArray | Sequence[str | None]


def as_string_array(values: StrColumn) -> pa.Array:
    """Any text column as one Arrow string array (lone surrogates, which UTF-8 cannot hold,
    become U+FFFD)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values
    values = list(values)
    try:
        return pa.array(values, type=pa.string())
    except (UnicodeEncodeError, pa.ArrowInvalid):
        return pa.array([v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for v in values],
                        type=pa.string())


# Everything Python's ``\w`` does not match (so tokens equal scikit-learn's ``(?u)\b\w\w+\b``
# ones): punctuation except connector "_" , symbols (emoji), separators, controls, marks.
TOKEN_SEPARATORS = (
    r"[\p{Pd}\p{Ps}\p{Pe}\p{Pi}\p{Pf}\p{Po}\x{203F}\x{2040}\x{2054}\x{FE33}\x{FE34}\x{FE4D}-\x{FE4F}"
    r"\x{FF3F}\p{S}\p{Z}\p{C}\p{M}]+"
)


def tokenize(texts: StrColumn) -> tuple[pa.Array, np.ndarray]:
    """Lower-cased word tokens of 2+ characters, flattened, with the row each came from."""
    arr = pc.utf8_lower(pc.fill_null(as_string_array(texts), ""))
    lists = pc.split_pattern_regex(arr, TOKEN_SEPARATORS)
    offsets = lists.offsets.to_numpy()
    flat = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(len(arr), dtype=np.int64), np.diff(offsets))
    keep = pc.greater_equal(pc.utf8_length(flat), 2)
    return flat.filter(keep), rows[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]


def count_matrix(texts: StrColumn, vocabulary: pa.Array | None = None) -> tuple[sp.csr_matrix, pa.Array]:
    """Term counts (rows = texts). With ``vocabulary`` (term i = column i) unknown terms are
    ignored, as a fitted scikit-learn vectorizer does; without, the vocabulary is the texts'."""
    n = len(texts)
    flat, rows = tokenize(texts)
    if vocabulary is None:
        enc = pc.dictionary_encode(flat)
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        vocabulary = enc.dictionary
    else:
        idx = pc.index_in(flat, value_set=vocabulary)
        found = np.asarray(pc.is_valid(idx).to_numpy(zero_copy_only=False), dtype=bool)
        codes = np.asarray(pc.fill_null(idx, 0).to_numpy(zero_copy_only=False), dtype=np.int64)[found]
        rows = rows[found]
    X = sp.csr_matrix((np.ones(len(codes), dtype=np.float64), (rows, codes)), shape=(n, len(vocabulary)))
    X.sum_duplicates()
    return X, vocabulary


def l2_normalize(X: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ X)


def tfidf(texts: StrColumn) -> sp.csr_matrix:
    """Sublinear-tf, smooth-idf, L2-normalised TF-IDF rows, the IDF fitted on ``texts``."""
    X, _ = count_matrix(texts)
    n = X.shape[0]
    X.data = 1.0 + np.log(X.data)
    df = np.bincount(X.indices, minlength=X.shape[1])
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    X.data *= idf[X.indices]
    return l2_normalize(X).astype(np.float32)
