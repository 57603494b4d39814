"""The results of ``blift eval``: ``results.json`` (everything) and ``results.md`` (one table).

The results mapping is::

    {
      "checkpoints": {                       # one entry per checkpoint, in column order
        "base":         {"behavior": {"score": {"mae_log": 1.2, "n": 40, ...}, ...},
                         "emotion":  {"accuracy": 0.41, ...}},
        "behavior-ift": {...},
      },
      ...                                    # anything else (config, timings) goes to JSON only
    }

A mapping without a ``"checkpoints"`` key is read as the checkpoints mapping itself. Metric
values may nest to any depth; the table flattens them into rows named
``task / metric.sub-metric`` (first-seen order over all checkpoints) with one column per
checkpoint. A cell shows integers as they are, other numbers to four significant digits, and
``–`` where a checkpoint has no value or the value is NaN. Where at least two checkpoints have a
value and the metric's direction is known from its name (lower is better: mae, rmse,
perplexity, loss; higher: r2, pearson, spearman, accuracy, f1, exact_match, similarity,
coverage, top1), the best cell is bold; counts (``n``...) are never bold.

JSON is strict: NaN and infinities are written as ``null``; numpy values, paths, dates and
dataclasses are converted. Both files are written atomically (temporary file, then rename), so a
reader never sees half a table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from blift.tables import atomic_write_bytes

_LOWER = ("mae", "rmse", "perplexity", "loss", "nll", "error")
_HIGHER = ("r2", "pearson", "spearman", "accuracy", "acc", "f1", "exact_match", "em", "similarity", "coverage",
           "top1", "rouge")
_MISSING = "–"


def to_jsonable(value: Any) -> Any:
    """A value JSON can hold exactly: NaN/inf -> None, numpy -> Python, Path/date -> str."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _checkpoints(results: Mapping[str, Any]) -> Mapping[str, Any]:
    ckpts = results.get("checkpoints", results)
    if not isinstance(ckpts, Mapping):
        raise ValueError(f"results['checkpoints'] must map checkpoint names to metrics, got {type(ckpts).__name__}")
    return {name: m for name, m in ckpts.items() if isinstance(m, Mapping)}


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"behavior": {"score": {"mae": 1}}}`` -> ``{"behavior / score.mae": 1}`` (lists are skipped:
    per-record values belong in the JSON, not the table)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}" if not prefix else (f"{prefix} / {key}" if " / " not in prefix else f"{prefix}.{key}")
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        elif isinstance(value, (list, tuple, np.ndarray)):
            continue
        else:
            out[name] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _cell(value: Any) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}" if math.isfinite(value) else _MISSING
    return str(value).replace("|", "\\|").replace("\n", " ")


def direction(metric: str) -> int:
    """-1 when lower is better, +1 when higher is better, 0 when unknown (from the last name part)."""
    last = metric.rsplit(".", 1)[-1].rsplit(" / ", 1)[-1].lower()
    words = last.split("_")
    if last.startswith("n_") or last == "n" or last.endswith("_n") or "tokens" in words or "records" in words:
        return 0
    if any(last == w or last.startswith(w + "_") or last.endswith("_" + w) for w in _LOWER):
        return -1
    if any(last == w or last.startswith(w + "_") or last.endswith("_" + w) for w in _HIGHER):
        return 1
    return 0


def markdown_table(results: Mapping[str, Any]) -> str:
    """One markdown table: a row per metric, a column per checkpoint (see the module docstring)."""
    ckpts = _checkpoints(results)
    if not ckpts:
        return "_No results._\n"
    flat = {name: flatten(metrics) for name, metrics in ckpts.items()}
    rows: list[str] = []
    for metrics in flat.values():
        rows.extend(r for r in metrics if r not in rows)
    names = list(flat)
    lines = ["| metric | " + " | ".join(_cell(n) for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for row in rows:
        values = [flat[n].get(row) for n in names]
        cells = [_cell(v) for v in values]
        sign = direction(row)
        numbers = [_number(v) for v in values]
        present = [x for x in numbers if x is not None]
        if sign and len(present) >= 2 and len(set(present)) > 1:
            best = max(present) if sign > 0 else min(present)
            cells = [f"**{c}**" if x == best else c for c, x in zip(cells, numbers)]
        lines.append(f"| {_cell(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(folder: Path, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``folder`` (created); returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "results.json", folder / "results.md"
    text = json.dumps(to_jsonable(results), indent=2, ensure_ascii=False, allow_nan=False)
    table = markdown_table(results)
    n = len(_checkpoints(results))
    md = (f"# blift eval results\n\n{n} checkpoint(s); rows are metrics, columns checkpoints. "
          f"Bold: best where the direction is known. Full values in `results.json`.\n\n{table}")
    atomic_write_bytes(json_path, (text + "\n").encode())
    atomic_write_bytes(md_path, md.encode())
    return json_path, md_path
