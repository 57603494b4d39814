"""Which files a ``folder.scan`` request covers, found without reading any of them.

* **Recursive, sorted.** Every entry under the folder, in sorted order of its POSIX relative path.
* **No link followed.** A symbolic link (to a file or a folder) is listed as itself, never
  entered or opened, so the stage can drop it by name (reason ``symlink``); what it points to is
  never read. Sockets, FIFOs and devices are listed as ``other`` and dropped too.
* **Hidden names** (starting with ``.``: ``.git/``, ``.DS_Store``, macOS ``._clip.mp4``
  companions) are skipped unless the request says ``hidden: true``.
* **Patterns** (``include``, ``exclude``), matched like ``.gitignore`` lines: a pattern without
  ``/`` matches a file's name at any depth (``*.mp4``); a pattern with ``/`` matches the path
  from the folder (``clips/**``, ``2024/*/raw.png``; a leading ``/`` only anchors, ``/*.png`` is
  the top level). ``*`` and ``?`` stay inside one folder name, ``**`` spans folders, ``[abc]`` is
  a set. A file is listed when it matches some ``include`` (or none is given) and no
  ``exclude``; an ``exclude`` ending in ``/**`` also skips walking that folder.

:func:`fingerprint` hashes the listing's names, sizes and modification times (one ``lstat``
per entry, no content), so a request learns when its folder changed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Entry:
    """One listed entry: ``kind`` is file, link (a symbolic link), other (socket, FIFO, device),
    bad_name (a name that is not UTF-8) or unreadable (a folder that could not be listed)."""

    rel: str  # POSIX path relative to the folder
    kind: str
    size: int = 0
    mtime_ns: int = 0


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a usable include/exclude pattern (None when it is)."""
    if not isinstance(pattern, str) or not pattern.strip("/"):
        return f"expected a non-empty pattern string, got {pattern!r}"
    if "\\" in pattern:
        return f"{pattern!r}: use '/' between folder names"
    if ".." in PurePosixPath(pattern).parts:
        return f"{pattern!r}: '..' cannot leave the folder"
    return None


def _translate(pattern: str) -> str:
    out, i, n = [], 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append(f"[{'^' if negate else ''}{body.replace(chr(92), chr(92) * 2)}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


class Pattern:
    """One include/exclude pattern (see the module docstring)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.anchored = "/" in text.rstrip("/")
        body = text.strip("/") if self.anchored else text.rstrip("/")
        self.regex = re.compile(_translate(body) + r"\Z")
        # a folder the walk may skip whole: "clips/**" skips clips/ (only for anchored patterns)
        self.folder = re.compile(_translate(body[:-3]) + r"\Z") if self.anchored and body.endswith("/**") else None

    def matches(self, rel: str) -> bool:
        return bool(self.regex.match(rel if self.anchored else rel.rpartition("/")[2]))

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


@dataclass(frozen=True)
class Selection:
    """What a request selects from its folder."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    skip: frozenset[str] = frozenset()  # relative paths never listed (a sidecar kept in the folder)

    def compiled(self) -> tuple[list[Pattern], list[Pattern]]:
        return [Pattern(p) for p in self.include], [Pattern(p) for p in self.exclude]


def split_glob(folder: str) -> tuple[str, str | None]:
    """``media/clips/*.mp4`` -> (``media/clips``, ``/*.mp4``): the folder part of a glob and the
    rest as an anchored include pattern; (folder, None) when there is no glob character."""
    parts = PurePosixPath(folder.replace(os.sep, "/")).parts
    for i, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            base = str(PurePosixPath(*parts[:i])) if i else "."
            return base, "/" + "/".join(parts[i:])
    return folder, None


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(rel: str) -> str:
    """A relative path as text that any table can hold (undecodable bytes escaped)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def walk(folder: Path, selection: Selection, *, stat: bool = False) -> tuple[list[Entry], Counter[str]]:
    """The entries ``selection`` takes from ``folder`` (sorted by relative path) and counts of
    what it left out (``hidden``, ``excluded``, ``excluded_folders``). ``stat``: fill in size
    and modification time (one ``lstat`` each, never following a link)."""
    include, exclude = selection.compiled()
    entries: list[Entry] = []
    counts: Counter[str] = Counter()
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            scan = os.scandir(folder / prefix if prefix else folder)
        except OSError:
            if not prefix:
                raise
            entries.append(Entry(prefix, "unreadable", 0, 0))  # the stage drops it, saying so
            continue
        with scan:
            for de in scan:
                rel = f"{prefix}/{de.name}" if prefix else de.name
                if not selection.hidden and de.name.startswith("."):
                    counts["hidden"] += 1
                    continue
                try:
                    if de.is_symlink():
                        kind = "link"
                    elif de.is_dir(follow_symlinks=False):
                        if any(p.folder is not None and p.folder.match(rel) for p in exclude):
                            counts["excluded_folders"] += 1
                        else:
                            stack.append(rel)
                        continue
                    elif de.is_file(follow_symlinks=False):
                        kind = "file"
                    else:
                        kind = "other"
                except OSError:
                    kind = "other"
                if rel in selection.skip:
                    continue
                if (include and not any(p.matches(rel) for p in include)) or any(p.matches(rel) for p in exclude):
                    counts["excluded"] += 1
                    continue
                if not _utf8(rel):
                    kind = "bad_name"
                size = mtime_ns = 0
                if stat:
                    try:
                        st = de.stat(follow_symlinks=False)
                        size, mtime_ns = st.st_size, st.st_mtime_ns
                    except OSError:
                        pass
                entries.append(Entry(rel, kind, size, mtime_ns))
    entries.sort(key=lambda e: e.rel)
    return entries, counts


def fingerprint(entries: list[Entry], extra: Sequence[Path] = ()) -> str:
    """A hash of the listing (names, kinds, sizes, modification times) and of ``extra`` files'
    sizes and times (a sidecar): it changes when a file is added, removed, renamed or rewritten."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.rel}\0{e.kind}\0{e.size}\0{e.mtime_ns}\n".encode("utf-8", "surrogateescape"))
    for path in extra:
        st = path.stat()
        h.update(f"\0extra\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]
