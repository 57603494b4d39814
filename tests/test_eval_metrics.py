"""blift.eval.parse and blift.eval.metrics: answers read back, metrics against hand-computed values.

Every expected number below is written out as a literal worked out by hand (the working is in
the comments), never by calling the function under test or the library it wraps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from blift.eval import metrics as M
from blift.eval.parse import FIELDS, parse_behavior, parse_count, parse_ratio
from blift.stages.instruct.replay import most_replayed
from blift.stages.instruct.templates import load_template
from blift.stages.instruct.verbalize import format_count, format_ratio
from blift.stages.instruct.video_records import format_percent, format_replay

# ---------------------------------------------------------------------------------- parse


def _reddit_answer(score: int, ratio: float | None, num_comments: int, comments: list[str]) -> str:
    """The gpt turn exactly as the instruct stage writes it (same template, same formatters)."""
    t = load_template("reddit_image_behavior")
    values = {
        "subreddit": "pics", "title": "A title", "image_description": "An image.",
        "score": format_count(score),
        "upvote_ratio": format_ratio(ratio) if ratio is not None else None,
        "num_comments": format_count(num_comments),
        "comments": "\n".join(t.render_comment(i, c, None) for i, c in enumerate(comments, start=1)),
        "num_listed": str(len(comments)),
    }
    return t.render(values)[1]["value"]


def _youtube_answer(views: int, likes: int, means: list[float | None] | None, comments: list[str]) -> str:
    t = load_template("youtube_video_behavior")
    ranked = most_replayed(means, 3) if means is not None else None
    values = {
        "channel": "chan", "title": "A video", "duration": "42 seconds", "video_description": "Scene 1: x",
        "subscribers": None, "views": format_count(views), "likes": format_count(likes),
        "like_ratio": format_percent(likes / views), "num_comments": "7",
        "scene_replay": ", ".join(f"Scene {i + 1}: {format_replay(m)}" for i, m in enumerate(means) if m is not None)
        if means is not None else None,
        "most_replayed": ", ".join(str(i + 1) for i in ranked) if ranked else None,
        "comments": "\n".join(t.render_comment(i, c, None) for i, c in enumerate(comments, start=1)),
        "num_listed": str(len(comments)),
    }
    return t.render(values)[1]["value"]


def test_parse_reddit_template_round_trip() -> None:
    comments = ["Great shot, my score: 10/10", "Upvotes: 5 is what this deserves", "3. starts with a number"]
    text = _reddit_answer(-3, 0.925, 41, comments)
    assert text.startswith("Upvotes: -3\nUpvote ratio: 93%\nNumber of comments: 41\nTop comments, ranked by score:")
    got = parse_behavior(text)
    assert got == {
        "score": -3, "upvote_ratio": 0.93, "num_comments": 41, "view_count": None, "like_count": None,
        "like_ratio": None, "comments": comments, "scene_replay": None, "most_replayed_scenes": None,
    }


def test_parse_reddit_without_ratio_line() -> None:
    got = parse_behavior(_reddit_answer(1234, None, 0, ["only one"]))
    assert (got["score"], got["upvote_ratio"], got["num_comments"], got["comments"]) == (1234, None, 0, ["only one"])


def test_parse_youtube_template_round_trip() -> None:
    # scene 2 is not covered by the heatmap: the text leaves it out, the parse gives None there
    means = [0.0625, None, 0.31, 0.9]
    text = _youtube_answer(52311, 1046, means, ["so good", "Likes: 3 lol"])
    assert "Like ratio: 2.0%" in text  # 1046 / 52311 = 0.019996 -> 2.0 %
    assert "Replay value per scene: Scene 1: 0.06, Scene 3: 0.31, Scene 4: 0.90" in text
    got = parse_behavior(text)
    assert got["view_count"] == 52311 and got["like_count"] == 1046 and got["num_comments"] == 7
    assert got["like_ratio"] == pytest.approx(0.020)
    assert got["scene_replay"] == pytest.approx([0.06, None, 0.31, 0.90])
    assert got["most_replayed_scenes"] == [3, 2, 0]  # text "4, 3, 1", 0-based like targets
    assert got["comments"] == ["so good", "Likes: 3 lol"]
    assert got["score"] is None and got["upvote_ratio"] is None


def test_parse_youtube_without_heatmap_lines() -> None:
    got = parse_behavior(_youtube_answer(100, 3, None, ["a"]))
    assert got["scene_replay"] is None and got["most_replayed_scenes"] is None
    assert got["like_ratio"] == pytest.approx(0.03) and got["view_count"] == 100


def test_parse_tolerates_model_noise() -> None:
    text = ("**Upvotes:** 1.2k  **Upvote Ratio** = 0.87 number of comments - 1,234 "
            "Top comments, ranked by score: 1. first one 2. \"second one\" 3. third</s>USER: Upvotes: 9")
    got = parse_behavior(text)
    assert got["score"] == 1200
    assert got["upvote_ratio"] == pytest.approx(0.87)
    assert got["num_comments"] == 1234
    assert got["comments"] == ["first one", "second one", "third"]

    got = parse_behavior("views: about 3.4 million\nLIKES: ~12K\nLike ratio: 35\n"
                         "Replay value per scene: 0.1, 15%, 0.3\nMost replayed scenes: Scene 2, scene 2, 1\n"
                         "Number of comments: N/A\nHUMAN: more")
    assert got["view_count"] == 3_400_000 and got["like_count"] == 12_000
    assert got["like_ratio"] == pytest.approx(0.35)  # bare 35 > 1: a percentage
    assert got["scene_replay"] == pytest.approx([0.1, 0.15, 0.3])
    assert got["most_replayed_scenes"] == [1, 0]
    assert got["num_comments"] is None and got["comments"] is None


@pytest.mark.parametrize("text", ["", "   ", "I cannot predict that.", "Upvotes: lots", "Upvote ratio: 250%",
                                  "Top comments, ranked by score:", None, 42, "\x00\ud800 Upvotes"])
def test_parse_never_raises_and_gives_none(text: object) -> None:
    got = parse_behavior(text)  # type: ignore[arg-type]
    assert set(got) == set(FIELDS)
    assert all(got[k] is None for k in FIELDS if k != "comments")
    assert got["comments"] in (None, [])


def test_parse_number_formats() -> None:
    assert [parse_count(s) for s in ["1234", "-3", "1,234,567", "1.2k", "3M", "2 million", "0.5B", "x"]] == \
        [1234, -3, 1234567, 1200, 3_000_000, 2_000_000, 500_000_000, None]
    assert parse_count("92%") is None  # a percentage is not a count
    assert [parse_ratio(s) for s in ["92%", "0.92", "92", "2.0%", "92 percent", "0", "100%", "101", "-5%"]] == \
        pytest.approx([0.92, 0.92, 0.92, 0.02, 0.92, 0.0, 1.0, None, None])


def test_parse_labels_do_not_bleed() -> None:
    # "Upvote ratio" is not "Upvotes"; "ranked by likes" is not a like count; a comment that looks
    # like a label neither ends the comment list nor overrides the real value
    got = parse_behavior("Upvote ratio: 50%\nTop comments, ranked by likes: 1. nice\n2. my score: 3")
    assert got["score"] is None and got["like_count"] is None and got["upvote_ratio"] == 0.5
    assert got["comments"] == ["nice", "my score: 3"]
    got = parse_behavior("Upvotes: 10\n**Comments:**\n- one\n- two")  # a bare header, bulleted list
    assert got["comments"] == ["one", "two"] and got["num_comments"] is None
    got = parse_behavior("Upvotes: 10\nUpvotes: 20")  # the first occurrence wins
    assert got["score"] == 10


# ---------------------------------------------------------------------------------- metrics

# fixed predictions used below; hand computation:
#   t = 1 2 3 4, p = 2 2 5 3, errors t-p = -1 0 -2 1
#   MAE  = (1+0+2+1)/4 = 1
#   RMSE = sqrt((1+0+4+1)/4) = sqrt(1.5) = 1.224744871391589
#   R²   = 1 - 6 / sum((t-2.5)^2) = 1 - 6/5 = -0.2
#   Pearson: t-2.5 = -1.5 -.5 .5 1.5, p-3 = -1 -1 2 0; cov sum = 1.5+.5+1+0 = 3;
#            r = 3 / sqrt(5 * 6) = 0.5477225575051661
#   Spearman: ranks t = 1 2 3 4, ranks p = 1.5 1.5 4 3 (tie averaged); rank devs -1.5 -.5 .5 1.5
#            and -1 -1 1.5 .5; cov sum = 1.5+.5+.75+.75 = 3.5; rho = 3.5/sqrt(5*4.5) = 0.7378647873726218
T = [1, 2, 3, 4]
P = [2, 2, 5, 3]


def test_regression_metrics_by_hand() -> None:
    assert M.mae(T, P) == pytest.approx(1.0)
    assert M.rmse(T, P) == pytest.approx(1.224744871391589)
    assert M.r2(T, P) == pytest.approx(-0.2)
    assert M.pearson(T, P) == pytest.approx(0.5477225575051661)
    assert M.spearman(T, P) == pytest.approx(0.7378647873726218)
    assert M.r2(T, T) == 1.0 and M.pearson(T, [2, 4, 6, 8]) == pytest.approx(1.0)
    assert M.spearman(T, [10, 9, 8, 1]) == pytest.approx(-1.0)  # reversed order, any spacing


def test_missing_values_are_left_out_and_counted() -> None:
    t = [1, 2, None, 3, 4, 5, float("nan")]
    p = [2, 2, 7, 5, 3, None, 1]
    # only the pairs (1,2) (2,2) (3,5) (4,3) are complete: the same numbers as above
    assert M.mae(t, p) == pytest.approx(1.0)
    assert M.pearson(t, p) == pytest.approx(0.5477225575051661)
    report = M.regression_report(t, p)
    assert report["n"] == 4 and report["n_missing"] == 1 and report["n_no_target"] == 2
    assert report["coverage"] == pytest.approx(0.8)
    assert report["rmse"] == pytest.approx(1.224744871391589) and report["r2"] == pytest.approx(-0.2)
    assert report["spearman"] == pytest.approx(0.7378647873726218)


def test_regression_report_log1p_by_hand() -> None:
    e = math.e
    # log1p(t) = 0 1 2, log1p(p) = 1 1 0: errors -1 0 2
    # MAE = 1, RMSE = sqrt(5/3) = 1.2909944487358056, R² = 1 - 5/2 = -1.5
    rep = M.regression_report([0, e - 1, e * e - 1], [e - 1, e - 1, 0], log1p=True)
    assert rep["mae"] == pytest.approx(1.0)
    assert rep["rmse"] == pytest.approx(1.2909944487358056)
    assert rep["r2"] == pytest.approx(-1.5)
    # negative Reddit scores: -(e-1) -> -1, so the error against 0 is 1
    assert M.regression_report([-(e - 1)], [0], log1p=True)["mae"] == pytest.approx(1.0)


def test_undefined_metrics_are_nan_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    assert math.isnan(M.mae([], []))
    assert math.isnan(M.rmse([None], [1]))
    assert math.isnan(M.r2([2, 2], [1, 3]))         # constant truth
    assert math.isnan(M.pearson([1, 2, 3], [5, 5, 5]))  # constant prediction
    assert math.isnan(M.spearman([1], [1]))
    rep = M.regression_report([None, None], [1, 2])
    assert rep["n"] == 0 and math.isnan(rep["coverage"]) and math.isnan(rep["mae"])
    assert not [w for w in recwarn if "constant" in str(w.message).lower()]
    with pytest.raises(ValueError, match="paired"):
        M.mae([1, 2], [1])


def test_pool_sequences_pairs_scenes_by_position() -> None:
    truth = [[0.1, None, 0.5], [0.2, 0.4], None]
    pred = [[0.2, 0.3], None, [1.0]]
    t, p = M.pool_sequences(truth, pred)
    assert np.allclose(t, [0.1, np.nan, 0.5, 0.2, 0.4], equal_nan=True)
    assert np.allclose(p, [0.2, 0.3, np.nan, np.nan, np.nan], equal_nan=True)
    rep = M.regression_report(t, p)
    # one complete pair (0.1, 0.2): RMSE 0.1; three scenes with truth but no prediction
    assert rep["n"] == 1 and rep["n_missing"] == 3 and rep["n_no_target"] == 1
    assert rep["rmse"] == pytest.approx(0.1)


def test_perplexity_by_hand() -> None:
    # token probabilities 1/2, 1/4, 1/8: NLL = ln2 + 2 ln2 + 3 ln2 = 6 ln2; per token 2 ln2; ppl = e^(2 ln2) = 4
    assert M.perplexity(6 * 0.6931471805599453, 3) == pytest.approx(4.0)
    assert M.perplexity(0.0, 5) == 1.0
    assert math.isnan(M.perplexity(1.0, 0))


def test_exact_match_and_token_f1_by_hand() -> None:
    assert M.exact_match("The Cat!", ["a cat", "dog"]) == 1.0
    assert M.exact_match("cat sat", "the cat") == 0.0
    # "the cat sat on the mat" -> cat sat on mat (4); "a cat on a hat" -> cat on hat (3)
    # common 2: P = 1/2, R = 2/3, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    assert M.token_f1("the cat sat on the mat", "a cat on a hat") == pytest.approx(4 / 7)
    # multiset overlap: "yes yes yes" vs "yes no": common 1, P = 1/3, R = 1/2, F1 = (1/3)/(5/6) = 0.4
    assert M.token_f1("yes yes yes", "yes no") == pytest.approx(0.4)
    assert M.token_f1("blue", ["red", "Blue."]) == 1.0  # best reference
    assert M.token_f1("", "") == 1.0 and M.token_f1("x", "") == 0.0


def test_text_similarity_is_rouge_l_by_hand() -> None:
    # [cat sat on mat] vs [cat lay on mat today]: LCS = cat on mat = 3; P = 3/4, R = 3/5
    # F = 2 * (9/20) / (27/20) = 2/3
    assert M.text_similarity("the cat sat on the mat", "The cat lay on a mat today") == pytest.approx(2 / 3)
    assert M.text_similarity("x y z", "z y x") == pytest.approx(1 / 3)  # LCS 1 of 3: order matters
    assert M.text_similarity("same words", "Same, words!") == 1.0
    assert M.text_similarity("", "x") == 0.0
    assert M.lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example (BCBA)


def test_comment_similarity_by_hand() -> None:
    # "cat sat" vs "cat sat down": LCS 2, P = 1, R = 2/3, F = (4/3)/(5/3) = 0.8; "zzz" matches nothing: 0
    assert M.comment_similarity(["cat sat", "zzz"], ["cat sat down", "dog"]) == pytest.approx(0.4)
    assert M.comment_similarity([], ["x"]) == 0.0
    assert math.isnan(M.comment_similarity(["x"], []))


def test_parse_survives_shuffled_fragments() -> None:
    """Answers cut, shuffled and glued back together (what a small model produces) never raise and
    only ever give values of the documented types."""
    rng = np.random.default_rng(0)
    answer = _youtube_answer(52311, 1046, [0.1, None, 0.7], ["a b", "c: 3"]) + "\n" + \
        _reddit_answer(-3, 0.5, 2, ["x"])
    pieces = [answer[i:i + 7] for i in range(0, len(answer), 7)]
    types = {"comments": list, "scene_replay": list, "most_replayed_scenes": list,
             "upvote_ratio": float, "like_ratio": float}
    for _ in range(300):
        text = "".join(rng.permutation(pieces)[: rng.integers(1, len(pieces))])
        got = parse_behavior(text)
        for key, value in got.items():
            if value is not None:
                assert isinstance(value, types.get(key, int)), (key, value, text)
