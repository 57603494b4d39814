"""The dataset card (``README.md``) of a release: YAML front matter that ``datasets`` and the Hub read,
and a short body. This is the minimal card; provenance, filters and plots come with the full one.

The front matter's ``configs`` block is what makes ``load_dataset(folder, name=...)`` find each
config's shards, so it lists every split that has files and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

import blift

TASK_CATEGORIES = ["image-text-to-text"]
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


@dataclass
class CardConfig:
    """One config of a release as the card shows it."""

    name: str
    source: str  # run dataset folder it was built from
    schema: str  # blift table schema of its rows
    rows: dict[str, int] = field(default_factory=dict)  # split -> rows, splits with files only
    default: bool = False


def size_category(rows: int) -> str:
    for limit, label in _SIZES:
        if rows < limit:
            return label
    return "n>1B"


def front_matter(configs: list[CardConfig], *, pretty_name: str, license: str) -> dict[str, Any]:
    """The YAML metadata block as a dict (also what the tests parse back)."""
    main = next((c for c in configs if c.default), configs[0])
    return {
        "license": license,
        "pretty_name": pretty_name,
        "task_categories": list(TASK_CATEGORIES),
        "size_categories": [size_category(sum(main.rows.values()))],
        "tags": ["blift", "receiver-behavior"],
        "configs": [
            {
                "config_name": c.name,
                "data_files": [{"split": split, "path": f"data/{c.name}/{split}-*"} for split in c.rows],
                **({"default": True} if c.default else {}),
            }
            for c in configs
        ],
    }


def render_card(configs: list[CardConfig], *, pretty_name: str, license: str, repo_hint: str) -> str:
    """``README.md`` text: front matter, what the data is, row counts, how to load it."""
    meta = yaml.safe_dump(front_matter(configs, pretty_name=pretty_name, license=license),
                          sort_keys=False, allow_unicode=True, default_flow_style=False)
    main = next((c for c in configs if c.default), configs[0])
    lines = [
        "---", meta.rstrip("\n"), "---", "",
        f"# {pretty_name}", "",
        f"A BLIFT-style dataset built with blift {blift.__version__}: media paired with the receiver behavior "
        "it drew online (upvotes, upvote ratio, comments), written as LLaVA-style instruction records. "
        "Each item gives a *behavior* record (predict the audience reaction) and a *content* record "
        "(describe the image; the no-behavior control of the Behavior-LLaVA ablation). "
        "Behavior is a snapshot taken at `collected_at`.", "",
        "## Configs", "",
        "| config | built from | split | rows |", "|---|---|---|---:|",
    ]
    for c in configs:
        for split, n in c.rows.items():
            lines.append(f"| {c.name}{' (default)' if c.default else ''} | `{c.source}` | {split} | {n:,} |")
    lines += [
        "", "Splits come from a hash of the item uid, so an item's records (and its comments) share a split.",
        "Instruction `media` paths are relative to the dataset root (`media/...`); `<image>` appears once, "
        "at the start of the first human turn.", "",
        "## Load", "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_hint}", "{main.name}")  # a local folder or a Hub repo id',
        f'print(ds["{next(iter(main.rows), "train")}"][0]["conversations"])',
        "```", "",
        "Media and texts remain under the terms of their authors and platforms.", "",
    ]
    return "\n".join(lines)
