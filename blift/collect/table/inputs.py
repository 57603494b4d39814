"""What a ``table.read`` request names, and reading it as a stream of row batches.

Requests
  ``{path: ...}``: one file, a folder (every supported file under it, recursively, sorted by
  path; names starting with ``.`` or ``_`` are skipped, as Spark and Hadoop write ``_SUCCESS``
  and ``.crc`` files there, and so is plain ``.json``, as often metadata as rows, unless
  ``format: jsonl`` says) or a glob (every file it matches), as a local path or any fsspec URL (``s3://``,
  ``gs://``, ``hf://datasets/...``, ``memory://``). The format comes from the extension
  (``.csv``, ``.tsv``, ``.jsonl`` / ``.ndjson`` / ``.json`` as JSON lines, ``.parquet``; text
  formats may be compressed: ``.gz``, ``.bz2``, ``.zst``, ``.xz``) unless ``format:`` says.
  The files are listed when the pipeline starts, with their size and modification stamp in the
  request: a changed file makes a new request, so a rerun reads it again instead of skipping.

  ``{dataset: org/name, config:, split:, revision:}``: a Hugging Face dataset, streamed
  (``datasets.load_dataset(..., streaming=True)``): rows arrive as its files are read, and a
  dataset far larger than memory never sits in it. The revision is resolved to a commit first
  and the stream reads that commit, so every row of one run comes from one version; the commit
  goes into each item's ``raw`` under ``_source`` (with the dataset, config and split). A request
  with no ``revision`` is the same request on every run: pin one to read a newer version.

  ``media_roots: [folders]``: where local media paths may point. Default: the folder of the
  table file itself when it is local; a URL or a Hub dataset gets none, so a local path in
  such a table is refused unless its request names folders. A relative media path starts at
  the table's folder (a local table) or at the first of ``media_roots`` (any other).

Reading
  Never a whole file at once: CSV and TSV through Python's ``csv`` module in batches, JSON lines
  line by line (orjson), Parquet by ``ParquetFile.iter_batches``. CSV is read by the ``csv``
  module rather than ``pyarrow.csv.open_csv`` because a bad row must cost one row: pyarrow's
  ``invalid_row_handler`` gets no row number once values may hold newlines (quoted multi-line
  texts are common in exports), and a conversion error (one non-UTF-8 byte) ends its whole
  block. Here a CSV row with the wrong number of fields, bad quoting or a non-UTF-8 byte, and a
  JSON line that is not an object in UTF-8, is one :class:`BadRow` in its place, and the stream
  goes on. A file that cannot be read further (a CSV cut inside a quoted value, a Parquet file
  with a broken footer or a corrupt page, a truncated ``.gz``) raises :class:`InputStopped`
  after the rows before the cut were yielded.
"""

from __future__ import annotations

import csv
import glob
import io
import lzma
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import orjson
import zstandard

from blift.collect.media.local import LocalRoots
from blift.collect.table.mapping import SOURCE_KEY
from blift.errors import ConfigError, ErrorClass

FORMATS = ("csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
              ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".zst", ".xz")
PATH_KEYS = ("path", "format", "media_roots")
HUB_KEYS = ("dataset", "config", "split", "revision", "media_roots")
MAX_FIELD_BYTES = 64 << 20  # a longer CSV field or JSON line is a bad row, not a memory blow-up
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
_DATA_ERRORS = (ValueError, OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, csv.Error,
                UnicodeError)


@dataclass(frozen=True)
class BadRow:
    """A record that could not be read as a row; ``message`` names where in the file (a line)."""

    message: str
    error_type: str


class InputStopped(Exception):
    """The input cannot be read any further; the rows before were yielded."""

    def __init__(self, message: str, error_class: ErrorClass = ErrorClass.INVALID) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass
class Batch:
    """Rows in input order (a :class:`BadRow` in the place of each unreadable one), and the input's
    column names on its first batch (None on the others)."""

    columns: list[str] | None
    rows: list[dict[str, Any] | BadRow]


@dataclass
class TableInput:
    """One input of a request: a file or a Hub dataset."""

    label: str  # what messages and record keys name: the path, URL or dataset
    base: Path | None  # the folder relative media paths start from (a local table's folder)
    roots: LocalRoots | None  # where local media may come from; None: no local files
    read: Callable[[int], Iterator[Batch]]  # batch_rows -> batches
    raw_extra: dict[str, Any] | None = None  # added to every item's raw (a Hub dataset's revision)


# ------------------------------------------------------------------------------------- requests


def is_url(path: str) -> bool:
    return "://" in path


def format_of(path: str) -> str | None:
    """The format an extension says (compression suffixes looked through), or None."""
    name = PurePosixPath(path.split("?", 1)[0]).name.lower()
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return EXTENSIONS.get(PurePosixPath(name).suffix)


def _in_folder(path: str) -> bool:
    """Whether a folder walk takes a file without ``format:``: a table extension, but not plain
    ``.json``, which in a dataset folder is as often metadata (``dataset_info.json``) as rows."""
    name = PurePosixPath(path).name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    return format_of(path) is not None and not name.endswith(".json")


def _compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSIONS)


def format_for(path: str, fmt: str | None = None) -> str:
    """The format a file is read as: ``fmt`` when given, else its extension's; ValueError saying
    why for an unknown extension or a compressed Parquet file."""
    found = fmt or format_of(path)
    if found is None:
        raise ValueError(f"unknown format; use one of the extensions {sorted(EXTENSIONS)}")
    if found == "parquet" and _compressed(path):
        raise ValueError("a compressed Parquet file; Parquet compresses inside the file")
    return found


def list_files(path: str, fmt: str | None, where: str) -> list[dict[str, Any]]:
    """The files a ``path`` request names: ``{path, format, size, stamp}`` each, sorted by path."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"{where}: path {path!r}: no filesystem for it ({exc})") from None
    remote = is_url(path)

    def full(p: str) -> str:
        return fs.unstrip_protocol(p) if remote else p

    try:
        if glob.has_magic(root):
            found = sorted(p for p in fs.glob(root) if fs.isfile(p))
            if not found:
                raise ConfigError(f"{where}: glob {path!r} matches no file")
        elif fs.isdir(root):
            found = sorted(p for p in fs.find(root) if not any(
                part.startswith((".", "_")) for part in PurePosixPath(p[len(root.rstrip("/")):]).parts)
                and (format_of(p) == fmt if fmt else _in_folder(p)))
            if not found:
                kinds = f"{fmt} files" if fmt else f"files ending in {', '.join(EXTENSIONS)}"
                raise ConfigError(f"{where}: folder {path!r} holds no {kinds}")
        elif fs.isfile(root):
            found = [root]
        else:
            raise ConfigError(f"{where}: path {path!r}: no such file or folder")
    except OSError as exc:
        raise ConfigError(f"{where}: path {path!r}: cannot list it ({type(exc).__name__}: {exc})") from None
    files = []
    for p in found:
        try:
            file_format = format_for(p, fmt)
        except ValueError as exc:
            hint = f" or name it with format: ({', '.join(FORMATS)})" if format_of(p) is None else ""
            raise ConfigError(f"{where}: {full(p)}: {exc}{hint}") from None
        info = fs.info(p)
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or info.get("created")
        if not remote:
            stamp = os.stat(p).st_mtime_ns
        files.append({"path": full(p), "format": file_format, "size": info.get("size"),
                      "stamp": None if stamp is None else str(stamp)})
    return files


def _folders(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.media_roots: expected a folder or a list of folders, got {value!r:.80}")
    out = []
    for folder in value:
        if is_url(folder):
            raise ConfigError(f"{where}.media_roots: {folder!r}: media roots are local folders")
        if not Path(folder).is_dir():
            raise ConfigError(f"{where}.media_roots: {folder!r} does not exist or is not a folder")
        out.append(str(Path(folder).resolve()))
    return out


def request_spec(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    """(kind, spec) of one pipeline ``requests:`` entry; a bad entry is a ConfigError naming the field."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with 'path' or 'dataset', got {entry!r:.80}")
    if ("path" in entry) == ("dataset" in entry):
        raise ConfigError(f"{where}: give exactly one of 'path' (files) or 'dataset' (a Hugging Face dataset)")
    kind, keys = ("path", PATH_KEYS) if "path" in entry else ("dataset", HUB_KEYS)
    unknown = sorted(set(entry) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a {kind} request takes {list(keys)}")
    for key in keys:
        if key != "media_roots" and entry.get(key) is not None and not isinstance(entry[key], str):
            raise ConfigError(f"{where}.{key}: expected text, got {entry[key]!r:.80}")
    roots = _folders(entry.get("media_roots"), where)
    if kind == "path":
        fmt = entry.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise ConfigError(f"{where}.format: {fmt!r}; expected one of {list(FORMATS)}")
        path = entry["path"]
        if not path:
            raise ConfigError(f"{where}.path: empty")
        return "path", {"path": path, "format": fmt, "files": list_files(path, fmt, where), "media_roots": roots}
    if not entry["dataset"] or entry["dataset"].count("/") > 1:
        raise ConfigError(f"{where}.dataset: expected a Hub dataset id such as 'org/name', got {entry['dataset']!r}")
    return "dataset", {"dataset": entry["dataset"], "config": entry.get("config"),
                       "split": entry.get("split") or "train", "revision": entry.get("revision"),
                       "media_roots": roots}


# ------------------------------------------------------------------------------------- inputs


def inputs_of(kind: str, spec: dict[str, Any], where: str) -> Iterator[TableInput]:
    """The inputs of one request, in order."""
    roots = LocalRoots(spec["media_roots"]) if spec.get("media_roots") else None
    if kind == "dataset":
        yield _hub_input(spec, roots, where)
        return
    for file in spec["files"]:
        path, fmt = file["path"], file["format"]
        local = not is_url(path)
        base = Path(path).parent if local else None
        file_roots = roots if roots is not None else (LocalRoots([base]) if base is not None else None)
        yield TableInput(label=path, base=base, roots=file_roots, read=_file_reader(path, fmt))


def _file_reader(path: str, fmt: str) -> Callable[[int], Iterator[Batch]]:
    def read(batch_rows: int) -> Iterator[Batch]:
        return read_file(path, fmt, batch_rows)

    return read


def read_file(path: str, fmt: str, batch_rows: int) -> Iterator[Batch]:
    """Batches of a file (local or fsspec URL); raises InputStopped where it cannot go on, after
    the rows before that point were yielded."""
    import fsspec

    try:
        opened = fsspec.open(path, "rb", compression="infer" if fmt != "parquet" else None)
        fh = opened.open()
    except FileNotFoundError:
        raise InputStopped("the file is gone (it was there when the run started)", ErrorClass.PERMANENT) from None
    except _DATA_ERRORS as exc:
        raise InputStopped(f"cannot open it ({type(exc).__name__}: {exc})", _class_of(exc)) from None
    try:
        columns: list[str] | None = None
        if fmt == "parquet":
            reader = _ParquetRows(fh, batch_rows)
            rows: Iterator[dict[str, Any] | BadRow] = iter(reader)
            columns = reader.columns
        elif fmt == "jsonl":
            rows = _jsonl_rows(fh)
        else:
            header, rows = _csv_rows(fh, "\t" if fmt == "tsv" else ",")
            columns = header
        yield from batched(rows, batch_rows, columns)
    finally:
        fh.close()


def batched(rows: Iterator[dict[str, Any] | BadRow], batch_rows: int,
            columns: list[str] | None) -> Iterator[Batch]:
    """Rows in batches; the first batch carries ``columns`` (None: every key of its rows). When the
    rows stop with a read error, the rows before it are yielded first, then InputStopped raised."""
    batch: list[dict[str, Any] | BadRow] = []
    first = True
    stopped: InputStopped | None = None
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_rows:
                yield Batch(_columns(columns, batch) if first else None, batch)
                first, batch = False, []
    except InputStopped as exc:
        stopped = exc
    except _DATA_ERRORS as exc:
        stopped = InputStopped(f"{type(exc).__name__}: {exc}", _class_of(exc))
    if batch or first:
        yield Batch(_columns(columns, batch) if first else None, batch)
    if stopped is not None:
        raise stopped


def _columns(given: list[str] | None, batch: list[dict[str, Any] | BadRow]) -> list[str] | None:
    """The input's columns: as its header or schema says, else every key any row of its first batch
    has (a sparse JSON line omits some); None when there is nothing to tell."""
    if given is not None:
        return given
    keys: dict[str, None] = {}
    for row in batch:
        if isinstance(row, dict):
            keys.update(dict.fromkeys(row))
    return list(keys) if keys else None


def _class_of(exc: BaseException) -> ErrorClass:
    return ErrorClass.TRANSIENT if isinstance(exc, (ConnectionError, TimeoutError)) else ErrorClass.INVALID


def _csv_rows(fh: Any, delimiter: str) -> tuple[list[str] | None, Iterator[dict[str, Any] | BadRow]]:
    """(header, rows) of a CSV or TSV file; an empty file has neither."""
    if csv.field_size_limit() < MAX_FIELD_BYTES:
        csv.field_size_limit(MAX_FIELD_BYTES)  # process-wide; only ever raised
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return None, iter(())
    except csv.Error as exc:
        raise InputStopped(f"unreadable header ({exc})") from None
    if any(_SURROGATE.search(name) for name in header):
        raise InputStopped("the header is not UTF-8 text")
    doubled = sorted({n for n in header if header.count(n) > 1})
    if doubled:
        raise InputStopped(f"column name(s) {doubled} appear more than once in the header")
    return list(header), _csv_body(reader, header)


def _csv_body(reader: Any, header: list[str]) -> Iterator[dict[str, Any] | BadRow]:
    width, last_line = len(header), reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines = _lines(last_line, reader.line_num)
            if "end of data" in str(exc):
                raise InputStopped(f"cut inside a quoted value ({lines})") from None
            last_line = reader.line_num
            yield BadRow(f"{lines}: {exc}", "bad_row")
            continue
        lines, last_line = _lines(last_line, reader.line_num), reader.line_num
        if not fields:
            continue  # a blank line
        if len(fields) != width:
            yield BadRow(f"{lines}: expected {width} fields, got {len(fields)}", "bad_row")
        elif _SURROGATE.search("".join(fields)):
            col = next(name for name, v in zip(header, fields) if _SURROGATE.search(v))
            yield BadRow(f"{lines}: column {col!r}: not UTF-8 text", "bad_utf8")
        else:
            yield {name: (v if v != "" else None) for name, v in zip(header, fields)}


def _lines(before: int, now: int) -> str:
    return f"line {now}" if now <= before + 1 else f"lines {before + 1}-{now}"


def _jsonl_rows(fh: Any) -> Iterator[dict[str, Any] | BadRow]:
    started = False
    for line_no, line in enumerate(_read_lines(fh, MAX_FIELD_BYTES), 1):
        if line is None:
            yield BadRow(f"line {line_no}: longer than {MAX_FIELD_BYTES} bytes", "too_long")
            continue
        stripped = line.strip()
        if not stripped:
            continue
        if not started and stripped.startswith(b"["):
            raise InputStopped("holds a JSON array, not JSON lines (one object per line): convert it, "
                               "e.g. jq -c '.[]' file.json > file.jsonl")
        started = True
        try:
            obj = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            yield BadRow(f"line {line_no}: not a JSON object in UTF-8 ({exc})", "bad_json")
            continue
        if isinstance(obj, dict):
            yield obj
        else:
            yield BadRow(f"line {line_no}: expected a JSON object, got {type(obj).__name__}", "bad_json")


def _read_lines(fh: Any, limit: int, chunk_bytes: int = 64 << 10) -> Iterator[bytes | None]:
    """The lines of a binary file (without their newline), read in chunks (any file object: fsspec's
    take no ``readline`` limit); a line longer than ``limit`` is None, never held whole. Chunks are
    small because a truncated compressed file loses the chunk being decompressed when it ends."""
    pending = bytearray()
    too_long = False
    while True:
        chunk = fh.read(chunk_bytes)
        if not chunk:
            break
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not too_long:
                    pending += chunk[start:]
                    if len(pending) > limit:
                        too_long = True
                        pending.clear()
                break
            if not too_long:
                pending += chunk[start:end]
            yield None if too_long or len(pending) > limit else bytes(pending)
            pending.clear()
            too_long = False
            start = end + 1
    if too_long:
        yield None
    elif pending:
        yield bytes(pending)


class _ParquetRows:
    """Rows of a Parquet file, read a batch of ``batch_rows`` at a time; ``columns`` from its schema."""

    def __init__(self, fh: Any, batch_rows: int) -> None:
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(fh)
        except _DATA_ERRORS as exc:
            raise InputStopped(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        self.columns: list[str] = list(self.file.schema_arrow.names)
        self.batch_rows = batch_rows

    def __iter__(self) -> Iterator[dict[str, Any] | BadRow]:
        for batch in self.file.iter_batches(batch_size=self.batch_rows):
            yield from batch.to_pylist()


# ------------------------------------------------------------------------------------- the Hub


def hub_label(spec: dict[str, Any]) -> str:
    config = f"{spec['config']}/" if spec.get("config") else ""
    return f"{spec['dataset']}[{config}{spec['split']}]"


def _hub_input(spec: dict[str, Any], roots: LocalRoots | None, where: str) -> TableInput:
    label = hub_label(spec)
    revision = _hub_revision(spec, where)
    extra = {"dataset": spec["dataset"], "config": spec.get("config"), "split": spec["split"],
             "revision": revision or spec.get("revision")}
    return TableInput(label=label, base=None, roots=roots, raw_extra={SOURCE_KEY: extra},
                      read=lambda rows: _hub_batches(spec, revision, rows, where))


def _hub_revision(spec: dict[str, Any], where: str) -> str | None:
    """The commit a Hub dataset's revision (a branch, tag or commit; default main) is at now; None
    offline (HF_HUB_OFFLINE: datasets then reads its cache)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().dataset_info(spec["dataset"], revision=spec.get("revision")).sha
    except OfflineModeIsEnabled:
        return None
    except RevisionNotFoundError:
        raise ConfigError(f"{where}: dataset {spec['dataset']!r} has no revision {spec.get('revision')!r}") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{where}: dataset {spec['dataset']!r} not found on the Hub (or private: set HF_TOKEN)") \
            from None


def _hub_batches(spec: dict[str, Any], revision: str | None, batch_rows: int, where: str) -> Iterator[Batch]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        ds = datasets.load_dataset(spec["dataset"], spec.get("config"), split=spec["split"],
                                   revision=revision or spec.get("revision"), streaming=True)
    except (DatasetNotFoundError, ValueError, FileNotFoundError, ConnectionError) as exc:
        # not found, an unknown split or config, offline without a cached copy
        raise ConfigError(f"{where}: dataset {spec['dataset']!r}: {type(exc).__name__}: {exc}") from None
    ds = ds.decode(False)  # images and audio as their stored bytes, not decoded objects
    yield from batched(iter(ds), batch_rows, list(ds.column_names) if ds.column_names else None)
