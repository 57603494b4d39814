"""Realistic synthetic comment threads for benchmarks (no network, no real users).

Comments are composed from per-language phrase banks (English, German, French, Spanish,
Portuguese, Italian, Dutch), so that texts vary in length and vocabulary the way Reddit
comments do, and the mix contains what cleaning must find: exact copies, light paraphrases,
link-only comments, bot footers, AutoModerator / moderator comments, ``[deleted]`` /
``[removed]``, emoji-only and very short replies, profanity, and a few over-long rants.

``make_shard(n_comments)`` returns ``(items_rows, comment_rows)`` that fit ``schemas/items.yaml``
and ``schemas/comments.yaml``; ``texts(n)`` returns just the comment texts. Deterministic per seed.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from blift.ids import author_hash, author_kind, pack_raw

BANKS: dict[str, dict[str, list[str]]] = {
    "en": {
        "open": ["Honestly,", "Wow,", "I have to say", "Not gonna lie,", "Okay so", "Man,", "Funny enough,",
                 "To be fair,", "Seriously,", "I think", "Looks like", "Pretty sure"],
        "subj": ["this photo", "the lighting here", "that dog", "your garden", "the colour of the sky",
                 "this build", "the old bridge", "this recipe", "the whole setup", "that little cat",
                 "the view from the top", "the composition", "this painting", "the second picture"],
        "verb": ["looks amazing", "made my day", "is exactly what I needed", "reminds me of home",
                 "is way better than the original", "deserves more upvotes", "is kind of underrated",
                 "brings back memories", "looks like a movie scene", "is absolutely stunning",
                 "could use a bit more contrast", "is why I love this sub"],
        "tail": ["thanks for sharing.", "great job!", "where was this taken?", "how long did it take?",
                 "I would frame it.", "saving this for later.", "my grandma had one just like it.",
                 "what camera did you use?", "keep it up.", "can't stop looking at it.", "10/10 would visit.",
                 "the details are incredible."],
        "short": ["lol same", "this is great", "so cute omg", "love it", "nice one mate", "came here to say this",
                  "underrated comment", "take my upvote", "what a time", "needs more jpeg"],
    },
    "de": {
        "open": ["Ehrlich gesagt,", "Wow,", "Ich muss sagen,", "Also", "Mensch,", "Zugegeben,"],
        "subj": ["dieses Foto", "das Licht hier", "der Hund", "dein Garten", "die alte Brücke", "das Rezept",
                 "die Aussicht vom Gipfel", "das Gemälde"],
        "verb": ["sieht fantastisch aus", "hat meinen Tag gerettet", "erinnert mich an zu Hause",
                 "ist viel besser als das Original", "verdient mehr Aufmerksamkeit", "ist wirklich wunderschön"],
        "tail": ["danke fürs Teilen.", "wo wurde das aufgenommen?", "welche Kamera hast du benutzt?",
                 "weiter so!", "ich würde es einrahmen."],
        "short": ["sehr schön", "einfach toll hier", "das gefällt mir sehr"],
    },
    "fr": {
        "open": ["Franchement,", "Waouh,", "Je dois dire que", "Alors", "Honnêtement,"],
        "subj": ["cette photo", "la lumière ici", "ce chien", "ton jardin", "le vieux pont", "cette recette",
                 "la vue depuis le sommet", "ce tableau"],
        "verb": ["est magnifique", "a illuminé ma journée", "me rappelle la maison",
                 "est bien meilleure que l'originale", "mérite plus de votes", "est vraiment superbe"],
        "tail": ["merci pour le partage.", "c'était où exactement ?", "quel appareil as-tu utilisé ?",
                 "continue comme ça !", "je l'encadrerais."],
        "short": ["trop beau", "c'est génial ça", "j'adore cette photo"],
    },
    "es": {
        "open": ["La verdad,", "Vaya,", "Tengo que decir que", "Bueno,", "Sinceramente,"],
        "subj": ["esta foto", "la luz aquí", "ese perro", "tu jardín", "el puente viejo", "esta receta",
                 "la vista desde la cima", "este cuadro"],
        "verb": ["se ve increíble", "me alegró el día", "me recuerda a mi casa",
                 "es mucho mejor que el original", "merece más votos", "es realmente preciosa"],
        "tail": ["gracias por compartir.", "¿dónde fue tomada?", "¿qué cámara usaste?", "¡sigue así!",
                 "yo la enmarcaría."],
        "short": ["qué bonito", "me encanta esto", "esto es genial"],
    },
    "pt": {
        "open": ["Sinceramente,", "Nossa,", "Tenho que dizer que", "Olha,"],
        "subj": ["essa foto", "a luz aqui", "esse cachorro", "o seu jardim", "a ponte velha"],
        "verb": ["ficou incrível", "alegrou o meu dia", "me lembra a minha casa", "merece mais votos"],
        "tail": ["obrigado por compartilhar.", "onde foi tirada?", "qual câmera você usou?"],
        "short": ["que lindo demais", "adorei isso aqui"],
    },
    "it": {
        "open": ["Sinceramente,", "Wow,", "Devo dire che", "Allora"],
        "subj": ["questa foto", "la luce qui", "quel cane", "il tuo giardino", "il vecchio ponte"],
        "verb": ["è bellissima", "mi ha migliorato la giornata", "mi ricorda casa", "merita più voti"],
        "tail": ["grazie per la condivisione.", "dove è stata scattata?", "che macchina fotografica hai usato?"],
        "short": ["che bello davvero", "mi piace molto"],
    },
    "nl": {
        "open": ["Eerlijk gezegd", "Wauw,", "Ik moet zeggen dat"],
        "subj": ["deze foto", "het licht hier", "die hond", "jouw tuin", "de oude brug"],
        "verb": ["ziet er geweldig uit", "maakte mijn dag goed", "doet me denken aan thuis"],
        "tail": ["bedankt voor het delen.", "waar is dit genomen?", "welke camera heb je gebruikt?"],
        "short": ["wat mooi zeg", "echt heel gaaf"],
    },
}
LANG_WEIGHTS = {"en": 0.70, "de": 0.07, "fr": 0.06, "es": 0.07, "pt": 0.04, "it": 0.03, "nl": 0.03}
PROFANE = ["This is fucking awesome, holy shit.", "What a shitty take, you absolute dumbass.",
           "Fuck this guy and his stupid bullshit.", "Damn, that's one ugly ass bridge lmao."]
BOT_FOOTERS = [
    "\n\n*I am a bot, and this action was performed automatically. Please contact the moderators of this "
    "subreddit if you have any questions or concerns.*",
    "\n\n^(I am a bot. Beep boop.) ^[Opt out](https://example.org/optout)",
]
EMOJI = ["😂", "🔥", "😍", "👍", "💯", "🙌", "😭", "❤️"]
LINKS = ["https://i.imgur.com/{k}.jpg", "https://www.reddit.com/r/pics/comments/{k}/", "https://youtu.be/{k}",
         "[source](https://example.org/{k})", "www.example.com/{k}"]


def _sentence(rng: random.Random, bank: dict[str, list[str]]) -> str:
    s = f"{rng.choice(bank['open'])} {rng.choice(bank['subj'])} {rng.choice(bank['verb'])}"
    return s[0].upper() + s[1:] + rng.choice([",", ".", " -", "!"]) + " " + rng.choice(bank["tail"])


def _paraphrase(rng: random.Random, text: str) -> str:
    """A light edit: casing, punctuation, one word dropped or doubled: what reposters do."""
    words = text.split()
    op = rng.randrange(3)
    if op == 0 and len(words) > 4:
        del words[rng.randrange(1, len(words) - 1)]
    elif op == 1:
        words.append(rng.choice(["lol", "tbh", "!!", "imo"]))
    else:
        words = [w.lower() for w in words]
    return " ".join(words)


def comment_text(rng: random.Random, kind: str | None = None) -> tuple[str, str, str]:
    """One comment text, its kind (``plain``, ``profane``, ``link``, ``bot``, ...) and language
    (``und`` where the text has none: links, emoji, placeholders)."""
    if kind is None:
        r = rng.random()
        kind = ("plain" if r < 0.78 else "short" if r < 0.86 else "link" if r < 0.89 else "emoji" if r < 0.91
                else "profane" if r < 0.94 else "bot" if r < 0.96 else "deleted" if r < 0.985 else "long")
    lang = rng.choices(list(LANG_WEIGHTS), weights=list(LANG_WEIGHTS.values()))[0]
    bank = BANKS[lang]
    key = f"{rng.getrandbits(40):x}"
    if kind == "plain":
        text = " ".join(_sentence(rng, bank) for _ in range(rng.choice([1, 1, 2, 2, 3])))
        if rng.random() < 0.05:
            text += f" Source: {rng.choice(LINKS).format(k=key)}"
        if rng.random() < 0.05:
            text += " " + rng.choice(EMOJI)
    elif kind == "short":
        text = rng.choice(bank["short"]) + rng.choice(["", "", "!", " " + rng.choice(EMOJI)])
    elif kind == "link":
        text = rng.choice(LINKS).format(k=key)
    elif kind == "emoji":
        text = "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 5)))
    elif kind == "profane":
        text = rng.choice(PROFANE)
    elif kind == "bot":
        text = "Your post has been automatically flaired." + rng.choice(BOT_FOOTERS)
    elif kind == "deleted":
        text = rng.choice(["[deleted]", "[removed]"])
    else:  # long rant
        text = " ".join(_sentence(rng, BANKS["en"]) for _ in range(40))
    if kind in ("profane", "bot", "long"):
        lang = "en"
    elif kind in ("link", "emoji", "deleted"):
        lang = "und"
    return text, kind, lang


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [comment_text(rng)[0] for _ in range(n)]


def labelled_texts(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(text, kind, language)`` triples, for accuracy checks."""
    rng = random.Random(seed)
    return [comment_text(rng) for _ in range(n)]


_T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def make_shard(n_comments: int, *, comments_per_item: int = 60, seed: int = 0,
               nsfw_share: float = 0.03, duplicate_share: float = 0.05,
               paraphrase_share: float = 0.03) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Items and comments rows (schema columns) for one synthetic Reddit shard."""
    rng = random.Random(seed)
    n_items = max(1, n_comments // comments_per_item)
    items: list[dict[str, Any]] = []
    for k in range(n_items):
        item_id = f"s{seed:x}i{k:x}"
        removed = rng.random() < 0.01
        data = {"id": item_id, "title": f"Synthetic post {k}", "subreddit": "pics",
                "removed_by_category": "moderator" if removed else None}
        items.append({
            "uid": f"reddit:{item_id}", "platform": "reddit", "item_id": item_id, "source": "replay",
            "url": f"https://i.example.org/{item_id}.jpg", "permalink": f"https://www.reddit.com/r/pics/{item_id}/",
            "title": data["title"], "text": "", "community": "pics", "author_hash": author_hash(f"op{k}"),
            "created_at": _T0 + timedelta(hours=k), "collected_at": _T0 + timedelta(days=30),
            "media_kind": "image", "media_urls": [f"https://i.example.org/{item_id}.jpg"],
            "over_18": rng.random() < nsfw_share,
            "score": rng.randint(0, 50000), "upvote_ratio": round(rng.uniform(0.5, 1.0), 2),
            "num_comments": comments_per_item, "raw": pack_raw(data),
        })

    comments: list[dict[str, Any]] = []
    by_item: dict[str, list[str]] = {}
    for c in range(n_comments):
        item = items[rng.randrange(n_items)]
        uid = item["uid"]
        prior = by_item.setdefault(uid, [])
        r = rng.random()
        if prior and r < duplicate_share:
            text, kind = rng.choice(prior), "copy"
        elif prior and r < duplicate_share + paraphrase_share:
            text, kind = _paraphrase(rng, rng.choice(prior)), "paraphrase"
        else:
            text, kind, _lang = comment_text(rng)
        prior.append(text)
        name = ("AutoModerator" if kind == "bot" and rng.random() < 0.5 else "[deleted]" if text == "[deleted]"
                else f"user{rng.randrange(100000)}")
        cid = f"c{seed:x}x{c:x}"
        comments.append({
            "uid": uid, "platform": "reddit", "comment_id": cid, "parent_id": None, "depth": 0, "text": text,
            "score": int(rng.paretovariate(1.2)) - 1,
            "author_hash": author_hash(name), "author_kind": author_kind(name),
            "created_at": item["created_at"] + timedelta(minutes=c % 600), "is_submitter": False,
            "distinguished": "moderator" if name == "AutoModerator" else None, "stickied": name == "AutoModerator",
            "collected_at": item["collected_at"], "raw": pack_raw({"id": cid, "body": text}),
        })
    return items, comments
