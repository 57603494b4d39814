"""Write the bundled sample: a Reddit store folder the fake Reddit API serves (``samples/reddit``).

    python samples/make_sample.py            # rewrites samples/reddit/{posts,media}
    python samples/make_sample.py --out DIR

Deterministic: one seeded generator drives every choice, JSON is written with sorted keys and
images with fixed encoder settings, so a rerun (same Pillow) gives byte-identical files.
Everything is synthetic: titles, comments, user names and images are made up here.

What it holds (see samples/README.md): 36 posts in r/pics, r/EarthPorn, r/itookapicture and
r/Art; image posts (5 with large text for OCR), 3 galleries, a self post, a video post, one
post whose image is missing (404), 2 NSFW, 1 spoiler; 5-30 comments each with replies up to
depth 3, non-English, profane, deleted/removed, AutoModerator, link-only, emoji-only, exact and
near duplicates, very short ones.
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blift.replay.reddit_api import write_post  # noqa: E402

SEED = 20240315
BASE = "{{BASE_URL}}"
START = datetime(2024, 2, 1, tzinfo=timezone.utc).timestamp()
END = datetime(2024, 5, 31, tzinfo=timezone.utc).timestamp()
SUBREDDITS = {  # name: (count, subscribers, flairs)
    "pics": (10, 30_512_004, [None, "Politics", "Misleading Title", None]),
    "EarthPorn": (10, 23_107_552, [None, "OC", None]),
    "itookapicture": (8, 4_120_771, ["ITAP of", None]),
    "Art": (8, 22_340_118, ["Painting", "Digital", "Drawing", None]),
}
SIGNS = ["OPEN 24 HOURS", "FRESH COFFEE", "NO PARKING", "KEEP CALM", "HELLO WORLD"]
TITLES = {
    "pics": ["My grandfather's workshop, untouched since 1978", "Found this old door in Lisbon",
             "The view from my office window this morning", "Street market after the rain",
             "My dog seeing snow for the first time", "A bridge I cross every day",
             "This sign at my local diner", "Sunset over the parking lot, oddly beautiful"],
    "EarthPorn": ["Dolomites at first light, Italy [OC] [4000x2667]", "Quiet fjord in Norway [OC] [3840x2160]",
                  "Desert dunes after a storm, Namibia [OC]", "Autumn colours in Vermont [OC] [6000x4000]",
                  "Glacier lagoon, Iceland [OC] [5472x3648]", "Patagonia never disappoints [OC]",
                  "Misty forest trail, Oregon [OC] [4032x3024]", "Lavender fields at dusk, Provence [OC]"],
    "itookapicture": ["ITAP of a neon sign", "ITAP of a staircase", "ITAP of shadows on a wall",
                      "ITAP of a lonely chair", "ITAP of my street at night", "ITAP of a red door"],
    "Art": ["Still life with lemons, oil on canvas, 2024", "Geometry study, acrylic", "City at night, digital",
            "Portrait of my sister, charcoal", "Abstract composition no. 7, gouache", "Harbour, watercolour"],
}
EN = ["This is stunning.", "Wow, the colours in this are incredible!", "Beautiful shot!",
      "What camera did you use?", "I've been there, it's even better in person.", "Saving this as my wallpaper.",
      "The composition here is perfect.", "Love the lighting.", "How long did this take you?",
      "This made my day, thank you for sharing.", "Looks like a painting honestly.",
      "I would love to visit this place one day.", "Underrated post.", "The details are amazing.",
      "Great eye for framing.", "Is this edited? Either way it looks great.", "Reminds me of my childhood.",
      "I can almost hear the silence in this picture.", "Print this and hang it on a wall!",
      "Absolutely gorgeous.", "The reflection is what makes it.", "How did you get the exposure so even?",
      "This deserves way more upvotes.", "Mind sharing the location?", "The mood in this is just right."]
REPLIES = ["Agreed!", "Same here.", "Thank you so much!", "Thanks! It was a lucky moment.",
           "A friend lent me an old Nikon.", "It's near the old harbour, easy to find.", "About three weeks.",
           "Only a little contrast, nothing else.", "Ha, exactly what I thought.", "Username checks out.",
           "You should go, it's worth it.", "Right? I couldn't believe it either.", "Not really, just patience."]
DE = ["Wunderschönes Foto, wo wurde das aufgenommen?", "Das sieht aus wie ein Gemälde, einfach toll.",
      "Ich war letzten Sommer dort, es ist wirklich so schön."]
FR = ["Magnifique photo, bravo pour la composition !", "On dirait un tableau, c'est superbe.",
      "J'adore les couleurs de cette image."]
ES = ["¡Qué foto tan bonita! Me encanta la luz.", "Parece una pintura, increíble trabajo.",
      "Tengo que visitar este lugar algún día."]
PROFANE = ["Holy shit, this is amazing.", "Fuck yeah, what a shot."]
SHORT = ["nice", "wow", "this.", "+1", "lol", "ok"]
EMOJI = ["😍😍😍", "🔥🔥", "👏", "❤️"]
LINKS = ["https://www.example.com/photo-tips", "https://en.wikipedia.org/wiki/Golden_hour_(photography)"]
NEAR_DUP = ["Beautiful shot!!", "beautiful shot", "Beautiful shot."]
BOT = ("Thanks for posting to r/{sub}! Please remember to follow the rules in the sidebar.\n\n"
       "*I am a bot, and this action was performed automatically. Please "
       "[contact the moderators of this subreddit](/message/compose/?to=/r/{sub}) if you have any questions or "
       "concerns.*")
ADJ = ["Purple", "Quiet", "Brave", "Lazy", "Clever", "Rusty", "Sunny", "Misty", "Happy", "Cosmic", "Salty", "Gentle"]
NOUN = ["Otter", "Falcon", "Pickle", "Lantern", "Badger", "Comet", "Walrus", "Maple", "Pebble", "Heron", "Nomad"]
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = ALPHABET[r] + out
    return out or "0"


class Sample:
    """Builds the whole store from one seeded generator."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rng = random.Random(SEED)
        self.users = sorted({f"{self.rng.choice(ADJ)}_{self.rng.choice(NOUN)}_{self.rng.randint(10, 9999)}"
                             for _ in range(160)})
        self.next_comment = int("kq00000", 36)
        self.font_cache: dict[int, Any] = {}

    # -- images -------------------------------------------------------------------------------

    def font(self, size: int) -> Any:
        if size not in self.font_cache:  # Pillow's bundled FreeType font: same on every machine
            self.font_cache[size] = ImageFont.load_default(size=size)
        return self.font_cache[size]

    def size(self) -> tuple[int, int]:
        w = self.rng.choice([320, 360, 400, 440, 480])
        return w, int(w * self.rng.choice([0.75, 0.667, 1.0, 0.5625, 1.25]))

    def save(self, img: Image.Image, name: str) -> None:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=70, optimize=True)
        (self.out / "media" / name).write_bytes(buf.getvalue())

    def gradient(self, w: int, h: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
        img = Image.new("RGB", (w, h))
        draw = ImageDraw.Draw(img)
        for y in range(h):
            t = y / max(1, h - 1)
            draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
        return img

    def landscape(self) -> Image.Image:
        w, h = self.size()
        rng = self.rng
        sky = [(rng.randint(20, 120), rng.randint(60, 160), rng.randint(150, 255)),
               (rng.randint(200, 255), rng.randint(120, 200), rng.randint(60, 160))]
        img = self.gradient(w, h, *sky)
        draw = ImageDraw.Draw(img)
        sun = (rng.randint(w // 5, 4 * w // 5), rng.randint(h // 6, h // 2))
        r = rng.randint(15, 40)
        draw.ellipse([sun[0] - r, sun[1] - r, sun[0] + r, sun[1] + r], fill=(255, 236, 170))
        for layer in range(3):  # mountain ranges, darker in front
            base_y = int(h * (0.55 + 0.12 * layer))
            shade = 110 - 35 * layer
            colour = (shade // 2 + rng.randint(0, 30), shade + rng.randint(0, 40), shade // 2 + rng.randint(0, 60))
            pts = [(0, h)]
            x = 0
            while x <= w:
                pts.append((x, base_y - rng.randint(0, h // 4)))
                x += rng.randint(30, 90)
            pts += [(w, base_y), (w, h)]
            draw.polygon(pts, fill=colour)
        return img

    def shapes(self) -> Image.Image:
        w, h = self.size()
        rng = self.rng
        img = Image.new("RGB", (w, h), tuple(rng.randint(180, 250) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(5, 12)):
            x0, y0 = rng.randint(-40, w), rng.randint(-40, h)
            x1, y1 = x0 + rng.randint(30, w // 2), y0 + rng.randint(30, h // 2)
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            kind = rng.choice(["rect", "ellipse", "line", "triangle"])
            if kind == "rect":
                draw.rectangle([x0, y0, x1, y1], fill=colour)
            elif kind == "ellipse":
                draw.ellipse([x0, y0, x1, y1], fill=colour)
            elif kind == "line":
                draw.line([x0, y0, x1, y1], fill=colour, width=rng.randint(3, 12))
            else:
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
        return img

    def street(self) -> Image.Image:
        w, h = self.size()
        rng = self.rng
        img = self.gradient(w, h, (40, 40, 70), (90, 90, 110)) if rng.random() < 0.5 else \
            self.gradient(w, h, (150, 190, 230), (220, 225, 230))
        draw = ImageDraw.Draw(img)
        x = 0
        while x < w:  # buildings with windows
            bw, bh = rng.randint(40, 100), rng.randint(h // 3, h - 20)
            colour = tuple(rng.randint(60, 200) for _ in range(3))
            draw.rectangle([x, h - bh, x + bw, h], fill=colour)
            for wy in range(h - bh + 10, h - 15, 22):
                for wx in range(x + 6, x + bw - 10, 16):
                    if rng.random() < 0.6:
                        draw.rectangle([wx, wy, wx + 8, wy + 12], fill=(250, 230, 140))
            x += bw + rng.randint(0, 10)
        draw.rectangle([0, int(h * 0.92), w, h], fill=(50, 50, 50))
        return img

    def sign(self, text: str) -> Image.Image:
        """A photo-like sign: big dark letters on a light panel, on a coloured wall."""
        w, h = 480, 320
        rng = self.rng
        img = Image.new("RGB", (w, h), tuple(rng.randint(60, 140) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        draw.rectangle([20, 60, w - 20, h - 60], fill=(245, 242, 230), outline=(30, 30, 30), width=6)
        size = 56
        while size > 24 and draw.textlength(text, font=self.font(size)) > w - 80:
            size -= 4
        font = self.font(size)
        box = draw.textbbox((0, 0), text, font=font)
        tx = (w - (box[2] - box[0])) // 2 - box[0]
        ty = (h - (box[3] - box[1])) // 2 - box[1]
        draw.text((tx, ty), text, font=font, fill=(rng.choice([(20, 20, 20), (160, 20, 20), (20, 40, 140)])))
        return img

    # -- text and people -----------------------------------------------------------------------

    def user(self) -> str:
        return self.rng.choice(self.users)

    def score(self, scale: float) -> int:
        return max(1, int(math.exp(self.rng.uniform(0, scale))))

    def comments(self, post: dict[str, Any], n: int, bot: bool, profane: str | None = None) -> list[dict[str, Any]]:
        rng, sub, pid = self.rng, post["subreddit"], post["id"]
        t = post["created_utc"]
        out: list[dict[str, Any]] = []
        depth: dict[str, int] = {}
        bodies = self.bodies(n - (1 if bot else 0), sub, profane)
        if bot:
            bodies.insert(0, ("bot", BOT.format(sub=sub)))
        for kind, body in bodies:
            cid = b36(self.next_comment)
            self.next_comment += rng.randint(3, 400)
            t += rng.randint(30, 5400)
            candidates = [c for c in out if depth[c["id"]] < 3 and c["author"] != "AutoModerator"]
            reply = kind == "reply" or (kind != "bot" and candidates and rng.random() < 0.35)
            parent = rng.choice(candidates) if reply and candidates else None
            author = {"bot": "AutoModerator", "deleted": "[deleted]"}.get(kind) or (
                post["author"] if parent is not None and rng.random() < 0.25 else self.user())
            if kind == "reply" and parent is None:
                body = rng.choice(EN)
            level = 0 if parent is None else depth[parent["id"]] + 1
            depth[cid] = level
            score = 1 if kind == "bot" else int(self.score(6.5 - 1.6 * level) * (1 if rng.random() > 0.06 else -1))
            out.append({
                "id": cid, "name": f"t1_{cid}", "link_id": f"t3_{pid}",
                "parent_id": f"t1_{parent['id']}" if parent else f"t3_{pid}",
                "body": body, "author": author,
                "author_fullname": None if author == "[deleted]" else f"t2_{b36(abs(hash_name(author)))}",
                "score": score, "ups": score, "controversiality": int(score < 0),
                "created_utc": t, "edited": False, "gilded": 0,
                "distinguished": "moderator" if kind == "bot" else None, "stickied": kind == "bot",
                "is_submitter": author == post["author"], "score_hidden": False, "collapsed": kind == "bot",
                "subreddit": sub, "subreddit_id": post["subreddit_id"], "subreddit_name_prefixed": f"r/{sub}",
                "permalink": f"{post['permalink']}comment/{cid}/",
            })
        return out

    def bodies(self, n: int, sub: str, profane: str | None = None) -> list[tuple[str, str]]:
        """A mix of comment kinds for one post, in posting order."""
        rng = self.rng
        pool: list[tuple[str, str]] = []
        for _ in range(n):
            roll = rng.random()
            if roll < 0.40:
                pool.append(("top", rng.choice(EN)))
            elif roll < 0.62:
                pool.append(("reply", rng.choice(REPLIES)))
            elif roll < 0.70:
                pool.append(("top", rng.choice(DE + FR + ES)))
            elif roll < 0.76:
                pool.append(("top", rng.choice(SHORT)))
            elif roll < 0.80:
                pool.append(("top", rng.choice(EMOJI)))
            elif roll < 0.82:
                pool.append(("top", rng.choice(LINKS)))
            elif roll < 0.88:
                pool.append(("deleted", rng.choice(["[deleted]", "[removed]"])))
            elif roll < 0.92:
                pool.append(("top", "Beautiful shot!"))  # exact duplicate across and within posts
            elif roll < 0.95:
                pool.append(("top", rng.choice(NEAR_DUP)))
            else:
                pool.append(("top", rng.choice(EN)))
        if profane is not None:
            pool[rng.randrange(len(pool))] = ("top", profane)
        return pool

    # -- posts --------------------------------------------------------------------------------

    def build(self) -> None:
        rng = self.rng
        for folder in ("posts", "media"):
            (self.out / folder).mkdir(parents=True, exist_ok=True)
            for old in (self.out / folder).iterdir():
                old.unlink()
        plan: list[tuple[str, str]] = []  # (subreddit, kind)
        for sub, (count, _, _) in SUBREDDITS.items():
            plan += [(sub, "image")] * count
        kinds = {  # index in plan -> special kind
            0: "sign", 3: "sign", 21: "sign", 24: "sign", 26: "sign",
            5: "gallery", 14: "gallery", 31: "gallery",
            22: "self", 8: "video", 17: "missing",
        }
        plan = [(sub, kinds.get(i, kind)) for i, (sub, kind) in enumerate(plan)]
        times = sorted(rng.uniform(START, END) for _ in plan)
        order = list(range(len(plan)))
        rng.shuffle(order)  # subreddits interleave in time
        next_id = int("1ai0000", 36)
        title_left = {sub: list(titles) for sub, titles in TITLES.items()}
        signs = iter(SIGNS)
        nsfw = {29, 33}
        spoiler = {12}
        for i, (sub, kind) in enumerate(plan):
            next_id += rng.randint(2_000, 60_000)
            pid = b36(next_id)
            created = int(times[order[i]])
            _, subscribers, flairs = SUBREDDITS[sub]
            titles = title_left[sub] or list(TITLES[sub])
            title = titles.pop(rng.randrange(len(titles)))
            title_left[sub] = titles
            author = self.user()
            score = self.score(11.5)
            slug = "_".join(w.strip(",.[]()'").lower() for w in title.split()[:6])
            permalink = f"/r/{sub}/comments/{pid}/{slug}/"
            post: dict[str, Any] = {
                "id": pid, "name": f"t3_{pid}", "title": title, "subreddit": sub,
                "subreddit_id": f"t5_{b36(abs(hash_name(sub)) % 36**6)}", "subreddit_name_prefixed": f"r/{sub}",
                "subreddit_subscribers": subscribers, "author": author,
                "author_fullname": f"t2_{b36(abs(hash_name(author)))}",
                "score": score, "ups": score, "upvote_ratio": round(rng.uniform(0.62, 0.99), 2),
                "created_utc": created, "over_18": i in nsfw, "spoiler": i in spoiler,
                "link_flair_text": rng.choice(flairs), "permalink": permalink, "stickied": False, "locked": False,
                "archived": False, "gilded": 0, "total_awards_received": 0, "is_original_content": sub != "pics",
                "is_self": False, "is_video": False, "selftext": "", "edited": False,
            }
            if kind == "sign":
                text = next(signs)
                post["title"] = f"{title.split(',')[0]} - it says '{text.title()}'" if sub != "itookapicture" \
                    else f"ITAP of a sign that says {text.title()}"
            self.media(post, kind, text if kind == "sign" else None)
            n_comments = rng.randint(5, 30)
            profane = {2: PROFANE[0], 19: PROFANE[1]}.get(i)  # exactly two profane comments
            comments = self.comments(post, n_comments, bot=rng.random() < 0.35, profane=profane)
            post["num_comments"] = len(comments) + rng.randint(0, 4)  # Reddit counts hidden ones too
            write_post(self.out, post, comments)

    def media(self, post: dict[str, Any], kind: str, text: str | None) -> None:
        pid, rng = post["id"], self.rng
        sub = post["subreddit"]
        painter = {"EarthPorn": self.landscape, "Art": self.shapes}.get(sub) or \
            (lambda: rng.choice([self.street, self.landscape, self.shapes])())
        if kind in ("image", "sign", "missing"):
            url = f"{BASE}/media/{pid}.jpg"
            if kind != "missing":
                img = self.sign(text or "") if kind == "sign" else painter()
                self.save(img, f"{pid}.jpg")
                w, h = img.size
            else:
                w, h = 640, 480  # Reddit still lists the size of the image that is gone
            post.update(post_hint="image", url=url, url_overridden_by_dest=url, domain="i.redd.it",
                        thumbnail=url, preview={"enabled": True, "images": [
                            {"id": f"prev{pid}", "source": {"url": url, "width": w, "height": h}, "resolutions": []}]})
        elif kind == "gallery":
            ids = [f"g{pid}{k}" for k in range(rng.randint(3, 4))]
            meta = {}
            for media_id in ids:
                img = painter()
                self.save(img, f"{media_id}.jpg")
                w, h = img.size
                meta[media_id] = {"status": "valid", "e": "Image", "m": "image/jpg", "id": media_id,
                                  "s": {"u": f"{BASE}/media/{media_id}.jpg", "x": w, "y": h}, "p": []}
            # display order differs from the metadata's key order, as it often does on Reddit
            order = ids[1:] + ids[:1]
            post.update(is_gallery=True, url=f"https://www.reddit.com/gallery/{pid}", domain="reddit.com",
                        url_overridden_by_dest=f"https://www.reddit.com/gallery/{pid}", thumbnail="default",
                        gallery_data={"items": [{"media_id": m, "id": 1000 + k} for k, m in enumerate(order)]},
                        media_metadata=meta)
        elif kind == "self":
            post.update(is_self=True, post_hint="self", domain=f"self.{sub}", thumbnail="self",
                        url=f"https://www.reddit.com{post['permalink']}",
                        title="Weekly critique thread: post your shots and get feedback",
                        selftext="Share a photo you took this week and tell us what you were going for. "
                                 "Be kind and specific with feedback.")
        elif kind == "video":
            url = f"{BASE}/media/{pid}.mp4"  # deliberately absent: video posts are not images
            post.update(is_video=True, post_hint="hosted:video", domain="v.redd.it", url=url,
                        url_overridden_by_dest=url, thumbnail="default",
                        media={"reddit_video": {"fallback_url": url, "duration": 14, "height": 720, "width": 1280,
                                                "is_gif": False}},
                        title="Timelapse of the fog rolling in")


def hash_name(name: str) -> int:
    """A stable small number from a name (Python's hash() is salted per process)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % 2**40
    return h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reddit")
    args = parser.parse_args(argv)
    Sample(args.out).build()
    files = [p for p in args.out.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
