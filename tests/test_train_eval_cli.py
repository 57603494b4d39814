"""`blift train` then `blift eval`, as a researcher runs them: config files in, a fine-tuned model,
then a results table comparing the base checkpoint with the fine-tuned one (tiny random LLaVA, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from model_releases import build_release, write_release, write_tasks
from tiny_llava import build_tiny

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def blift(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "blift.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)


def test_train_then_eval_from_the_command_line(tmp_path):
    base = build_tiny(tmp_path / "base", "llava", seed=0)
    train_release = write_release(tmp_path / "train_data")
    out = tmp_path / "trained"
    train_cfg = tmp_path / "train.yaml"
    train_cfg.write_text(yaml.safe_dump({
        "model": str(base), "data": [{"path": str(train_release)}], "output_dir": str(out),
        "learning_rate": 3e-3, "warmup_ratio": 0.0, "per_device_batch_size": 4, "max_length": 256,
        "logging_steps": 1, "dataloader_workers": 0, "gradient_checkpointing": False, "num_frames": 2}))

    proc = blift("train", str(train_cfg), "--max-steps", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "trained 4 steps" in proc.stdout
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 4 and len(summary["losses"]) == 4
    assert summary["kinds"] == {"behavior": [6, 6], "content": [6, 6]}  # 1:1 by default
    assert (out / "config.json").exists() and (out / "processor_config.json").exists()

    eval_release = tmp_path / "eval_data"
    counts = build_release(eval_release)
    mc, _ = write_tasks(tmp_path / "tasks")
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(yaml.safe_dump({
        "checkpoints": [{"name": "base", "path": str(base)}, {"name": "behavior-ift", "path": str(out)}],
        "behavior": {"path": str(eval_release)}, "tasks": [str(mc)], "output_dir": str(tmp_path / "results"),
        "max_new_tokens": 8, "num_frames": 2, "max_length": 512}))
    proc = blift("eval", str(eval_cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert list(results["checkpoints"]) == ["base", "behavior-ift"]
    for metrics in results["checkpoints"].values():
        assert metrics["behavior"]["n_records"] == counts["behavior_test"]
        assert 0.0 <= metrics["emotion"]["accuracy"] <= 1.0
    # the trained model differs from its base: their comment perplexities are not the same number
    ppl = [m["behavior"]["comments"]["perplexity"] for m in results["checkpoints"].values()]
    assert ppl[0] != ppl[1]
    table = (tmp_path / "results" / "results.md").read_text()
    assert "\n| metric | base | behavior-ift |\n" in table
    assert "| behavior / comments.perplexity |" in table and "| emotion / accuracy |" in table
    assert "behavior-ift" in proc.stdout  # the table is printed


def test_train_config_error_names_file_and_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"model": "x", "data": [{"path": "y"}], "output_dir": "o", "learning_rat": 1e-5}))
    proc = blift("train", str(cfg))
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "learning_rat" in proc.stderr
