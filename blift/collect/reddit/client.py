"""Building a read-only ``praw.Reddit`` from a stage config, the environment or ``praw.ini``.

Precedence for each setting: the stage config, then ``REDDIT_CLIENT_ID`` /
``REDDIT_CLIENT_SECRET`` / ``REDDIT_USER_AGENT``, then the ``praw.ini`` section named by
``site`` (praw itself also reads ``praw_client_id``-style variables). Secrets are resolved when
the client is built, never stored in the config, so they stay out of config hashes and logs.

Rate limiting, as relied on here:

* prawcore paces every request by Reddit's ``x-ratelimit-remaining/used/reset`` headers
  (spreading the remaining budget over the rest of the window, sleeping until the reset when
  it reaches 0). That is the primary limiter and needs no configuration.
* ``requests_per_minute`` is an extra, local cap (for a shared token or a polite mirror):
  :class:`PacedRequestor` spaces HTTP requests of this process at least ``60 / rpm`` apart.
* prawcore itself retries 5xx (500/502/503/504/520/522) and connection errors / read
  timeouts twice, sleeping 0-2 s then 2-4 s; it does not retry 429 (``TooManyRequests``).
  The stages add their own bounded retries on top (see ``api``).

praw 8 sends every API call with prawcore's fixed default timeout (16 s, or the
``PRAWCORE_TIMEOUT`` variable at import), ignoring praw's ``timeout`` setting; the
:class:`PacedRequestor` applies ``timeout_s`` to every request instead. It is passed through
praw's documented ``requestor_class`` hook, not by patching anything.
"""

from __future__ import annotations

import configparser
import os
import threading
import time
from typing import Any

import prawcore
from pydantic import Field

from blift import __version__
from blift.errors import CredentialError
from blift.stage import StageConfig

ENV_VARS = {"client_id": "REDDIT_CLIENT_ID", "client_secret": "REDDIT_CLIENT_SECRET", "user_agent": "REDDIT_USER_AGENT"}
DEFAULT_USER_AGENT = f"python:blift:{__version__} (dataset collector; set REDDIT_USER_AGENT to identify yourself)"


class RedditClientConfig(StageConfig):
    """How to reach Reddit. Shared by every Reddit stage."""

    site: str | None = Field(None, description="a praw.ini section holding client_id / client_secret")
    client_id: str | None = Field(None, description="default: $REDDIT_CLIENT_ID")
    client_secret: str | None = Field(None, description="default: $REDDIT_CLIENT_SECRET")
    user_agent: str | None = Field(None, description="default: $REDDIT_USER_AGENT, else a blift one")
    endpoint: str | None = Field(None, description="one base URL for oauth_url, reddit_url and short_url")
    timeout_s: float = Field(16.0, gt=0, description="per HTTP request")
    requests_per_minute: float | None = Field(None, gt=0, description="extra local cap on top of praw's pacing")
    retries: int = Field(3, ge=0, description="extra attempts after a transient failure (on top of prawcore's)")
    backoff_s: float = Field(2.0, ge=0, description="first wait between attempts; doubles each time")
    max_backoff_s: float = Field(60.0, ge=0, description="cap on any single wait, Retry-After included")


class PacedRequestor(prawcore.Requestor):
    """prawcore's requestor with a fixed per-request timeout and an optional minimum spacing."""

    def __init__(self, *args: Any, min_interval_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_interval_s = min_interval_s
        self._next_at = 0.0
        self._pace_lock = threading.Lock()

    def request(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if self.min_interval_s > 0:
            with self._pace_lock:
                wait = self._next_at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._next_at = time.monotonic() + self.min_interval_s
        return super().request(*args, timeout=self.timeout, **kwargs)


def _setting(cfg: RedditClientConfig, key: str) -> str | None:
    value = getattr(cfg, key)
    if value in (None, ""):
        value = os.environ.get(ENV_VARS[key]) or None
    return value


def make_reddit(cfg: RedditClientConfig) -> Any:
    """A read-only ``praw.Reddit``; raises CredentialError naming what to set when incomplete."""
    import praw
    from praw.exceptions import MissingRequiredAttributeException

    settings: dict[str, Any] = {"check_for_updates": False}
    for key in ENV_VARS:
        value = _setting(cfg, key)
        if value is not None:
            settings[key] = value
    if cfg.site is None:
        missing = [ENV_VARS[k] for k in ("client_id", "client_secret") if k not in settings]
        if missing:
            raise CredentialError(
                f"Reddit credentials missing: set {' and '.join(missing)} in the environment "
                f"(or {', '.join(k for k in ('client_id', 'client_secret') if k not in settings)} in the stage "
                "config, or `site:` naming a praw.ini section that holds them). Create a 'script' app at "
                "https://www.reddit.com/prefs/apps to get them."
            )
    settings.setdefault("user_agent", DEFAULT_USER_AGENT)
    if cfg.endpoint:
        base = cfg.endpoint.rstrip("/")
        settings.update(oauth_url=base, reddit_url=base, short_url=base)
    min_interval = 60.0 / cfg.requests_per_minute if cfg.requests_per_minute else 0.0
    try:
        reddit = praw.Reddit(
            cfg.site,
            requestor_class=PacedRequestor,
            requestor_kwargs={"timeout": cfg.timeout_s, "min_interval_s": min_interval},
            **settings,
        )
    except configparser.NoSectionError:
        raise CredentialError(
            f"praw.ini has no section [{cfg.site}] (praw reads ./praw.ini and ~/.config/praw.ini); "
            f"add it with client_id and client_secret, or drop `site:` and set "
            f"{ENV_VARS['client_id']} and {ENV_VARS['client_secret']}"
        ) from None
    except MissingRequiredAttributeException as exc:
        key = next((k for k in ("client_id", "client_secret", "user_agent") if repr(k) in str(exc)), "a setting")
        raise CredentialError(
            f"Reddit credentials missing: praw.ini section [{cfg.site}] has no {key}; add it there or set "
            f"{ENV_VARS.get(key, 'it')} in the environment"
        ) from None
    reddit.read_only = True
    return reddit


def describe_endpoint(cfg: RedditClientConfig) -> str:
    """Where requests go, for logs (never a secret)."""
    if cfg.endpoint:
        return cfg.endpoint.rstrip("/")
    if cfg.site:
        return f"praw.ini site [{cfg.site}]"
    return "https://oauth.reddit.com"
