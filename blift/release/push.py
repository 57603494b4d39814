"""``blift push``: upload a release folder to a Hugging Face dataset repo, resumably.

What goes up: ``README.md``, ``release.json``, ``stats.json``, ``assets/``, ``data/`` and
``media/`` of the release (nothing else in the folder). The work is a plan computed from the
local files and the Hub's listing at one commit, then carried out in commits:

1. **Files first, card last.** ``media/``, ``assets/``, ``stats.json`` and ``data/`` go up in
   commits of at most ``max_files_per_commit`` files (media before data, so no committed row points
   at a file the repo lacks), and ``README.md`` + ``release.json`` go in the **last** commit: a
   half-pushed repo never advertises configs, splits or counts it does not hold yet.
2. **Resumable, nothing sent twice.** A file is skipped when the Hub already has the same bytes at
   its path: same size, then the same sha256 (LFS files) or git blob id (regular files) from
   ``list_repo_tree``; sizes that differ need no hashing. So rerunning after an interruption sends
   only what is missing or different. LFS content uploaded by a commit that then failed is not sent
   again either: the LFS batch endpoint reports it as present.
3. **One split, one numbering.** In the last commit, Hub shards of a split the release holds that
   are not in the release (an older ``train-00002-of-00003`` after the split shrank to two shards)
   are deleted; otherwise ``data/<config>/<split>-*`` would read stale rows (taken-down ones too).
4. **Retries.** A commit refused with 409 (concurrent commit), 412 (``parent_commit`` is stale: the
   branch moved), 429 or 5xx, or cut by a network error, is retried with backoff (blift.retry,
   bounded): the Hub listing is read again, the batch is planned again against it and sent with the
   fresh head as ``parent_commit``. Every commit names its parent, so a concurrent writer can never
   be silently overwritten.

**Append** (``append=True``): the release holds *new* shards for some config/split (a later
collection), and the Hub keeps what it has. A local shard is **new** when its content (sha256 /
git blob id) is not the content of any Hub shard of the same config and split; a local shard with
the same bytes as a Hub shard is already there (under whatever number) and is skipped. Rows are not
compared: append a release built from the new collection only, or its rows are published twice.
For every split with new shards, the Hub's shards (in their order) followed by the new ones (in
local order) are renumbered ``<split>-0000i-of-0000N`` with N the new total: Hub shards are renamed
on the server (copy + delete, no re-upload) and the new ones added, all in ONE commit together with
the card, so a reader sees either the old split or the whole new one. The card is rendered again
(``README.md``, ``assets/``) from a merged ``release.json``: the Hub's, with each appended split's
rows and file list updated and the release's own fields (version, pipeline, dates) taken from the
local one; a card left as it was would keep the old split sizes, which ``load_dataset`` refuses.
Rendering reads every shard, so append downloads the Hub's data shards (not its media) once.
Both sides need a ``release.json``.

**Prune** (``prune=True``, after a takedown): also deletes Hub files under ``data/`` and ``media/``
that the release no longer has (whole configs left out, media of removed items), in the last commit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from blift.errors import BliftError, CredentialError, causes
from blift.ids import file_sha256
from blift.release.manifest import (
    ASSETS_DIR,
    MANIFEST_NAME,
    STATS_NAME,
    ReleaseManifest,
    SplitFiles,
    write_manifest,
)
from blift.retry import RetriesExhausted, backoff_delay, call_with_retries

FINAL_FILES = ("README.md", MANIFEST_NAME)  # committed last, together
TOP_DIRS = ("media", "assets", "data")  # upload order of the folders: media before the rows that point at it
PRUNED_DIRS = ("data", "media")
SHARD_RE = re.compile(r"^data/(?P<config>[^/]+)/(?P<split>[^/]+?)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")
RETRY_STATUS = frozenset({408, 409, 412, 429, 500, 502, 503, 504})


class PushError(BliftError):
    """The release cannot be pushed (not a release, no token, privacy mismatch, Hub refused...)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a refused commit is retried (exponential backoff with jitter)."""

    attempts: int = 6
    initial_s: float = 2.0
    max_s: float = 60.0


@dataclass
class PushReport:
    repo_id: str
    url: str
    revision: str
    created: bool = False  # the repo did not exist and was created
    uploaded: list[str] = field(default_factory=list)  # paths committed with content the Hub lacked
    skipped: list[str] = field(default_factory=list)  # paths the Hub already had with the same bytes
    renamed: dict[str, str] = field(default_factory=dict)  # append: Hub path -> its new number
    deleted: list[str] = field(default_factory=list)  # superseded shards, pruned files
    commits: list[str] = field(default_factory=list)  # commit ids made, in order
    bytes_uploaded: int = 0  # sum of the sizes of `uploaded`
    retries: int = 0  # commits retried after 409/412/429/5xx/network errors
    warnings: list[str] = field(default_factory=list)

    @property
    def files_uploaded(self) -> int:
        return len(self.uploaded)

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)

    def summary_lines(self) -> list[str]:
        lines = [f"{self.url} @ {self.revision}" + (" (created)" if self.created else ""),
                 f"uploaded {len(self.uploaded)} file(s), {self.bytes_uploaded:,} bytes, in {len(self.commits)} "
                 f"commit(s); {len(self.skipped)} already on the Hub"]
        if self.renamed:
            lines.append(f"renumbered {len(self.renamed)} Hub shard(s)")
        if self.deleted:
            lines.append(f"deleted {len(self.deleted)} Hub file(s)")
        if self.retries:
            lines.append(f"{self.retries} commit retry(ies)")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


# --------------------------------------------------------------------------- local and remote files


@dataclass
class _Local:
    path: str  # path in the repo (posix)
    file: Path
    size: int

    @cached_property
    def sha256(self) -> str:
        return file_sha256(self.file)

    @cached_property
    def git_oid(self) -> str:
        """The git blob id: SHA-1 of a ``blob <size>\\0`` header, then the content."""
        return file_sha256(self.file, digest=lambda: hashlib.sha1(b"blob %d\0" % self.size))


@dataclass(frozen=True)
class _Remote:
    size: int
    blob_oid: str | None = None
    lfs_sha256: str | None = None
    committed_sha256: str | None = None  # set for files this push committed (content known, no listing needed)


def _same(local: _Local, remote: _Remote | None) -> bool:
    """Whether the Hub holds exactly ``local``'s bytes (hashing only when the sizes agree)."""
    if remote is None or remote.size != local.size:
        return False
    if remote.committed_sha256 is not None:
        return remote.committed_sha256 == local.sha256
    if remote.lfs_sha256:
        return remote.lfs_sha256 == local.sha256
    return remote.blob_oid == local.git_oid


def _inventory(release_dir: Path) -> dict[str, _Local]:
    """The release's files in upload order: media, assets, stats.json, data, then the card files."""
    if not (release_dir / "README.md").is_file() or not (release_dir / "data").is_dir():
        raise PushError(f"{release_dir}: not a release folder (needs README.md and data/); run `blift release`")
    ordered: list[_Local] = []
    for top in TOP_DIRS:
        root = release_dir / top
        files = (sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
                 if root.is_dir() else [])
        part = [_Local(p.relative_to(release_dir).as_posix(), p, p.stat().st_size) for p in files]
        if top == "data":
            ordered += [f for f in part if f.path.endswith(".parquet")]
        else:
            ordered += part
        if top == "assets" and (release_dir / STATS_NAME).is_file():
            p = release_dir / STATS_NAME
            ordered.append(_Local(STATS_NAME, p, p.stat().st_size))
    for name in FINAL_FILES:
        p = release_dir / name
        if p.is_file():
            ordered.append(_Local(name, p, p.stat().st_size))
    return {f.path: f for f in ordered}


def _check_card(readme: Path) -> None:
    """Refuse a card whose YAML front matter is broken before anything is uploaded (the Hub would
    refuse it only in the last commit)."""
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return
    end = text.find("\n---", 4)
    try:
        if end < 0:
            raise yaml.YAMLError("front matter is not closed by '---'")
        meta = yaml.safe_load(text[4:end])
        if meta is not None and not isinstance(meta, dict):
            raise yaml.YAMLError("front matter is not a mapping")
    except yaml.YAMLError as exc:
        raise PushError(f"{readme}: invalid YAML front matter: {exc}") from None


def _shard_key(path: str) -> tuple[str, str, int] | None:
    m = SHARD_RE.match(path)
    return (m["config"], m["split"], int(m["index"])) if m else None


def _shard_name(config: str, split: str, index: int, total: int) -> str:
    return f"data/{config}/{split}-{index:05d}-of-{total:05d}.parquet"


# --------------------------------------------------------------------------- errors and retries


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retryable(exc: BaseException) -> bool:
    """409/412/429/5xx answers and network errors, anywhere in the cause chain (huggingface_hub
    wraps LFS upload failures in RuntimeError)."""
    import httpx2

    for cur in causes(exc, limit=6):
        status = _status_of(cur)
        if status is not None:
            return status in RETRY_STATUS
        if isinstance(cur, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return True
    return False


# --------------------------------------------------------------------------- the push


@dataclass
class _Batch:
    operations: list[Any]
    adds: list[_Local]  # local files added under their own path
    renamed_adds: dict[str, _Local] = field(default_factory=dict)  # append: new path -> local file
    renamed: dict[str, str] = field(default_factory=dict)  # Hub path -> new path (copy + delete)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.operations)


class _Push:
    def __init__(self, api: Any, release_dir: Path, repo_id: str, *, revision: str, append: bool, prune: bool,
                 max_files: int, retry: RetryPolicy, report: PushReport, progress: Any) -> None:
        self.api, self.release_dir, self.repo_id, self.revision = api, release_dir, repo_id, revision
        self.append, self.prune, self.max_files, self.retry = append, prune, max_files, retry
        self.report, self.progress = report, progress
        self.local = _inventory(release_dir)
        self.head = ""
        self.remote: dict[str, _Remote] = {}
        self.pending: list[_Local] = []
        self.planned_once = False
        self.scratch = Path(tempfile.mkdtemp(prefix="blift-push-"))  # removed by push_release

    # ---------------------------------------------------------------- remote state

    def refresh(self) -> None:
        """Read the branch head, then the whole tree at that commit (one consistent snapshot)."""
        from huggingface_hub import RepoFile

        self.head = self.api.repo_info(self.repo_id, repo_type="dataset", revision=self.revision).sha
        remote = {}
        for entry in self.api.list_repo_tree(self.repo_id, repo_type="dataset", revision=self.head, recursive=True):
            if isinstance(entry, RepoFile):
                remote[entry.path] = _Remote(size=entry.size, blob_oid=entry.blob_id,
                                             lfs_sha256=entry.lfs.sha256 if entry.lfs else None)
        self.remote = remote
        was_pending = {f.path for f in self.pending}
        self.pending = []
        for f in self.local.values():
            if f.path in FINAL_FILES or (self.append and (_shard_key(f.path) or f.path.startswith("assets/"))):
                continue  # these go in the last commit (append: the card and its plots are rendered again)
            if _same(f, self.remote.get(f.path)):
                if not self.planned_once or f.path in was_pending:  # (a lost answer to our own commit, too)
                    self.report.skipped.append(f.path)
            else:
                self.pending.append(f)
        self.planned_once = True

    # ---------------------------------------------------------------- planning

    def next_upload_batch(self) -> _Batch:
        from huggingface_hub import CommitOperationAdd

        while self.pending and _same(self.pending[0], self.remote.get(self.pending[0].path)):
            self.report.skipped.append(self.pending.pop(0).path)
        batch = [f for f in self.pending[: self.max_files] if not _same(f, self.remote.get(f.path))]
        return _Batch(operations=[_add(CommitOperationAdd, f.path, f) for f in batch], adds=batch)

    def final_batch(self) -> _Batch:
        """The last commit: card files, superseded or pruned deletions, append renumbering."""
        from huggingface_hub import (
            CommitOperationAdd,
            CommitOperationCopy,
            CommitOperationDelete,
        )

        b = _Batch(operations=[], adds=[])
        local_splits: dict[tuple[str, str], list[_Local]] = {}
        for f in self.local.values():
            key = _shard_key(f.path)
            if key:
                local_splits.setdefault(key[:2], []).append(f)
        hub_splits: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for path in self.remote:
            key = _shard_key(path)
            if key:
                hub_splits.setdefault(key[:2], []).append((key[2], path))

        delete: set[str] = set()
        manifest_files: dict[tuple[str, str], list[str]] = {}
        if self.append:
            for split_key, local_files in sorted(local_splits.items()):
                hub_files = [p for _, p in sorted(hub_splits.get(split_key, []))]
                new = [f for f in local_files if not any(_same(f, self.remote[p]) for p in hub_files)]
                self.report.skipped += [f.path for f in local_files
                                        if f not in new and f.path not in self.report.skipped]
                if not new:
                    continue
                total = len(hub_files) + len(new)
                names = [_shard_name(*split_key, i, total) for i in range(total)]
                manifest_files[split_key] = names
                for old, target in zip(hub_files, names):
                    if old != target:
                        b.renamed[old] = target
                for f, target in zip(new, names[len(hub_files):]):
                    b.renamed_adds[target] = f
            delete |= set(b.renamed) - _written_paths(b)
        else:
            for split_key, local_files in local_splits.items():
                keep = {f.path for f in local_files}
                delete |= {p for _, p in hub_splits.get(split_key, []) if p not in keep}
        if self.prune:
            delete |= {p for p in self.remote if p.split("/", 1)[0] in PRUNED_DIRS and p not in self.local}
        b.deleted = sorted(delete)

        ops: list[Any] = [CommitOperationDelete(path_in_repo=p, is_folder=False) for p in b.deleted]
        ops += [CommitOperationCopy(src_path_in_repo=old, path_in_repo=new) for old, new in b.renamed.items()]
        ops += [_add(CommitOperationAdd, path, f) for path, f in b.renamed_adds.items()]
        if self.append:  # nothing new: the Hub's card describes the whole dataset, the local one a part
            finals = self._append_card(manifest_files, b) if manifest_files else []
        else:
            finals = [self.local[n] for n in FINAL_FILES if n in self.local]
        for f in finals:
            if not _same(f, self.remote.get(f.path)):
                b.adds.append(f)
                ops.append(_add(CommitOperationAdd, f.path, f))
            elif f.path not in self.report.skipped:
                self.report.skipped.append(f.path)
        b.operations = ops
        return b

    def _append_card(self, files: dict[tuple[str, str], list[str]], batch: _Batch) -> list[_Local]:
        """release.json, README.md and assets/ for the appended repo, rendered from the merged manifest.

        The card is rendered by :func:`blift.release.card.write_card` in a scratch folder laid out as
        the repo will be after the commit: the Hub's shards (downloaded, or the identical local file)
        under their new names, the new local shards, the merged ``release.json`` and the local
        ``stats.json``. A card left as it was would carry the old split sizes in ``dataset_info``,
        and ``load_dataset`` refuses a split whose size differs from the card's."""
        from blift.release.card import write_card

        if not batch.renamed and MANIFEST_NAME not in self.remote:  # nothing on the Hub to merge with
            local_assets = [f for p, f in self.local.items() if p.startswith(f"{ASSETS_DIR}/")]
            return [self.local[n] for n in FINAL_FILES if n in self.local] + local_assets
        if MANIFEST_NAME not in self.local or MANIFEST_NAME not in self.remote:
            side = "the release" if MANIFEST_NAME not in self.local else f"{self.repo_id} on the Hub"
            raise PushError(f"append: {side} has no {MANIFEST_NAME}, so the merged card cannot be written; "
                            f"push without append (replacing the Hub's splits) or rebuild with `blift release`")
        scratch = Path(tempfile.mkdtemp(prefix="card-", dir=self.scratch))
        hub = ReleaseManifest.model_validate_json(self._hub_file(MANIFEST_NAME).read_bytes())
        local = ReleaseManifest.model_validate_json(self.local[MANIFEST_NAME].file.read_bytes())
        merged = local.model_copy(deep=True)
        merged.configs = {name: cfg.model_copy(deep=True) for name, cfg in hub.configs.items()}
        new_files = {target: f for target, f in batch.renamed_adds.items()}
        for (config, split), names in files.items():
            cfg = merged.configs.get(config) or local.configs[config].model_copy(deep=True, update={"splits": {}})
            merged.configs[config] = cfg
            hub_rows = hub.configs[config].splits[split].rows if config in hub.configs and \
                split in hub.configs[config].splits else 0
            new_rows = sum(pq_rows(new_files[n].file) for n in names if n in new_files)
            cfg.splits[split] = SplitFiles(rows=hub_rows + new_rows, files=names)
        for key, value in hub.collection_window.items():
            mine = merged.collection_window.get(key)
            if value is not None and mine is not None:
                merged.collection_window[key] = min(value, mine) if key.endswith("_min") else max(value, mine)
            elif mine is None:
                merged.collection_window[key] = value
        media = {p: r.size for p, r in self.remote.items() if p.startswith("media/")}
        media.update({p: f.size for p, f in self.local.items() if p.startswith("media/")})
        merged.media_files, merged.media_bytes = len(media), sum(media.values())
        merged.takedowns = hub.takedowns + [t for t in local.takedowns if t not in hub.takedowns]
        write_manifest(scratch, merged)

        # the repo as it will be: every file the merged manifest lists, new name -> its content
        source_of = {new: old for old, new in batch.renamed.items()}
        for cfg in merged.configs.values():
            for sf in cfg.splits.values():
                for name in sf.files:
                    if name in new_files:
                        content = new_files[name].file
                    else:
                        hub_path = source_of.get(name, name)
                        same = next((f.file for f in self.local.values() if _shard_key(f.path)
                                     and _same(f, self.remote.get(hub_path))), None)
                        content = same or self._hub_file(hub_path)
                    (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(Path(content).resolve(), scratch / name)
        if (self.release_dir / STATS_NAME).is_file():
            shutil.copy2(self.release_dir / STATS_NAME, scratch / STATS_NAME)
        try:
            write_card(scratch, repo_id=self.repo_id)
        except BliftError as exc:
            raise PushError(f"append: the card of the merged release cannot be rendered: {exc}") from exc
        out = [_Local(n, scratch / n, (scratch / n).stat().st_size) for n in FINAL_FILES]
        assets = sorted((scratch / ASSETS_DIR).glob("*")) if (scratch / ASSETS_DIR).is_dir() else []
        out += [_Local(f"{ASSETS_DIR}/{p.name}", p, p.stat().st_size) for p in assets if p.is_file()]
        return out

    def _hub_file(self, path: str) -> Path:
        """A Hub file at the planned head, downloaded into this push's scratch cache."""
        return Path(self.api.hf_hub_download(self.repo_id, path, repo_type="dataset", revision=self.head,
                                             cache_dir=str(self.scratch / "hub-cache")))

    # ---------------------------------------------------------------- committing

    def run(self) -> None:
        self.refresh()
        total = sum(f.size for f in self.local.values() if not _same(f, self.remote.get(f.path)))
        task = self.progress.add_task("push", total=total) if self.progress else None
        n = 0
        while True:
            n += 1

            def title(b: _Batch, part: int = n) -> str:
                return f"Upload {len(b.adds)} file(s) (blift push, part {part})"

            done = self._commit(self.next_upload_batch, title, task)
            if done is None:
                break
        if self.append:
            self._preupload_appended()
        self._commit(self.final_batch, lambda b: "Update dataset card and release manifest (blift push)"
                     if not (b.renamed or b.renamed_adds) else
                     f"Append {len(b.renamed_adds)} shard(s), renumber {len(b.renamed)} (blift push)", task)
        if task is not None:  # the plan's estimate counted appended shards by their local names
            done = next(t.completed for t in self.progress.tasks if t.id == task)
            self.progress.update(task, total=done, completed=done)

    def _preupload_appended(self) -> None:
        """Send the content of appended shards before the one commit that names them (LFS upload is by
        content, so a retried final commit does not send it again)."""
        from huggingface_hub import CommitOperationAdd

        batch = self.final_batch()
        adds = [op for op in batch.operations if isinstance(op, CommitOperationAdd)]
        for i in range(0, len(adds), self.max_files):
            chunk = adds[i:i + self.max_files]

            def upload(chunk: list[Any] = chunk) -> Any:
                return self.api.preupload_lfs_files(self.repo_id, additions=chunk, repo_type="dataset",
                                                    revision=self.revision)

            self._with_retry(upload)

    def _with_retry(self, fn: Callable[[], Any], before_retry: Callable[[], None] | None = None) -> Any:
        def counted(attempt: int, exc: BaseException, delay: float) -> None:
            self.report.retries += 1

        try:
            return call_with_retries(fn, attempts=self.retry.attempts, retry_on=_retryable, on_retry=counted,
                                     wait=lambda n, _: backoff_delay(n, self.retry.initial_s, self.retry.max_s),
                                     before_retry=before_retry)[0]
        except RetriesExhausted as gave_up:
            raise gave_up.last from gave_up.last.__cause__

    def _commit(self, build: Callable[[], _Batch], title: Callable[[_Batch], str], task: Any) -> _Batch | None:
        """Plan a batch against the Hub state, commit it on the current head; on a retryable refusal
        read the Hub again and plan again. Returns the committed batch, or None when nothing was left."""
        def attempt() -> _Batch | None:
            batch = build()
            if not batch:
                return None
            info = self.api.create_commit(self.repo_id, operations=batch.operations, commit_message=title(batch),
                                          repo_type="dataset", revision=self.revision, parent_commit=self.head)
            self._committed(batch, info.oid, task)
            return batch

        return self._with_retry(attempt, before_retry=self.refresh)

    def _committed(self, batch: _Batch, oid: str, task: Any) -> None:
        self.head = oid
        self.report.commits.append(oid)
        for old, new in batch.renamed.items():
            self.remote[new] = self.remote[old]
            self.report.renamed[old] = new
        for path in batch.deleted:
            if path not in batch.renamed.values():
                self.remote.pop(path, None)
        self.report.deleted += [p for p in batch.deleted if p not in self.report.deleted]
        added = [(f.path, f) for f in batch.adds] + list(batch.renamed_adds.items())
        for path, f in added:
            self.remote[path] = _Remote(size=f.size, committed_sha256=f.sha256)
            self.report.uploaded.append(path)
            self.report.bytes_uploaded += f.size
        done = {f.path for f in batch.adds}
        self.pending = [f for f in self.pending if f.path not in done]
        if task is not None:
            self.progress.update(task, advance=sum(f.size for _, f in added),
                                 description=f"push: {len(self.report.commits)} commit(s)")


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _written_paths(batch: _Batch) -> set[str]:
    """Paths a batch writes (a renamed Hub file must not be deleted when its new name is one of them)."""
    return set(batch.renamed.values()) | set(batch.renamed_adds)


def _add(cls: Any, path: str, f: _Local) -> Any:
    op = cls(path_in_repo=path, path_or_fileobj=str(f.file))
    if "sha256" in f.__dict__:  # already hashed while comparing with the Hub: do not read the file again
        try:
            op.upload_info.sha256 = bytes.fromhex(f.sha256)
        except AttributeError:  # an UploadInfo without a settable sha256: it hashes the file itself
            pass
    return op


def resolve_token(token: str | None) -> str:
    """The token to push with: the argument, else ``HF_TOKEN``, else the one ``hf auth login`` saved."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise CredentialError(
            "no Hugging Face token: pass --token, set HF_TOKEN, or log in once with `hf auth login` "
            "(a token with write access: https://huggingface.co/settings/tokens)")
    return found


def push_release(
    release_dir: Path,
    repo_id: str,
    *,
    private: bool = False,
    append: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    max_files_per_commit: int = 50,
    progress: bool = True,
    prune: bool = False,
    retry: RetryPolicy | None = None,
) -> PushReport:
    """Push the release in ``release_dir`` to the dataset repo ``repo_id`` (created if missing).

    Rerunning after an interruption uploads only what the Hub lacks. See the module docstring for
    the order of commits, ``append`` and ``prune``.
    """
    release_dir = Path(release_dir)
    if max_files_per_commit < 1:
        raise PushError(f"max_files_per_commit must be at least 1, got {max_files_per_commit}")
    if append and prune:
        raise PushError("append keeps the Hub's shards and prune deletes what the release lacks: use one of them")
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise PushError(f"repo id {repo_id!r}: expected 'namespace/name'")
    _inventory(release_dir)  # fail on a non-release before touching the network
    _check_card(release_dir / "README.md")
    token = resolve_token(token)

    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import disable_progress_bars

    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: pushing needs the Hub; unset it for this command")
    api = HfApi(endpoint=endpoint, token=token)
    report = PushReport(repo_id=repo_id, url=f"{api.endpoint}/datasets/{repo_id}", revision=revision)
    policy = retry or RetryPolicy()

    push: _Push | None = None
    try:
        with disable_progress_bars():
            _ensure_repo(api, repo_id, revision=revision, private=private, report=report)
            push = _Push(api, release_dir, repo_id, revision=revision, append=append, prune=prune,
                         max_files=max_files_per_commit, retry=policy, report=report,
                         progress=_progress_bar() if progress else None)
            if push.progress is not None:
                with push.progress:
                    push.run()
            else:
                push.run()
    except (BliftError, ImportError):
        raise  # configuration problems and a broken install are not "rerun to resume"
    except Exception as exc:
        raise _push_error(exc, repo_id, report) from exc
    finally:
        if push is not None:
            shutil.rmtree(push.scratch, ignore_errors=True)
    if append and not report.renamed and not any(_shard_key(p) for p in report.uploaded):
        report.warnings.append("append: no shard of the release is new to the Hub; nothing was appended")
    return report


def _ensure_repo(api: Any, repo_id: str, *, revision: str, private: bool, report: PushReport) -> None:
    """Create the dataset repo (and branch) if missing; never push private data into a public repo."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        report.url, report.created = str(url), True
        info = api.repo_info(repo_id, repo_type="dataset")
    if private and not info.private:
        raise PushError(f"{repo_id} exists and is public, but private=True was asked: nothing uploaded; "
                        f"make it private on the Hub first or push without --private")
    if revision != "main":
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)


def _push_error(exc: Exception, repo_id: str, report: PushReport) -> PushError:
    status = _status_of(exc)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = (f"push to {repo_id} stopped after {len(report.commits)} commit(s) "
             f"({len(report.uploaded)} file(s) committed)")
    if status in (401, 403):
        return PushError(f"{where}: the Hub refused the token (HTTP {status}); it needs write access to {repo_id} "
                         f"(https://huggingface.co/settings/tokens): {first_line}")
    return PushError(f"{where}: {type(exc).__name__}{f' (HTTP {status})' if status else ''}: {first_line}; "
                     f"rerun the same command to resume (files already on the Hub are not sent again)")


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True))
