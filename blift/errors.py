"""Error types shared by every part of blift.

Record-level errors carry a class that decides what a rerun does with them:
``transient`` ones are retried by ``--retry-failed``, ``permanent`` and ``invalid`` ones are not.
"""

from __future__ import annotations

from enum import Enum


class ErrorClass(str, Enum):
    TRANSIENT = "transient"  # network hiccup, rate limit, timeout: a retry may succeed
    PERMANENT = "permanent"  # gone, private, unsupported: a retry will fail the same way
    INVALID = "invalid"  # the input record itself is malformed


class BliftError(Exception):
    """Base class of errors that end a command with a clear message (no traceback)."""


class ConfigError(BliftError):
    """A pipeline or stage configuration is wrong; the message names file, field and expectation."""


class CredentialError(BliftError):
    """A credential is missing; the message says which variable or praw.ini site to set."""


class SchemaError(BliftError):
    """A shard does not match its table schema; the message names file, record and field."""


class RecordError(Exception):
    """One record failed. Raised inside a stage; the runner turns it into an ``errors`` row."""

    error_class: ErrorClass = ErrorClass.PERMANENT

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__


class TransientError(RecordError):
    error_class = ErrorClass.TRANSIENT


class PermanentError(RecordError):
    error_class = ErrorClass.PERMANENT


class InvalidRecord(RecordError):
    error_class = ErrorClass.INVALID


def classify(exc: BaseException) -> ErrorClass:
    """Error class of any exception: RecordErrors say theirs; timeouts and connection errors are
    transient; everything else is a permanent failure of the record (a bug shows up here too,
    with its type and message, instead of killing the shard)."""
    if isinstance(exc, RecordError):
        return exc.error_class
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def causes(exc: BaseException, limit: int = 10) -> list[BaseException]:
    """The exception and everything it wraps, nearest first, each once: ``__cause__`` and
    ``__context__``, plus the two ways libraries wrap without chaining (yt-dlp's
    ``DownloadError.exc_info`` and ``ExtractorError.cause``). Classifiers look through this for
    the failure that really happened (a timeout under a DownloadError, say)."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(out) < limit:
        cur = todo.pop(0)
        if cur is None or any(cur is seen for seen in out):
            continue
        out.append(cur)
        info = getattr(cur, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1 and isinstance(info[1], BaseException):
            todo.append(info[1])
        cause = getattr(cur, "cause", None)
        if isinstance(cause, BaseException):
            todo.append(cause)
        todo.extend([cur.__cause__, cur.__context__])
    return out
