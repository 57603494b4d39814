"""Small Pushshift-shaped dump files for the dump tests (a pytest plugin: see conftest.py).

Every line is chosen for a reason its comment gives: duplicates with newer snapshots, malformed
JSON, missing ids, invalid UTF-8, a 40-deep reply chain, comments of posts not in the dump.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from blift.synthetic.reddit_dumps import comment, submission, write_ndjson_zst

T0 = int(datetime(2023, 1, 10, tzinfo=timezone.utc).timestamp())
CHAIN = 40  # replies nested 40 deep


def _sub(n: int, sid: str, kind: str, sub: str = "pics", created: int = T0, **extra: Any) -> dict[str, Any]:
    rec = submission(random.Random(n), n, created=created, subreddit=sub, kind=kind)
    rec.update(id=sid, name=f"t3_{sid}", **extra)
    return rec


def _com(
    n: int, cid: str, link: str, parent: str | None, created: int, sub: str = "pics", **extra: Any
) -> dict[str, Any]:
    rec = comment(random.Random(n), n, link, parent, sub, created)
    rec.update(id=cid, name=f"t1_{cid}", **extra)
    return rec


def dump_lines() -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(submission lines, comment lines, expectations). Lines are dicts or raw bytes; 1-based numbers."""
    subs: list[Any] = [
        _sub(1, "aa1", "image", retrieved_on=T0 + 100, score=10, author="alice_photos"),  # 1
        _sub(2, "aa2", "gallery", sub="Art"),  # 2
        _sub(3, "aa3", "self"),  # 3
        _sub(4, "aa4", "image", over_18=True),  # 4
        b'{"id": "bad1", "title": ',  # 5 malformed JSON
        b"[1, 2, 3]",  # 6 a list
        orjson.dumps({"title": "no id here", "subreddit": "pics", "created_utc": T0}),  # 7 missing id
        _sub(5, "aa5", "image", score="lots"),  # 8 non-numeric score
        b'{"id": "aa6", "title": "caf\xff\xfe"}',  # 9 invalid UTF-8
        b"",  # 10 empty line
        _sub(1, "aa1", "image", retrieved_on=T0 + 5000, score=99, author="alice_photos"),  # 11 newer snapshot of aa1
        _sub(7, "aa7", "image", created=T0 - 400 * 86400),  # 12 old post (2022)
        _sub(8, "aa8", "link", sub="funny"),  # 13 other subreddit, link post
    ]
    for rec in subs:
        if isinstance(rec, dict) and rec["id"] != "aa1":
            rec.pop("retrieved_on", None)  # only aa1 carries a crawl time
    coms: list[Any] = []
    chain = [f"c{i:02d}" for i in range(CHAIN)]
    for i, cid in enumerate(chain):  # lines 1..40: c00 <- c01 <- ... (each replies to the previous)
        coms.append(_com(100 + i, cid, "aa1", chain[i - 1] if i else None, T0 + 60 * (i + 1), retrieved_on=T0 + 9000))
    coms += [
        _com(200, "c05", "aa1", "c04", T0 + 360, retrieved_on=T0 + 20000, score=777),  # 41 repeat of c05, newer
        _com(201, "d01", "aa2", None, T0 + 10, sub="Art", retrieved_on=T0 + 50),  # 42
        _com(202, "d02", "aa3", None, T0 + 20, retrieved_on=T0 + 50),  # 43
        _com(203, "d03", "zz9", None, T0 + 30, retrieved_on=T0 + 50),  # 44 item not in the dump
        _com(204, "d04", "aa1", "gone1", T0 + 40, retrieved_on=T0 + 50),  # 45 parent missing
        _com(205, "d05", "aa1", "d04", T0 + 45, retrieved_on=T0 + 50),  # 46 reply to the orphan
        b'{"id": "d06", "link_id": "t3_aa1", "body": "unterminated',  # 47 malformed
        orjson.dumps({"id": "d07", "body": "no link", "subreddit": "pics"}),  # 48 missing link_id
        _com(206, "d08", "aa4", None, T0 + 70, sub="pics"),  # 49 on the NSFW post, no retrieved_on
        _com(207, "d09", "aa8", None, T0 + 80, sub="funny", retrieved_on=T0 + 50),  # 50
    ]
    coms[-2].pop("retrieved_on", None)
    expect = {
        "sub_errors": {
            5: "JSONDecodeError", 6: "NotAnObject", 7: "InvalidRecord", 8: "InvalidRecord", 9: "InvalidUTF8",
        },
        "com_errors": {47: "JSONDecodeError", 48: "InvalidRecord"},
    }
    return subs, coms, expect


@pytest.fixture()
def dump_pair(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    subs, coms, expect = dump_lines()
    rs, rc = tmp_path / "dumps" / "RS_2023-01.zst", tmp_path / "dumps" / "RC_2023-01.zst"
    write_ndjson_zst(rs, subs)
    write_ndjson_zst(rc, coms)
    return rs, rc, expect
