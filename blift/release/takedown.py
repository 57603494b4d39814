"""``blift takedown``: remove items, comments and authors from a release when asked to.

The ids file holds one entry per line (``#`` starts a comment, blank lines are ignored):

* an item uid: ``reddit:abc``, ``youtube:dQw4w9WgXcQ`` (``reddit:t3_abc`` works too);
* a platform id without the platform: ``t3_abc`` (a Reddit post), ``t1_xyz`` (a Reddit
  comment), a bare id such as ``dQw4w9WgXcQ`` or ``abc`` (matched against both platforms);
* a URL: ``https://www.youtube.com/watch?v=...``, ``https://youtu.be/...``, ``/shorts/...``,
  ``https://www.reddit.com/r/<sub>/comments/<id>/...`` (with a comment id at the end: that
  comment), ``https://redd.it/<id>``;
* an author: ``author:<hash>`` (the salted hash the release stores; names are never stored).

What is removed:

* **an item**: its rows in every config (instructions, items, comments, scenes, videos... all
  keyed by ``uid``), so the post or video leaves the release whole;
* **an author**: their posts as whole items (as above), and their comments everywhere: the
  comment rows, and every instruction record that quotes one of them in its answer (the answer
  cannot be re-rendered here, so the record goes; its item's other record, which does not quote
  comments, stays);
* **a comment** (``t1_`` or a comment URL): the row and the records quoting it, as for authors;
* **media files** that no remaining record references any more (a file shared by two items
  stays while one of them is left).

Then each touched config/split is re-sharded with
:func:`blift.release.writer.write_split_shards`, ``release.json`` gets the new row counts and
shard lists and a :class:`~blift.release.manifest.Takedown` entry (date and counts, never the
ids), and the card is re-rendered from it. A takedown that matches nothing changes nothing: no
file is written and no entry is added, so rerunning a takedown is a no-op.

**Crash safety.** The new release is built in a staging folder next to the release (shard and
media files hard-linked from the old one, small files copied; nothing is ever modified in place,
so the links never write through to the old release), checked with ``load_dataset`` (``check``),
and swapped in by two renames. A crash before the first rename leaves the old release and a
staging folder that the next takedown deletes; a crash between the two renames leaves no release
folder and the old one under ``.<name>.takedown-old-*``, which the next takedown (or
:func:`recover`) renames back; a crash after them leaves the new release and an old folder that
is deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from blift import tables
from blift.errors import BliftError
from blift.ids import now_utc
from blift.release.manifest import SplitFiles, Takedown, read_manifest, write_manifest

_UID = re.compile(r"^([a-z][a-z0-9_]*):(\S+)$")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_REDDIT_POST = re.compile(r"^t3_([a-z0-9]+)$", re.IGNORECASE)
_REDDIT_COMMENT = re.compile(r"^t1_([a-z0-9]+)$", re.IGNORECASE)
_STAGING = ".{name}.takedown-new-"
_OLD_PREFIX = "takedown-old"  # the old release between the swap's two renames: .<name>.takedown-old-<pid>-<ns>
_OLD = ".{name}." + _OLD_PREFIX + "-"
#: Columns holding release-relative media paths (string or list of strings).
_MEDIA_COLUMNS = ("media", "file_path", "keyframe_path")
#: Columns a row is matched on (plus the media columns), read without the rest of the row.
#: A shortened quote (``…``) must keep this many characters to stand for a comment it starts.
_MIN_SHORTENED = 12
_KEY_COLUMNS = ["uid", "author_hash", "comment_id", "id", *_MEDIA_COLUMNS]


class TakedownError(BliftError):
    """The takedown cannot be applied (unreadable ids file, not a release...); the release is unchanged."""


@dataclass
class TakedownList:
    """What an ids file asks for, normalised."""

    uids: set[str] = field(default_factory=set)
    bare: set[str] = field(default_factory=set)  # ids without a platform: tried on every platform
    authors: set[str] = field(default_factory=set)
    comments: set[str] = field(default_factory=set)  # platform comment ids (reddit t1_ without the prefix)

    @property
    def entries(self) -> int:
        """Distinct ids listed (after normalisation: ``reddit:ABC`` and ``t3_abc`` are one)."""
        return len(self.uids) + len(self.bare) + len(self.authors) + len(self.comments)

    def candidates(self) -> set[str]:
        """Every uid an entry may stand for."""
        out = set(self.uids)
        for b in self.bare:
            out |= {f"reddit:{b.lower()}", f"youtube:{b}"}
        return out


@dataclass
class TakedownReport:
    release_dir: Path
    ids_listed: int = 0
    items_removed: int = 0  # distinct item uids removed from the release
    authors_removed: int = 0  # listed authors with at least one post or comment removed
    comments_removed: int = 0  # comment rows removed (by author or comment id), outside removed items
    rows_removed: dict[str, int] = field(default_factory=dict)  # config -> rows removed
    media_removed: int = 0
    not_found: int = 0  # entries that matched nothing
    recorded: bool = False  # a Takedown entry was added to release.json
    check: Any = None  # the load_dataset check of the new release (blift.release.check.CheckResult)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return any(self.rows_removed.values()) or self.media_removed > 0

    def summary_lines(self) -> list[str]:
        if not self.changed:
            return [f"nothing to remove: none of the {self.ids_listed} listed id(s) is in the release "
                    f"(already taken down, or never released)"]
        rows = ", ".join(f"{c}={n}" for c, n in self.rows_removed.items() if n)
        return [f"removed {self.items_removed} item(s), {self.comments_removed} comment(s) of "
                f"{self.authors_removed} author(s); rows: {rows}; media files: {self.media_removed}",
                f"{self.not_found} of {self.ids_listed} listed id(s) matched nothing"]


# --------------------------------------------------------------------------- the ids file


def parse_ids(path: Path) -> TakedownList:
    """Read an ids file; an entry that is none of the accepted forms is an error naming its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TakedownError(f"{path}: cannot read the ids file ({exc})") from exc
    out = TakedownList()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        try:
            _add_entry(out, line)
        except ValueError as exc:
            raise TakedownError(f"{path}:{number}: {exc}") from None
    return out


def _add_entry(out: TakedownList, entry: str) -> None:
    if re.match(r"^https?://", entry, re.IGNORECASE) or re.match(r"^(www\.|m\.)?(youtube\.com|youtu\.be|"
                                                                   r"(old\.|new\.)?reddit\.com|redd\.it)/",
                                                                   entry, re.IGNORECASE):
        _add_url(out, entry if "://" in entry else "https://" + entry)
        return
    m = _UID.match(entry)
    if m:
        platform, rest = m.groups()
        if platform == "author":
            out.authors.add(rest.lower())
        elif platform == "reddit":
            if _REDDIT_COMMENT.match(rest):
                out.comments.add(_REDDIT_COMMENT.match(rest).group(1).lower())  # type: ignore[union-attr]
            else:
                post = _REDDIT_POST.match(rest)
                out.uids.add(f"reddit:{(post.group(1) if post else rest).lower()}")
        else:
            out.uids.add(f"{platform}:{rest}")
        return
    if _REDDIT_POST.match(entry):
        out.uids.add(f"reddit:{_REDDIT_POST.match(entry).group(1).lower()}")  # type: ignore[union-attr]
    elif _REDDIT_COMMENT.match(entry):
        out.comments.add(_REDDIT_COMMENT.match(entry).group(1).lower())  # type: ignore[union-attr]
    elif _BARE.match(entry):
        out.bare.add(entry)
    else:
        raise ValueError(f"{entry!r} is not an item uid (reddit:abc), a platform id (t3_abc, a YouTube id), "
                         f"a post or video URL, or author:<hash>")


def _add_url(out: TakedownList, url: str) -> None:
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower().removeprefix("www.").removeprefix("m.").removeprefix("music.")
    parts = [p for p in parsed.path.split("/") if p]
    if host in ("youtube.com", "youtube-nocookie.com"):
        vid = parse_qs(parsed.query).get("v", [None])[0]
        if vid is None and len(parts) >= 2 and parts[0] in ("shorts", "embed", "live", "v", "e"):
            vid = parts[1]
        if vid and _YOUTUBE_ID.match(vid):
            out.uids.add(f"youtube:{vid}")
            return
    elif host == "youtu.be" and parts and _YOUTUBE_ID.match(parts[0]):
        out.uids.add(f"youtube:{parts[0]}")
        return
    elif host in ("reddit.com", "old.reddit.com", "new.reddit.com"):
        if "comments" in parts:
            i = parts.index("comments")
            if len(parts) > i + 1:
                if len(parts) > i + 3:  # /comments/<post>/<slug>/<comment>: that comment
                    out.comments.add(parts[i + 3].lower())
                else:
                    out.uids.add(f"reddit:{parts[i + 1].lower()}")
                return
    elif host == "redd.it" and parts:
        out.uids.add(f"reddit:{parts[0].lower()}")
        return
    raise ValueError(f"{url!r}: not a YouTube video or Reddit post/comment URL")


# --------------------------------------------------------------------------- the release


@dataclass
class _Split:
    config: str
    schema: str
    split: str
    files: list[Path]  # shard files in the release


def _release_splits(release_dir: Path, manifest: Any) -> list[_Split]:
    out = []
    for name, cfg in manifest.configs.items():
        for split, sf in cfg.splits.items():
            files = [release_dir / f for f in sf.files]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise TakedownError(f"{release_dir}: config {name!r}, split {split!r}: shard(s) listed in "
                                    f"release.json are missing: {missing[:3]}")
            out.append(_Split(name, cfg.schema_name, split, files))
    return out


def _columns(path: Path) -> list[str]:
    return pq.read_schema(path).names


def _read(path: Path, columns: list[str]) -> pa.Table:
    return pq.read_table(path, columns=[c for c in columns if c in _columns(path)])


@dataclass
class _Plan:
    """What goes: uids, comment keys (uid, comment_id), instruction record ids, author hashes."""

    uids: set[str] = field(default_factory=set)
    comments: set[tuple[str, str]] = field(default_factory=set)
    records: set[str] = field(default_factory=set)
    authors: set[str] = field(default_factory=set)
    authors_matched: set[str] = field(default_factory=set)


def _plan(splits: list[_Split], wanted: TakedownList) -> _Plan:
    plan = _Plan(authors=set(wanted.authors))
    candidates = wanted.candidates()
    cand = pa.array(sorted(candidates), type=pa.string())
    authors = pa.array(sorted(wanted.authors), type=pa.string())
    comment_ids = pa.array(sorted(wanted.comments), type=pa.string())
    removed_comment_text: dict[str, set[str]] = defaultdict(set)  # uid -> texts of removed comments
    # 1. listed items that exist, and the posts of listed authors
    for sp in splits:
        for path in sp.files:
            t = _read(path, ["uid", "author_hash"])
            if "uid" not in t.column_names:
                continue
            hit = pc.is_in(t["uid"], value_set=cand)
            plan.uids.update(t.filter(hit)["uid"].to_pylist())
            if sp.schema == "items" and "author_hash" in t.column_names and len(authors):
                posts = t.filter(pc.is_in(t["author_hash"], value_set=authors))
                plan.uids.update(posts["uid"].to_pylist())
                plan.authors_matched.update(posts["author_hash"].to_pylist())
    # 2. comments of listed authors and listed comments, outside items that go whole
    for sp in splits:
        if sp.schema != "comments":
            continue
        for path in sp.files:
            t = _read(path, ["uid", "comment_id", "author_hash", "text"])
            mask = pc.is_in(t["comment_id"], value_set=comment_ids)
            if "author_hash" in t.column_names and len(authors):
                mask = pc.or_kleene(mask, pc.is_in(t["author_hash"], value_set=authors))
            mask = pc.and_kleene(mask, pc.invert(pc.is_in(t["uid"], value_set=pa.array(sorted(plan.uids),
                                                                                        type=pa.string()))))
            gone = t.filter(pc.fill_null(mask, False))
            for row in gone.to_pylist():
                plan.comments.add((row["uid"], row["comment_id"]))
                if row.get("author_hash") in wanted.authors:
                    plan.authors_matched.add(row["author_hash"])
                text = _tidy(row.get("text"))
                if text:
                    removed_comment_text[row["uid"]].add(text)
    # 3. instruction records that quote a removed comment
    if removed_comment_text:
        quoted_uids = pa.array(sorted(removed_comment_text), type=pa.string())
        for sp in splits:
            if sp.schema != "instructions":
                continue
            for path in sp.files:
                t = _read(path, ["id", "uid", "conversations", "targets"])
                t = t.filter(pc.is_in(t["uid"], value_set=quoted_uids))
                for rec in t.to_pylist():
                    if rec["uid"] not in plan.uids and _quotes(rec, removed_comment_text[rec["uid"]]):
                        plan.records.add(rec["id"])
    return plan


def _tidy(text: Any) -> str:
    from blift.stages.instruct.verbalize import (
        tidy,  # how the instruct stage writes a comment into a record
    )

    return tidy(text)


def _quotes(rec: dict[str, Any], texts: set[str]) -> bool:
    """Does the record show one of ``texts`` (tidied comment texts)? Shortened quotes (``…``) count."""
    shown = list((rec.get("targets") or {}).get("comments") or [])
    answer = " ".join(str(t.get("value") or "") for t in rec.get("conversations") or [] if t.get("from") == "gpt")
    answer = " ".join(answer.split())
    for text in texts:
        for quote in shown:
            cut = quote[:-1].rstrip() if quote.endswith("…") else None
            if quote == text or (cut and len(cut) >= _MIN_SHORTENED and text.startswith(cut)):
                return True
        if text in answer:
            return True
    return False


def _keep_mask(t: pa.Table, sp: _Split, plan: _Plan) -> pa.ChunkedArray | pa.Array:
    drop = pa.repeat(pa.scalar(False), t.num_rows)
    if "uid" in t.column_names and plan.uids:
        drop = pc.or_(drop, pc.is_in(t["uid"], value_set=pa.array(sorted(plan.uids), type=pa.string())))
    if "author_hash" in t.column_names and plan.authors:
        drop = pc.or_kleene(drop, pc.is_in(t["author_hash"], value_set=pa.array(sorted(plan.authors),
                                                                                 type=pa.string())))
    if sp.schema == "comments" and plan.comments and "comment_id" in t.column_names:
        keys = pa.array(sorted(f"{u}\x00{c}" for u, c in plan.comments), type=pa.string())
        joined = pc.binary_join_element_wise(t["uid"], t["comment_id"], "\x00")
        drop = pc.or_kleene(drop, pc.is_in(joined, value_set=keys))
    if sp.schema == "instructions" and plan.records and "id" in t.column_names:
        drop = pc.or_kleene(drop, pc.is_in(t["id"], value_set=pa.array(sorted(plan.records), type=pa.string())))
    return pc.invert(pc.fill_null(drop, False))


def _media_paths(t: pa.Table) -> set[str]:
    out: set[str] = set()
    for col in _MEDIA_COLUMNS:
        if col not in t.column_names:
            continue
        for value in t[col].to_pylist():
            for p in (value if isinstance(value, list) else [value]):
                if p:
                    out.add(str(PurePosixPath(p)))
    return out


# --------------------------------------------------------------------------- takedown


def takedown(release_dir: Path, ids_file: Path, *, now: datetime | None = None, check: bool = True
             ) -> TakedownReport:
    """Remove what ``ids_file`` lists from the release in ``release_dir`` (see the module doc)."""
    start = time.monotonic()
    release_dir = Path(release_dir)
    recover(release_dir)
    wanted = parse_ids(ids_file)
    report = TakedownReport(release_dir=release_dir, ids_listed=wanted.entries)
    manifest = read_manifest(release_dir)
    splits = _release_splits(release_dir, manifest)
    plan = _plan(splits, wanted)

    # pass 1 reads only the key and media columns: which splits change, which media stay referenced
    touched: list[_Split] = []
    removed_media: set[str] = set()
    kept_media: set[str] = set()
    rows_removed: dict[str, int] = defaultdict(int)
    for sp in splits:
        removed = 0
        for path in sp.files:
            t = _read(path, _KEY_COLUMNS)
            keep = _keep_mask(t, sp, plan)
            kept = t.filter(keep)
            if kept.num_rows != t.num_rows:
                removed += t.num_rows - kept.num_rows
                removed_media |= _media_paths(t.filter(pc.invert(keep)))
            kept_media |= _media_paths(kept)
        if removed:
            rows_removed[sp.config] += removed
            touched.append(sp)
    media_gone = sorted(p for p in removed_media - kept_media
                        if PurePosixPath(p).parts[:1] == ("media",) and (release_dir / p).is_file())
    report.rows_removed = {c: rows_removed.get(c, 0) for c in manifest.configs}
    report.media_removed = len(media_gone)
    report.items_removed = len(plan.uids)
    report.authors_removed = len(plan.authors_matched)
    report.comments_removed = len(plan.comments)
    report.not_found = _not_found(wanted, plan)
    if not report.changed:
        report.seconds = round(time.monotonic() - start, 3)
        return report

    staging_parent = release_dir.parent / f"{_STAGING.format(name=release_dir.name)}{os.getpid()}-{time.monotonic_ns()}"
    stage = staging_parent / release_dir.name
    try:
        _link_tree(release_dir, stage)
        _apply(stage, manifest, touched, plan, media_gone, report, now or now_utc())
        if check:
            from blift.release.writer import check_release

            expected = {name: {s: sf.rows for s, sf in cfg.splits.items()}
                        for name, cfg in read_manifest(stage).configs.items()}
            report.check = check_release(stage, expected, False)  # rows only: shards come from the writer's own code
        tables.swap_folder(stage, release_dir, old_prefix=_OLD_PREFIX)
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    report.recorded = True
    report.seconds = round(time.monotonic() - start, 3)
    return report


def _not_found(wanted: TakedownList, plan: _Plan) -> int:
    missing = len([u for u in wanted.uids if u not in plan.uids])
    missing += len([b for b in wanted.bare
                    if f"reddit:{b.lower()}" not in plan.uids and f"youtube:{b}" not in plan.uids])
    missing += len(wanted.authors - plan.authors_matched)
    found_comments = {c for _, c in plan.comments}
    missing += len(wanted.comments - found_comments)
    return missing


def _apply(stage: Path, manifest: Any, touched: list[_Split], plan: _Plan, media_gone: list[str],
           report: TakedownReport, date: datetime) -> None:
    """Write the new release into ``stage`` (a linked copy of the old one)."""
    from blift.release.writer import write_split_shards

    for sp in touched:
        parts = []
        for path in sp.files:  # read from the old release: the stage's links are about to go
            t = tables.read_shard(path)
            parts.append(t.filter(_keep_mask(t, sp, plan)))
        table = pa.concat_tables(parts)
        cfg = manifest.configs[sp.config]
        for f in cfg.splits[sp.split].files:  # unlink the old shards: nothing may write through a link
            (stage / f).unlink(missing_ok=True)
        if table.num_rows == 0:
            del cfg.splits[sp.split]
            continue
        written = write_split_shards(table, stage / "data" / sp.config, sp.split, manifest.max_shard_bytes)
        cfg.splits[sp.split] = SplitFiles(rows=table.num_rows,
                                       files=[Path(p).relative_to(stage).as_posix() for p in written])
    for name in [n for n, c in manifest.configs.items() if not c.splits]:
        del manifest.configs[name]  # datasets cannot load a config without rows
        shutil.rmtree(stage / "data" / name, ignore_errors=True)
    if not manifest.configs:
        raise TakedownError(f"{stage.name}: the takedown would remove every row of the release; "
                            f"delete the release instead")
    freed = 0
    for rel in media_gone:
        path = stage / rel
        freed += path.stat().st_size
        path.unlink()
        _prune_empty(path.parent, stage / "media")
    _refresh_facts(stage, manifest)
    manifest.media_files = max(0, manifest.media_files - len(media_gone))
    manifest.media_bytes = max(0, manifest.media_bytes - freed)
    manifest.takedowns.append(Takedown(
        date=date, ids_listed=report.ids_listed, items_removed=report.items_removed,
        authors_removed=report.authors_removed, rows_removed={c: n for c, n in report.rows_removed.items() if n},
        media_removed=report.media_removed))
    write_manifest(stage, manifest)
    from blift.release.card import write_card

    write_card(stage)


def _refresh_facts(stage: Path, manifest: Any) -> None:
    """Platforms and the collection window of what is left (as the writer computes them: from the
    items config, else from the instruction rows' ``collected_at``)."""
    platforms: set[str] = set()
    bounds: dict[str, list[datetime]] = defaultdict(list)
    have_items = any(c.schema_name == "items" for c in manifest.configs.values())
    for cfg in manifest.configs.values():
        cols = {"items": ("created_at", "collected_at"), "instructions": ("collected_at",)}.get(cfg.schema_name, ())
        for sf in cfg.splits.values():
            for f in sf.files:
                t = _read(stage / f, ["platform", *cols])
                if "platform" in t.column_names:
                    platforms.update(p for p in pc.unique(t["platform"]).to_pylist() if p)
                for col in cols:
                    if col in t.column_names and t.num_rows:
                        mm = pc.min_max(t[col]).as_py()
                        bounds[f"{cfg.schema_name}.{col}"] += [v for v in (mm["min"], mm["max"]) if v is not None]
    src = "items" if have_items else "instructions"
    for col in ("created_at", "collected_at"):
        values = bounds.get(f"{src}.{col}", [])
        for key, pick in ((f"{col}_min", min), (f"{col}_max", max)):
            if key in manifest.collection_window:
                manifest.collection_window[key] = pick(values) if values else None
    if manifest.platforms:
        manifest.platforms = sorted(platforms)


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _link_tree(src: Path, dst: Path) -> None:
    """Copy the release tree: shards and media hard-linked (never modified in place), the rest copied."""
    for folder, _dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        big = rel.parts[:1] in (("data",), ("media",))
        for name in files:
            s, d = Path(folder) / name, dst / rel / name
            if big:
                try:
                    os.link(s, d)
                    continue
                except OSError:
                    pass
            shutil.copy2(s, d)


def recover(release_dir: Path) -> None:
    """Finish what a crashed takedown left: put the old release back if the swap stopped between
    its two renames, then delete staging and old folders. Run one takedown at a time."""
    release_dir = Path(release_dir)
    parent = release_dir.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f"{_OLD.format(name=release_dir.name)}*"))
    if not release_dir.exists() and olds:
        os.rename(olds.pop(), release_dir)
    for leftover in [*olds, *parent.glob(f"{_STAGING.format(name=release_dir.name)}*")]:
        shutil.rmtree(leftover, ignore_errors=True)
