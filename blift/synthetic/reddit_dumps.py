"""Synthetic Pushshift / Arctic-Shift style Reddit dumps (NDJSON, zstd) for tests and benchmarks.

The records carry the field sets and sizes of real 2022-2023 dump lines (about 1 KB per comment,
2-6 KB per submission with ``preview`` / ``media_metadata``), so parse and row-building costs
measured on them are the costs of real dumps. Deterministic for a given seed.

Used by ``tests/test_dumps.py`` and ``benchmarks/bench_dumps.py``. As a command:
``python -m blift.synthetic.reddit_dumps OUT_DIR --submissions 20000 --comments 200000`` writes
``OUT_DIR/RS_synthetic.zst`` and ``OUT_DIR/RC_synthetic.zst``.
"""

from __future__ import annotations

import argparse
import random
import string
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
import zstandard

SUBREDDITS = [
    "pics", "EarthPorn", "aww", "funny", "AskReddit", "mildlyinteresting", "Art", "food",
    "interestingasfuck", "CozyPlaces", "gaming", "science", "photography", "itookapicture",
    "MostBeautiful", "wallpapers", "dataisbeautiful", "OldSchoolCool", "NatureIsFuckingLit", "cats",
]
_WORDS = (
    "the a of and to in is was it for on that with this my at as be by from so like just but not "
    "look found picture today sunset light mountain lake city cat dog street old new first time "
    "really great love nice beautiful amazing colours shot phone camera view morning night"
).split()
_BASE = 1_672_531_200  # 2023-01-01T00:00:00Z


def b36(n: int) -> str:
    """Reddit-style base36 id."""
    digits = string.digits + string.ascii_lowercase
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))).capitalize()


def _preview(rng: random.Random, url: str, w: int, h: int) -> dict[str, Any]:
    pid = "".join(rng.choices(string.ascii_letters + string.digits, k=43))
    res = [
        {"url": f"https://preview.redd.it/{pid}.jpg?width={rw}&amp;crop=smart&amp;auto=webp&amp;s="
                + "".join(rng.choices("0123456789abcdef", k=40)),
         "width": rw, "height": int(h * rw / w)}
        for rw in (108, 216, 320, 640, 960, 1080)
    ]
    return {"images": [{"source": {"url": url, "width": w, "height": h}, "resolutions": res,
                        "variants": {}, "id": pid}], "enabled": True}


def submission(rng: random.Random, n: int, *, created: int | None = None, subreddit: str | None = None,
               kind: str | None = None) -> dict[str, Any]:
    """One submission dict as a dump line holds it (``kind``: image, gallery, self, link, video)."""
    sid = b36(n)
    sub = subreddit or rng.choice(SUBREDDITS)
    kind = kind or rng.choices(["image", "gallery", "self", "link", "video"], [40, 10, 20, 15, 15])[0]
    created = created if created is not None else _BASE + rng.randint(0, 30 * 86400)
    author = f"user_{rng.randint(0, 50_000)}"
    title = _sentence(rng, 4, 16)
    w, h = rng.choice([(4032, 3024), (1920, 1080), (1080, 1350), (3000, 2000)])
    rec: dict[str, Any] = {
        "all_awardings": [], "allow_live_comments": False, "archived": False, "author": author,
        "author_created_utc": _BASE - rng.randint(0, 10**8), "author_flair_background_color": None,
        "author_flair_css_class": None, "author_flair_richtext": [], "author_flair_template_id": None,
        "author_flair_text": None, "author_flair_text_color": None, "author_flair_type": "text",
        "author_fullname": f"t2_{b36(rng.randint(10**6, 10**9))}", "author_is_blocked": False,
        "author_patreon_flair": False, "author_premium": False, "awarders": [], "banned_by": None,
        "can_gild": True, "can_mod_post": False, "category": None, "clicked": False,
        "content_categories": None, "contest_mode": False, "created": created, "created_utc": created,
        "discussion_type": None, "distinguished": None, "domain": "i.redd.it", "downs": 0,
        "edited": False, "gilded": 0, "gildings": {}, "hidden": False, "hide_score": False,
        "id": sid, "is_created_from_ads_ui": False, "is_crosspostable": True, "is_meta": False,
        "is_original_content": False, "is_reddit_media_domain": True, "is_robot_indexable": True,
        "is_self": False, "is_video": False, "likes": None, "link_flair_background_color": "",
        "link_flair_css_class": None, "link_flair_richtext": [], "link_flair_text": None,
        "link_flair_text_color": "dark", "link_flair_type": "text", "locked": False, "media": None,
        "media_embed": {}, "media_only": False, "mod_reason_by": None, "mod_reason_title": None,
        "mod_reports": [], "name": f"t3_{sid}", "no_follow": False,
        "num_comments": rng.randint(0, 500), "num_crossposts": rng.randint(0, 3),
        "num_reports": None, "over_18": rng.random() < 0.05, "parent_whitelist_status": "all_ads",
        "permalink": f"/r/{sub}/comments/{sid}/{'_'.join(title.lower().split()[:6])}/",
        "pinned": False, "pwls": 6, "quarantine": False, "removal_reason": None, "removed_by": None,
        "removed_by_category": None, "report_reasons": None, "retrieved_on": created + rng.randint(3600, 86400 * 30),
        "saved": False, "score": rng.randint(0, 50_000), "secure_media": None,
        "secure_media_embed": {}, "selftext": "", "send_replies": True, "spoiler": False,
        "stickied": False, "subreddit": sub, "subreddit_id": f"t5_{b36(zlib.crc32(sub.encode()) % 10**7)}",
        "subreddit_name_prefixed": f"r/{sub}", "subreddit_subscribers": rng.randint(10**4, 4 * 10**7),
        "subreddit_type": "public", "suggested_sort": None, "thumbnail": "https://b.thumbs.redditmedia.com/x.jpg",
        "thumbnail_height": 140, "thumbnail_width": 140, "title": title, "top_awarded_type": None,
        "total_awards_received": 0, "treatment_tags": [], "ups": 0,
        "upvote_ratio": round(rng.uniform(0.5, 1.0), 2), "url": "", "user_reports": [],
        "view_count": None, "visited": False, "whitelist_status": "all_ads", "wls": 6,
    }
    if kind == "image":
        url = f"https://i.redd.it/{''.join(rng.choices(string.ascii_lowercase + string.digits, k=13))}.jpg"
        rec.update(url=url, url_overridden_by_dest=url, post_hint="image", preview=_preview(rng, url, w, h))
    elif kind == "gallery":
        ids = ["".join(rng.choices(string.ascii_lowercase + string.digits, k=13)) for _ in range(rng.randint(2, 6))]
        rec.update(
            url=f"https://www.reddit.com/gallery/{sid}", is_gallery=True, domain="reddit.com",
            gallery_data={"items": [{"media_id": m, "id": rng.randint(10**7, 10**8)} for m in ids]},
            media_metadata={m: {"status": "valid", "e": "Image", "m": "image/jpg",
                                "p": [{"y": 108, "x": 108, "u": f"https://preview.redd.it/{m}.jpg?width=108&amp;s=abc"}],
                                "s": {"y": h, "x": w, "u": f"https://preview.redd.it/{m}.jpg?width={w}&amp;format=pjpg&amp;s=def"},
                                "id": m} for m in ids},
        )
    elif kind == "self":
        rec.update(is_self=True, domain=f"self.{sub}", url=f"https://www.reddit.com{rec['permalink']}",
                   selftext=_sentence(rng, 10, 120), is_reddit_media_domain=False)
    elif kind == "link":
        rec.update(url=f"https://example.com/article/{sid}", domain="example.com", post_hint="link",
                   is_reddit_media_domain=False)
    else:
        url = f"https://v.redd.it/{''.join(rng.choices(string.ascii_lowercase + string.digits, k=13))}"
        rec.update(url=url, is_video=True, domain="v.redd.it", post_hint="hosted:video",
                   media={"reddit_video": {"bitrate_kbps": 2400, "fallback_url": url + "/DASH_720.mp4",
                                           "height": 720, "width": 1280, "duration": rng.randint(5, 120),
                                           "is_gif": False, "transcoding_status": "completed"}})
    return rec


def comment(rng: random.Random, n: int, link: str, parent: str | None, sub: str, created: int) -> dict[str, Any]:
    """One comment dict as a dump line holds it (``parent``: a comment id, or None for top level)."""
    cid = b36(n)
    author = rng.choice(["[deleted]", "AutoModerator"]) if rng.random() < 0.03 else f"user_{rng.randint(0, 50_000)}"
    return {
        "all_awardings": [], "archived": False, "associated_award": None, "author": author,
        "author_created_utc": _BASE - rng.randint(0, 10**8), "author_flair_background_color": None,
        "author_flair_css_class": None, "author_flair_richtext": [], "author_flair_template_id": None,
        "author_flair_text": None, "author_flair_text_color": None, "author_flair_type": "text",
        "author_fullname": f"t2_{b36(rng.randint(10**6, 10**9))}", "author_patreon_flair": False,
        "author_premium": False, "awarders": [], "body": _sentence(rng, 3, 60), "can_gild": True,
        "collapsed": False, "collapsed_because_crowd_control": None, "collapsed_reason": None,
        "collapsed_reason_code": None, "comment_type": None, "controversiality": 0,
        "created_utc": created, "distinguished": None, "edited": False, "gilded": 0, "gildings": {},
        "id": cid, "is_submitter": rng.random() < 0.05, "link_id": f"t3_{link}", "locked": False,
        "name": f"t1_{cid}", "no_follow": True, "parent_id": f"t1_{parent}" if parent else f"t3_{link}",
        "permalink": f"/r/{sub}/comments/{link}/_/{cid}/", "retrieved_on": created + rng.randint(3600, 86400 * 30),
        "score": rng.randint(-20, 5000), "score_hidden": False, "send_replies": True, "stickied": False,
        "subreddit": sub, "subreddit_id": f"t5_{b36(zlib.crc32(sub.encode()) % 10**7)}",
        "subreddit_name_prefixed": f"r/{sub}", "subreddit_type": "public", "top_awarded_type": None,
        "total_awards_received": 0, "treatment_tags": [], "unrepliable_reason": None,
    }


def generate(n_submissions: int, n_comments: int,
             seed: int = 0) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(submissions, comments) as lazy iterators; comments reply to earlier comments of the same post."""
    posts: list[tuple[str, str, int]] = []
    rng = random.Random(seed)
    for i in range(n_submissions):  # metadata only, so comments can be generated independently
        posts.append((b36(10**8 + i), rng.choice(SUBREDDITS), _BASE + rng.randint(0, 30 * 86400)))

    def subs() -> Iterator[dict[str, Any]]:
        r = random.Random(seed + 1)
        for i, (_, sub, created) in enumerate(posts):
            yield submission(r, 10**8 + i, created=created, subreddit=sub)

    def comments() -> Iterator[dict[str, Any]]:
        r = random.Random(seed + 2)
        recent: dict[str, list[str]] = {}
        for j in range(n_comments):
            link, sub, created = posts[r.randrange(len(posts))] if posts else (b36(j), "pics", _BASE)
            thread = recent.setdefault(link, [])
            parent = thread[-1 - r.randrange(len(thread))] if thread and r.random() < 0.6 else None
            cid = b36(10**10 + j)
            thread.append(cid)
            if len(thread) > 50:
                del thread[:25]
            yield comment(r, 10**10 + j, link, parent, sub, created + r.randint(60, 86400))

    return subs(), comments()


def write_ndjson_zst(path: Path, records: Iterable[dict[str, Any] | bytes], *, level: int = 3,
                     window_log: int | None = None) -> int:
    """Write records (dicts, or raw line bytes for malformed-line tests) as zstd NDJSON; returns bytes written.

    ``window_log`` > 27 writes frames that need ``max_window_size`` to decode, like Pushshift's ``--long=31``.
    """
    params = zstandard.ZstdCompressionParameters.from_level(level, window_log=window_log) if window_log else None
    cctx = zstandard.ZstdCompressor(compression_params=params) if params else zstandard.ZstdCompressor(level=level)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh, cctx.stream_writer(fh, closefd=False) as out:
        for rec in records:
            out.write(rec if isinstance(rec, bytes) else orjson.dumps(rec))
            out.write(b"\n")
    return path.stat().st_size


def make_dump(folder: Path, n_submissions: int, n_comments: int, *, seed: int = 0, level: int = 3) -> tuple[Path, Path]:
    """Write ``RS_synthetic.zst`` and ``RC_synthetic.zst`` into ``folder``; returns their paths."""
    subs, comments = generate(n_submissions, n_comments, seed)
    rs, rc = folder / "RS_synthetic.zst", folder / "RC_synthetic.zst"
    write_ndjson_zst(rs, subs, level=level)
    write_ndjson_zst(rc, comments, level=level)
    return rs, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--submissions", type=int, default=20_000)
    ap.add_argument("--comments", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rs, rc = make_dump(args.out, args.submissions, args.comments, seed=args.seed)
    print(f"{rs} {rs.stat().st_size} bytes\n{rc} {rc.stat().st_size} bytes")


if __name__ == "__main__":
    main()
