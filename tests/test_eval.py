"""blift eval: likelihood scoring, generation, behavior and content metrics, the runner and its config.

Every model number here is checked against a value computed independently in the test: a plain
processor call and forward pass on the full text, not the collator's labels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from blift.errors import ConfigError
from blift.eval import behavior as beh
from blift.eval import content, run
from blift.eval.config import load_eval_config
from blift.eval.parse import parse_behavior
from blift.eval.scoring import generate, score_continuations
from blift.eval.tasks import TaskItem
from blift.train.collator import VlmCollator
from blift.train.data import Example
from blift.train.prompt import render, render_prompt
from model_releases import (
    build_release,
    image,
    reddit_answer,
    reddit_record,
    write_tasks,
)
from tiny_llava import build_tiny, model_class


# ----------------------------------------------------------------------------------- fixtures
def load_tiny(folder: Path, kind: str, max_length: int = 1024) -> SimpleNamespace:
    from transformers import AutoProcessor

    model = model_class(kind).from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    collator = VlmCollator(processor, kind, max_length=max_length, model_config=model.config)
    return SimpleNamespace(folder=folder, model=model, processor=processor, collator=collator)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """A tiny LLaVA-1.5 checkpoint loaded once: model, processor, collator."""
    return load_tiny(build_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", "llava", seed=0), "llava")


def independent_logprobs(tiny: SimpleNamespace, ex: Example, answer: str) -> tuple[list[int], list[float], int]:
    """(all ids, log-prob of every token given its prefix, prompt length in tokens) from a plain
    processor call on the rendered text and one forward pass; no collator involved."""
    prompt = render_prompt(ex.conversations, media_token="<image>")
    full = render([*ex.conversations[:1], {"from": "gpt", "value": answer}], media_token="<image>").text
    assert full.startswith(prompt + " ")
    proc = tiny.processor
    p_ids = proc(text=[prompt], images=ex.images, return_tensors="pt")["input_ids"][0].tolist()
    enc = proc(text=[full], images=ex.images, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    assert ids[: len(p_ids)] == p_ids  # the prompt's tokens are a prefix of the full text's
    with torch.no_grad():
        logits = tiny.model(**enc).logits[0].float()
    lp = logits.log_softmax(-1)
    token_lp = [math.nan] + [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]
    return ids, token_lp, len(p_ids)


# ----------------------------------------------------------------------------------- scoring
def test_continuation_logprob_matches_a_plain_forward_pass(tiny):
    check_logprobs(tiny)


def test_continuation_logprob_on_llava_next(tmp_path):
    """LLaVA-NeXT: anyres patches of different counts per image, image_sizes passed through."""
    check_logprobs(load_tiny(build_tiny(tmp_path / "next", "llava_next", seed=3), "llava_next"))


def check_logprobs(tiny: SimpleNamespace) -> None:
    examples = [reddit_record(i, 10 * i, ["nice dog", "great picture"]) for i in range(3)]
    answers = ["a dog in the park", "the sky is blue and bright", "dog"]
    scores = score_continuations(tiny.model, tiny.collator, examples, answers, batch_size=2)
    for ex, answer, score in zip(examples, answers, scores):
        ids, token_lp, n_prompt = independent_logprobs(tiny, ex, answer)
        # continuation = answer words + </s>
        assert score.n_tokens == len(ids) - n_prompt == len(answer.split()) + 1
        assert score.token_ids == tuple(ids[n_prompt:])
        assert score.logprob == pytest.approx(sum(token_lp[n_prompt:]), abs=1e-4)
        assert score.mean_logprob == pytest.approx(score.logprob / score.n_tokens)
    # a different continuation gets a different score (the test can fail)
    assert len({round(s.logprob, 4) for s in scores}) == 3


def mc_item(item_id: str, options: list[str], answer: int | None, seed: int = 1) -> TaskItem:
    return TaskItem(id=item_id, media_kind="image", image=image(seed), frames=None,
                    question="What is shown in the picture?", options=options, answer=answer, references=None)


def test_answer_option_likelihood_picks_the_highest_summed_logprob(tiny):
    options = ["dog", "a red car on the street", "the sky", "happy people sitting in a park"]
    item = mc_item("q1", options, answer=None)
    example = content.task_example(item)
    independent = []
    for option in options:
        ids, token_lp, n_prompt = independent_logprobs(tiny, example, option)
        independent.append((sum(token_lp[n_prompt:]), sum(token_lp[n_prompt:]) / (len(ids) - n_prompt)))
    best = int(np.argmax([s for s, _ in independent]))
    best_norm = int(np.argmax([m for _, m in independent]))
    wrong = (best + 1) % len(options)
    items = [mc_item("right", options, best), mc_item("wrong", options, wrong),
             mc_item("unlabelled", options, None)]
    out = content.multiple_choice(tiny.model, tiny.collator, "objects", items, batch_size=3)
    rows = {r["id"]: r for r in out.predictions}
    assert rows["right"]["logprobs"] == pytest.approx([s for s, _ in independent], abs=1e-4)
    assert rows["right"]["mean_logprobs"] == pytest.approx([m for _, m in independent], abs=1e-4)
    assert rows["right"]["prediction_index"] == best and rows["right"]["prediction"] == options[best]
    assert rows["right"]["prediction_norm_index"] == best_norm
    assert out.metrics["accuracy"] == 0.5 and out.metrics["n"] == 2 and out.metrics["n_unlabeled"] == 1
    expected_norm = ((best_norm == best) + (best_norm == wrong)) / 2
    assert out.metrics["accuracy_norm"] == expected_norm


def independent_generation(tiny: SimpleNamespace, ex: Example, max_new_tokens: int) -> str:
    prompt = render_prompt(ex.conversations, media_token="<image>" if ex.images else None)
    enc = tiny.processor(text=[prompt], images=ex.images or None, return_tensors="pt")
    with torch.no_grad():
        out = tiny.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tiny.processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_generation_matches_plain_generate_and_free_text_is_scored(tiny):
    q = "Describe the picture in detail."
    items = [TaskItem(id=f"t{i}", media_kind="image", image=image(i), frames=None, question=q, options=None,
                      answer=None, references=None) for i in range(3)]
    truth = [independent_generation(tiny, content.task_example(it), 6) for it in items]
    assert all(truth)
    items[0].references = [truth[0]]                 # exact: EM 1, F1 1
    items[1].references = ["zebra zebra zebra"]     # nothing in common: EM 0, F1 0
    # item 2 has no reference: generated, not scored
    out = content.free_text(tiny.model, tiny.collator, "describe", items, max_new_tokens=6, batch_size=2)
    assert [r["prediction"] for r in out.predictions] == truth  # left-padded batches change nothing
    assert out.metrics["exact_match"] == 0.5 and out.metrics["f1"] == 0.5
    assert out.metrics["n"] == 2 and out.metrics["n_unlabeled"] == 1


def test_behavior_generation_counts_unparsed_answers(tiny):
    examples = [reddit_record(i, 5 + 40 * i, ["nice dog", "the dog is happy"]) for i in range(3)]
    preds, skipped = beh.predict_behavior(tiny.model, tiny.collator, examples, max_new_tokens=10, batch_size=2)
    assert not skipped and [p.id for p in preds] == [e.id for e in examples]
    for ex, p in zip(examples, preds):
        assert p.generated == independent_generation(tiny, ex, 10)
        assert p.parsed == parse_behavior(p.generated)
    m = beh.behavior_metrics(preds)
    parsed_scores = [p.parsed["score"] for p in preds]
    assert m["score"]["n"] == sum(s is not None for s in parsed_scores)
    assert m["score"]["n"] + m["score"]["n_missing"] == 3
    assert m["unparsed"] == sum(all(v in (None, []) for v in p.parsed.values()) for p in preds)
    # the tiny vocabulary has no label word ("Upvotes", "score", "views"...), so nothing parses:
    # every prediction is counted missing, none dropped
    assert m["unparsed"] == 3 and m["score"]["n_missing"] == 3
    assert m["comments"]["n_missing"] == 3 and m["comments"]["similarity"] == 0.0


def test_comment_perplexity_is_exp_mean_nll_of_the_comment_tokens(tiny):
    comments = [["nice dog", "the dog is happy"], ["great picture of a red car", "bright colours"]]
    examples = [reddit_record(i, 12 * (i + 1), c) for i, c in enumerate(comments)]
    preds, _ = beh.predict_behavior(tiny.model, tiny.collator, examples, max_new_tokens=4, batch_size=2)
    nll = tokens = answer_nll = answer_tokens = 0.0
    for ex, c in zip(examples, comments):
        answer = ex.conversations[-1]["value"]
        ids, token_lp, n_prompt = independent_logprobs(tiny, ex, answer)
        # the comment lines start after the header line; they end before the closing </s>
        head = answer[: answer.index("Top comments")] + "Top comments, ranked by score:\n"
        n_head = len(tiny.processor.tokenizer(head, add_special_tokens=False)["input_ids"])
        comment_lp = token_lp[n_prompt + n_head: -1]
        assert len(comment_lp) == sum(len(f"{k}. {t}".replace(".", " .").split()) for k, t in enumerate(c, 1))
        nll -= sum(comment_lp)
        tokens += len(comment_lp)
        answer_nll -= sum(token_lp[n_prompt:])
        answer_tokens += len(ids) - n_prompt
    m = beh.behavior_metrics(preds)
    assert m["comments"]["perplexity_tokens"] == tokens
    assert m["comments"]["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-4)
    assert m["answer_perplexity"] == pytest.approx(math.exp(answer_nll / answer_tokens), rel=1e-4)
    assert m["comments"]["perplexity"] != pytest.approx(m["answer_perplexity"], rel=1e-3)


def prediction(targets: dict[str, Any], generated: str) -> beh.BehaviorPrediction:
    return beh.BehaviorPrediction(id="x", platform=None, generated=generated, parsed=parse_behavior(generated),
                                  targets=targets)


def test_behavior_metrics_on_fixed_answers():
    reddit = [({"score": 10, "upvote_ratio": 0.9, "num_comments": 2, "comments": ["nice dog", "cute"]},
               reddit_answer(10, 90, 2, ["nice dog", "so cute"])),
              ({"score": 100, "upvote_ratio": 0.5, "num_comments": 4, "comments": ["meh"]},
               "Upvotes: 50\nUpvote ratio: 70%\nNumber of comments: 1.2k"),
              ({"score": 1000, "upvote_ratio": 0.7, "num_comments": 0, "comments": ["wow"]},
               "the the the dog")]
    video = [({"view_count": 5000, "like_count": 100, "like_ratio": 0.02, "scene_replay": [0.1, None, 0.5],
               "most_replayed_scenes": [2, 0]},
              "Views: 5,000\nLikes: 50\nLike ratio: 1.0%\nReplay value per scene: Scene 1: 0.2, Scene 3: 0.4\n"
              "Most replayed scenes, most replayed first: 3, 1"),
             ({"view_count": 10, "like_count": 1, "like_ratio": 0.1, "scene_replay": [0.3, 0.6],
               "most_replayed_scenes": [1]},
              "Views: 10\nMost replayed scenes, most replayed first: 1")]
    m = beh.behavior_metrics([prediction(t, g) for t, g in reddit + video])
    slog = lambda x: math.copysign(math.log1p(abs(x)), x)  # noqa: E731
    assert m["n_records"] == 5 and m["unparsed"] == 1
    score = m["score"]
    assert (score["n"], score["n_missing"]) == (2, 1)
    assert score["mae"] == pytest.approx(25.0)
    assert score["mae_log"] == pytest.approx((slog(100) - slog(50)) / 2)
    ratio = m["upvote_ratio"]
    assert ratio["mae"] == pytest.approx(0.1) and ratio["n_missing"] == 1
    assert m["num_comments"]["mae"] == pytest.approx((0 + 1196) / 2)
    assert m["view_count"]["mae"] == 0 and m["view_count"]["n"] == 2
    assert m["like_count"]["mae"] == 50 and m["like_count"]["n_missing"] == 1
    assert m["like_ratio"]["mae"] == pytest.approx(0.01)
    scenes = m["scene_replay"]
    # pairs (0.1, 0.2), (0.5, 0.4); record 2's two scenes are missing
    assert scenes["rmse"] == pytest.approx(0.1) and scenes["pearson"] == pytest.approx(1.0)
    assert (scenes["n"], scenes["n_missing"], scenes["n_records"]) == (2, 2, 2)
    # answers number scenes from 1, targets from 0: "3" hits scene 2, "1" (scene 0) misses scene 1
    assert scenes["most_replayed_top1"] == 0.5 and scenes["most_replayed_n"] == 2
    # ROUGE-L of each generated comment vs its best real one: "nice dog" 1, "so cute"/"cute" 2/3;
    # the two answers without comments score 0 and are counted missing
    assert m["comments"]["similarity"] == pytest.approx((1 + 2 / 3) / 2 / 3)
    assert (m["comments"]["n"], m["comments"]["n_missing"]) == (3, 2)
    # no model ran: no perplexity, and the report says why (no scored tokens)
    assert math.isnan(m["comments"]["perplexity"]) and m["comments"]["perplexity_tokens"] == 0


# ----------------------------------------------------------------------------------- the runner
@pytest.mark.slow
def test_evaluate_compares_two_checkpoints(tmp_path):
    base = build_tiny(tmp_path / "ckpt" / "base", "llava", seed=0)
    other = build_tiny(tmp_path / "ckpt" / "other", "llava", seed=1)
    counts = build_release(tmp_path / "release")
    write_tasks(tmp_path / "tasks")
    config_path = tmp_path / "eval.yaml"
    config_path.write_text(yaml.safe_dump({
        "checkpoints": [{"name": "base", "path": "ckpt/base"}, {"name": "behavior-ift", "path": str(other)}],
        "behavior": {"path": "release"},
        "tasks": ["tasks/emotion.jsonl", "tasks/caption.jsonl"],
        "output_dir": "out", "max_new_tokens": 8, "batch_size": 2, "num_frames": 2, "max_length": 1024,
    }))
    config = load_eval_config(config_path)
    assert config.behavior.split == "test" and config.checkpoints[0].path == str(base.resolve())
    results = run.evaluate(config)

    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert list(saved["checkpoints"]) == ["base", "behavior-ift"]
    assert saved["data"]["behavior_records"] == counts["behavior_test"]  # content and train rows excluded
    for name in ("base", "behavior-ift"):
        m = saved["checkpoints"][name]
        assert m["behavior"]["n_records"] == counts["behavior_test"]
        assert m["behavior"]["score"]["n"] + m["behavior"]["score"]["n_missing"] == 3
        assert m["behavior"]["view_count"]["n"] + m["behavior"]["view_count"]["n_missing"] == 1
        assert m["behavior"]["comments"]["perplexity_records"] == 4
        assert m["emotion"]["n"] == 2 and m["caption"]["n"] == 1
        rows = (tmp_path / "out" / "predictions" / name / "behavior.jsonl").read_text().splitlines()
        assert sorted(json.loads(r)["id"] for r in rows) == sorted(
            ["reddit:r0:behavior", "reddit:r1:behavior", "reddit:r2:behavior", "youtube:v0:behavior"])
    # different weights, different scores; the in-memory results are what was saved
    ppl = [saved["checkpoints"][n]["behavior"]["answer_perplexity"] for n in ("base", "behavior-ift")]
    assert ppl[0] != pytest.approx(ppl[1])
    assert results["checkpoints"]["base"]["behavior"]["answer_perplexity"] == pytest.approx(ppl[0])

    md = (tmp_path / "out" / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    assert "base" in header and "behavior-ift" in header
    row = next(line for line in md.splitlines() if line.startswith("| behavior / answer_perplexity"))
    assert row.count("**") == 2  # the better (lower) perplexity is marked
    assert any(line.startswith("| emotion / accuracy ") for line in md.splitlines())


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize("data, expected", [
    ({"checkpoints": [{"name": "a", "path": "org/model"}], "tasks": ["t.jsonl"], "output_dir": "o",
      "max_new_tokns": 5}, "field 'max_new_tokns': unknown field (did you mean 'max_new_tokens'?)"),
    ({"tasks": ["t.jsonl"], "output_dir": "o"}, "field 'checkpoints': required but missing"),
    ({"checkpoints": [{"name": "a", "path": "org/model", "model_type": "gpt2"}], "tasks": ["t.jsonl"],
      "output_dir": "o"}, "field 'checkpoints[0].model_type': unknown model_type 'gpt2'"),
    ({"checkpoints": [{"name": "a", "path": "org/model"}], "tasks": ["missing.jsonl"], "output_dir": "o"},
     "field 'tasks[0]': no task file at"),
    ({"checkpoints": [{"name": "a", "path": "./nowhere"}], "tasks": ["t.jsonl"], "output_dir": "o"},
     "field 'checkpoints[0].path': no checkpoint folder at"),
    ({"checkpoints": [{"name": "a", "path": "org/m"}, {"name": "a", "path": "org/n"}], "tasks": ["t.jsonl"],
      "output_dir": "o"}, "checkpoint names must be unique"),
    ({"checkpoints": [{"name": "a", "path": "org/m"}], "output_dir": "o"}, "nothing to evaluate"),
    ({"checkpoints": [{"name": "a", "path": "org/m"}], "behavior": {"path": "r", "hub_id": "org/d"},
      "output_dir": "o"}, "field 'behavior': give exactly one of"),
    ({"checkpoints": [{"name": "a", "path": "org/m"}], "behavior": {"path": "no-release"}, "output_dir": "o"},
     "field 'behavior.path':"),
    ({"checkpoints": [{"name": "a", "path": "org/m"}], "tasks": ["t.jsonl"], "output_dir": "o",
      "batch_size": 0}, "field 'batch_size': Input should be greater than 0"),
])
def test_config_errors_name_file_and_field(tmp_path, data, expected):
    (tmp_path / "t.jsonl").write_text("{}\n")
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_eval_config(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value), str(info.value)


def test_config_resolves_paths_against_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.jsonl").write_text("{}\n")
    (tmp_path / "sub" / "ckpt").mkdir()
    path = tmp_path / "sub" / "eval.yaml"
    path.write_text(yaml.safe_dump({
        "checkpoints": [{"name": "local", "path": "ckpt"}, {"name": "hub", "path": "org/m"}],
        "behavior": {"hub_id": "org/blift"}, "tasks": ["t.jsonl"], "output_dir": "out"}))
    config = load_eval_config(path)
    assert config.checkpoints[0].path == str((tmp_path / "sub" / "ckpt").resolve())
    assert config.checkpoints[1].path == "org/m"  # not a folder: a Hub id, as written
    assert config.tasks == [str((tmp_path / "sub" / "t.jsonl").resolve())]
    assert config.output_dir == str((tmp_path / "sub" / "out").resolve())
    assert config.behavior.split == "test" and config.behavior.hub_id == "org/blift"
    assert (config.max_new_tokens, config.batch_size, config.precision) == (256, 4, "auto")
    with pytest.raises(ConfigError, match="not valid YAML"):
        path.write_text("checkpoints: [")
        load_eval_config(path)


def test_a_record_the_collator_refuses_is_skipped_and_named(tiny):
    short = load_tiny(tiny.folder, "llava", max_length=200)
    examples = [reddit_record(i, 7, ["nice dog"]) for i in range(3)]
    long_question = "<image>\n" + " ".join(["the dog is running in the park"] * 40)
    examples[1].conversations[0] = {"from": "human", "value": long_question}
    preds, skipped = beh.predict_behavior(short.model, short.collator, examples, max_new_tokens=3, batch_size=3)
    assert [p.id for p in preds] == [examples[0].id, examples[2].id]
    assert len(skipped) == 1 and skipped[0][0] == examples[1].id and "max_length" in skipped[0][1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_gpu_scores_agree_with_fp32_cpu(tiny):
    examples = [reddit_record(i, 10, ["nice dog"]) for i in range(2)]
    answers = ["a dog in the park", "the sky"]
    cpu = score_continuations(tiny.model, tiny.collator, examples, answers)
    gpu_model = model_class("llava").from_pretrained(tiny.folder, dtype=torch.bfloat16).cuda().eval()
    gpu = score_continuations(gpu_model, tiny.collator, examples, answers)
    for a, b in zip(cpu, gpu):
        assert a.token_ids == b.token_ids
        assert b.mean_logprob == pytest.approx(a.mean_logprob, abs=0.05)
    assert generate(gpu_model, tiny.collator, examples, max_new_tokens=4)  # runs on the GPU end to end
