"""``blift release``: turn a run folder into the Hugging Face dataset layout, then check it loads.

Layout written::

    <out>/README.md                                       card with the `configs` block
    <out>/data/<config>/<split>-00000-of-0000N.parquet    size-cut shards per config and split
    <out>/media/...                                        files the instruction records point to

Choices:

* **Splits.** Instruction rows carry their ``split`` (a hash of the item uid). Items and comments
  have no split column; they take the split of their uid's instruction records when the release
  has them, else :func:`blift.ids.split_of` with ``split_validation`` / ``split_test``. So an
  item, its comments and its instruction records always share a split (no test item leaks into
  train through another config).
* **Shards** are cut when the rows gathered for a split reach ``max_shard_bytes`` of
  *uncompressed* Arrow data (``Table.nbytes``); the cut point uses the mean row size, so the same
  run always gives the same files. Row groups aim at ``ROW_GROUP_BYTES`` uncompressed.
* **raw columns** (zstd platform JSON) are dropped by default (``drop_raw``): downstream users do
  not need compressed platform JSON, and it would dominate the download; keep them with
  ``drop_raw=False`` (binary columns round-trip).
* **Media** paths in the run are relative to the run folder. With ``copy_media`` each referenced
  file is hard-linked (copied across file systems) to the same relative path under the release
  (paths not under ``media/`` get that prefix and the records are rewritten), so records resolve
  relative to the release root. Files are content-addressed and never modified, so linking is safe.
* **Empty configs** (a run dataset with no rows) are left out and listed in ``report.skipped``:
  ``datasets`` cannot read a split made of empty Parquet files.
* **Atomicity.** Everything is written into a temporary sibling folder, checked, then swapped in
  by two renames: the release folder is always either the old complete release or the new one.
* **Self-check.** ``datasets.load_dataset(<folder>, name=<config>)`` runs in a child process with
  ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1`` (``datasets`` reads them at import, so a
  child is the only reliable way to set them "for the call") and a throw-away cache, and the row
  counts per config and split must equal what was written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from blift import schemas, tables
from blift.errors import BliftError
from blift.ids import split_of
from blift.release.card import CardConfig, render_card

DEFAULT_CONFIGS: dict[str, str] = {"instructions": "instructions", "items": "items_clean", "comments": "comments_clean"}
SPLITS = ("train", "validation", "test")
ROW_GROUP_BYTES = 64 * 2**20
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ReleaseError(BliftError):
    """The release cannot be written (missing dataset, missing media file, unsafe target...)."""


class ReleaseCheckError(ReleaseError):
    """The written release does not load back as written; names the config and split."""


@dataclass
class CheckResult:
    """What ``load_dataset`` read back: rows per config and split, and the features it saw."""

    ok: bool
    rows: dict[str, dict[str, int]]
    features: dict[str, str]
    seconds: float

    def __str__(self) -> str:
        total = sum(n for splits in self.rows.values() for n in splits.values())
        state = "ok" if self.ok else "FAILED"
        return f"{state}: load_dataset read {len(self.rows)} config(s), {total} rows, counts match ({self.seconds:.1f} s)"


@dataclass
class ReleaseReport:
    out_dir: Path
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # config -> split -> shard paths
    media_files: int = 0
    media_linked: int = 0  # of media_files, hard-linked instead of copied
    check: CheckResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # config -> why it is not in the release
    duplicates: dict[str, int] = field(default_factory=dict)  # config -> rows dropped as repeats of a key

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI: rows and shards per config and split, the check."""
        lines = []
        for config, splits in self.rows.items():
            parts = ", ".join(f"{split}={n} ({len(self.files.get(config, {}).get(split, []))} shard(s))" for split, n in splits.items())
            lines.append(f"{config}: {parts}")
        for config, why in self.skipped.items():
            lines.append(f"{config}: skipped ({why})")
        for config, n in self.duplicates.items():
            lines.append(f"{config}: {n} duplicate row(s) left out (same key in several shards)")
        if self.media_files:
            lines.append(f"media files: {self.media_files}")
        if self.check is not None:
            lines.append(f"load_dataset check: {self.check}")
        return lines


# --------------------------------------------------------------------------- shards


class _SplitWriter:
    """Gathers one split's rows and cuts them into shards of about ``max_bytes`` uncompressed."""

    def __init__(self, folder: Path, split: str, max_bytes: int) -> None:
        self.folder, self.split, self.max_bytes = folder, split, max_bytes
        self._pending: list[pa.Table] = []
        self._bytes = 0
        self.parts: list[Path] = []
        self.rows = 0  # written so far

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._bytes += table.nbytes
        while self._bytes >= self.max_bytes:
            buf = pa.concat_tables(self._pending)
            take = max(1, int(self.max_bytes / (buf.nbytes / buf.num_rows)))
            self._write(buf.slice(0, take))
            rest = buf.slice(take)
            self._pending = [rest] if rest.num_rows else []
            self._bytes = rest.nbytes if rest.num_rows else 0

    def finish(self) -> list[Path]:
        """Write what is left and give the shards their final ``-0000i-of-0000N`` names."""
        if self._pending:
            self._write(pa.concat_tables(self._pending))
            self._pending, self._bytes = [], 0
        total = len(self.parts)
        final = []
        for i, part in enumerate(self.parts):
            target = self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet"
            os.replace(part, target)
            final.append(target)
        return final

    def _write(self, table: pa.Table) -> None:
        path = self.folder / f".{self.split}-{len(self.parts):05d}.partial.parquet"
        per_row = table.nbytes / table.num_rows if table.num_rows else 1
        row_group = max(1, min(max(table.num_rows, 1), int(ROW_GROUP_BYTES / max(per_row, 1))))
        tables.atomic_write_parquet(path, table, row_group_size=row_group)
        self.parts.append(path)
        self.rows += table.num_rows


# --------------------------------------------------------------------------- media


class _MediaCopier:
    """Links or copies the media files records point to, once each, under ``<release>/media``."""

    def __init__(self, run_dir: Path, release_dir: Path) -> None:
        self.run_dir, self.release_dir = run_dir, release_dir
        self.done: dict[str, str] = {}
        self.linked = 0

    def place(self, rel: str, *, record: str, source: Path) -> str:
        """Put one file in place; return its path relative to the release root."""
        if rel in self.done:
            return self.done[rel]
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise ReleaseError(f"{source}: record {record!r}: media path {rel!r} is not relative to the run folder")
        src = self.run_dir / pure
        if not src.is_file():
            raise ReleaseError(f"{source}: record {record!r}: media file {rel!r} not found in {self.run_dir}")
        out = pure if pure.parts[0] == "media" else PurePosixPath("media") / pure
        dst = self.release_dir / out
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            self.linked += 1
        except OSError:
            shutil.copy2(src, dst)
        self.done[rel] = str(out)
        return str(out)


def _place_media(table: pa.Table, copier: _MediaCopier, source: Path) -> pa.Table:
    """Copy a shard's media and rewrite its ``media`` column to release-relative paths."""
    ids = table.column("id").to_pylist()
    lists = table.column("media").to_pylist()
    placed = [[copier.place(p, record=rid, source=source) for p in paths or []] for rid, paths in zip(ids, lists)]
    if placed == lists:
        return table
    i = table.column_names.index("media")
    return table.set_column(i, table.schema.field("media"), pa.array(placed, type=table.schema.field("media").type))


# --------------------------------------------------------------------------- release


def release(
    run_dir: Path,
    out_dir: Path,
    *,
    configs: dict[str, str] | None = None,
    max_shard_bytes: int = 500_000_000,
    copy_media: bool = True,
    check: bool = True,
    drop_raw: bool = True,
    split_validation: float = 0.05,
    split_test: float = 0.05,
    pretty_name: str | None = None,
    license: str = "other",
    check_timeout_s: float = 3600.0,
) -> ReleaseReport:
    """Write the release of ``run_dir`` to ``out_dir`` (replacing an older release there) and check it.

    ``configs`` maps release config names to run dataset folders (default: instructions, items
    from ``items_clean``, comments from ``comments_clean``). ``license`` defaults to ``other``:
    the texts and media belong to their authors; set it to what applies to your release.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    configs = dict(DEFAULT_CONFIGS if configs is None else configs)
    if max_shard_bytes < 1:
        raise ReleaseError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    sources = _check_inputs(run_dir, out_dir, configs)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    report = ReleaseReport(out_dir=out_dir)
    try:
        copier = _MediaCopier(run_dir, tmp) if copy_media else None
        cards: dict[str, CardConfig] = {}
        uid_split: dict[str, str] = {}
        # instruction configs first: their splits decide those of items and comments
        order = sorted(configs, key=lambda name: sources[name][1] != "instructions")
        for name in order:
            shard_files, schema_name = sources[name]
            rows, files, dupes = _write_config(
                name, shard_files, schema_name, tmp, uid_split=uid_split, copier=copier, drop_raw=drop_raw,
                max_shard_bytes=max_shard_bytes, split_validation=split_validation, split_test=split_test)
            if dupes:
                report.duplicates[name] = dupes
            if not files:  # datasets cannot load a config made of empty Parquet files
                shutil.rmtree(tmp / "data" / name, ignore_errors=True)
                report.skipped[name] = f"{configs[name]!r} has no rows"
                continue
            report.rows[name] = rows
            report.files[name] = {s: [str(p.relative_to(tmp)) for p in fs] for s, fs in files.items()}
            cards[name] = CardConfig(name=name, source=configs[name], schema=schema_name, rows=dict(rows))
        if not cards:
            raise ReleaseError(f"nothing to release: every config is empty ({', '.join(report.skipped)})")
        default = "instructions" if "instructions" in cards else next(
            (n for n in cards if cards[n].schema == "instructions"), next(n for n in configs if n in cards))
        cards[default].default = True
        card_list = [cards[n] for n in configs if n in cards]
        tables.atomic_write_bytes(tmp / "README.md", render_card(
            card_list, pretty_name=pretty_name or f"{out_dir.name} (BLIFT-style)", license=license,
            repo_hint=out_dir.name).encode())
        if copier is not None:
            report.media_files, report.media_linked = len(copier.done), copier.linked
        if check:
            report.check = check_release(tmp, report.rows, timeout_s=check_timeout_s)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_inputs(run_dir: Path, out_dir: Path, configs: dict[str, str]) -> dict[str, tuple[list[Path], str]]:
    """Validate names and folders; return config -> (shard files, blift schema name)."""
    if not configs:
        raise ReleaseError("no configs to release")
    run_abs, out_abs = run_dir.resolve(), out_dir.resolve()
    if run_abs == out_abs or run_abs.is_relative_to(out_abs):
        raise ReleaseError(f"release folder {out_dir} would replace the run folder {run_dir}; pick another")
    if out_dir.exists() and any(out_dir.iterdir()) and not ((out_dir / "README.md").is_file()
                                                            and (out_dir / "data").is_dir()):
        raise ReleaseError(f"{out_dir} exists and is not a release (no README.md and data/); refusing to replace it")
    sources = {}
    for name, folder in configs.items():
        if not _CONFIG_NAME.match(name):
            raise ReleaseError(f"config name {name!r}: use letters, digits, '_' and '-'")
        shard_files = tables.shard_paths(run_dir / folder)
        if not shard_files:
            raise ReleaseError(
                f"config {name!r}: no shards in {run_dir / folder}; run the stage that writes {folder!r} "
                f"or leave the config out (configs={{...}})")
        first = pq.read_schema(shard_files[0])
        schema = schemas.schema_of_file_metadata(first.metadata, where=str(shard_files[0]))
        sources[name] = (shard_files, schema.name)
    return sources


# Rows with the same key are the same record (first shard in sorted order wins).
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    "instructions": ("id",),
    "items": ("uid",),
    "comments": ("uid", "comment_id"),
    "media": ("uid", "index"),
    "attributes": ("uid", "media_index", "scene"),
}


def _write_config(name: str, shard_files: list[Path], schema_name: str, release_dir: Path, *,
                  uid_split: dict[str, str], copier: _MediaCopier | None, drop_raw: bool, max_shard_bytes: int,
                  split_validation: float, split_test: float) -> tuple[dict[str, int], dict[str, list[Path]], int]:
    folder = release_dir / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    writers = {s: _SplitWriter(folder, s, max_shard_bytes) for s in SPLITS}
    key_cols = UNIQUE_KEYS.get(schema_name)
    seen: set[tuple[Any, ...]] = set()
    duplicates = 0
    for path in shard_files:
        table = tables.read_shard(path, schema_name)
        if key_cols:  # one post listed by two requests is collected in two shards: release it once
            keep = []
            for key in zip(*(table.column(c).to_pylist() for c in key_cols)):
                keep.append(key not in seen)
                seen.add(key)
            if not all(keep):
                duplicates += keep.count(False)
                table = table.filter(pa.array(keep))
        meta = dict(table.schema.metadata or {})  # keep the schema stamp: `blift validate` reads it
        if drop_raw and "raw" in table.column_names:
            table = table.drop_columns(["raw"])
            meta[schemas.META_OMITTED] = b"raw"
        table = table.replace_schema_metadata(meta)
        if schema_name == "instructions":
            if copier is not None:
                table = _place_media(table, copier, path)
            splits = table.column("split")
            for uid, split in zip(table.column("uid").to_pylist(), splits.to_pylist()):
                uid_split.setdefault(uid, split)
        else:
            splits = pa.array([uid_split.get(u) or split_of(u, split_validation, split_test)
                               for u in table.column("uid").to_pylist()], type=pa.string())
        unknown = set(pc.unique(splits).to_pylist()) - set(SPLITS)
        if unknown:
            raise ReleaseError(f"{path}: split value(s) {sorted(map(str, unknown))}; expected {SPLITS}")
        for split, writer in writers.items():
            writer.add(table.filter(pc.equal(splits, split)))
    files: dict[str, list[Path]] = {}
    rows: dict[str, int] = {}
    for split, writer in writers.items():
        written = writer.finish()
        if written:
            files[split], rows[split] = written, writer.rows
    return rows, files, duplicates


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp``: two renames, the old release removed only after the swap."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- self-check


def check_release(folder: Path, expected: dict[str, dict[str, int]], *, timeout_s: float = 3600.0) -> CheckResult:
    """Load every config of ``folder`` with ``datasets`` offline (child process) and compare row counts.

    Raises :class:`ReleaseCheckError` naming the config and split on the first mismatch.
    """
    folder = Path(folder)
    start = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=".blift-release-check-", dir=folder.parent))
    try:
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                   HF_DATASETS_CACHE=str(scratch / "cache"), HF_HUB_DISABLE_TELEMETRY="1")
        result_file = scratch / "result.json"
        code = "import sys; from blift.release.writer import _load_counts_main; _load_counts_main(sys.argv[1:])"
        args = [sys.executable, "-c", code, str(folder), json.dumps(sorted(expected)), str(scratch / "cache"),
                str(result_file)]
        try:
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ReleaseCheckError(f"{folder}: load_dataset check did not finish in {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not result_file.is_file():
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise ReleaseCheckError(f"{folder}: load_dataset failed (exit {proc.returncode}):\n{tail}")
        loaded = json.loads(result_file.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "error" in loaded:
        raise ReleaseCheckError(f"{folder}: config {loaded['config']!r}: load_dataset failed: {loaded['error']}")
    for config, splits in expected.items():
        got = loaded["rows"].get(config, {})
        for split in sorted(set(splits) | set(got)):
            if splits.get(split) != got.get(split):
                raise ReleaseCheckError(
                    f"{folder}: config {config!r}, split {split!r}: wrote {splits.get(split)} rows, "
                    f"load_dataset read {got.get(split)}")
    return CheckResult(ok=True, rows=loaded["rows"], features=loaded["features"],
                       seconds=round(time.monotonic() - start, 3))


def _load_counts_main(argv: list[str]) -> None:
    """Child-process side of :func:`check_release` (offline variables are set before the import)."""
    folder, names, cache_dir, out = argv[0], json.loads(argv[1]), argv[2], Path(argv[3])
    import datasets

    datasets.disable_progress_bars()
    rows: dict[str, dict[str, int]] = {}
    features: dict[str, str] = {}
    for name in names:
        try:
            loaded = datasets.load_dataset(folder, name=name, cache_dir=cache_dir)
        except Exception as exc:  # reported to the parent with the config named, causes included
            chain, cause = [], exc
            while cause is not None and len(chain) < 4:
                chain.append(f"{type(cause).__name__}: {cause}")
                cause = cause.__cause__ or cause.__context__
            out.write_text(json.dumps({"config": name, "error": " <- ".join(chain)}))
            return
        rows[name] = {split: ds.num_rows for split, ds in loaded.items()}
        features[name] = str(next(iter(loaded.values())).features)
    out.write_text(json.dumps({"rows": rows, "features": features}))
