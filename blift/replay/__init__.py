"""Local stand-ins for platform APIs, serving stored data over the real wire protocols.

They let the real client libraries (praw, requests...) run end to end without the internet:
the bundled sample pipeline, the contract tests and crash/resume tests all talk to them.
"""

from blift.replay.reddit_api import (
    Fault,
    LogEntry,
    RedditStore,
    ReplayServer,
    StoreError,
    write_post,
)

__all__ = ["Fault", "LogEntry", "RedditStore", "ReplayServer", "StoreError", "write_post"]
