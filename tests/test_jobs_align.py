"""The align job: quick config compresses the tiny model, aligns it, writes report and model."""

import json

import pytest

from configs import align as align_config
from penrose_jax.io import model_registry
from penrose_jax.jobs import align


def test_quick_align_writes_report_metrics_and_model(tmp_path):
  config = align_config.get_config("quick")
  config.num_steps = 4
  # The per-matrix whitened quick model starts close (logit KL ~1e-3): 3e-3 overshoots it.
  config.optimizer.learning_rate = 1e-3
  report = align.run(config, tmp_path)
  on_disk = json.loads((tmp_path / "report.json").read_text())
  for key in ("job", "config", "wall_s", "model", "hidden_kl_before", "hidden_kl_after",
              "logit_kl_before", "logit_kl_after", "ppl_before", "ppl_after", "train_tokens",
              "tokens_per_s"):
    assert key in on_disk, key
  assert report["train_tokens"] == 4 * config.batch_size * config.window
  assert (tmp_path / "train" / "metrics.jsonl").read_text().count("\n") >= 4
  # The quick compression keeps every matrix alive (min_rank): gradients flow and the
  # held-out KL goes down (before the rank floor, whole matrices were zero and it stayed put).
  records = [json.loads(line) for line in
             (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
  assert all(r["grad_norm"] > 0 for r in records)
  assert report["logit_kl_after"] < report["logit_kl_before"]
  # The quality-vs-tokens curve: held-out perplexity over the teacher's, from 0 tokens on.
  curve = report["quality_curve"]["demo_corpus"]
  assert curve["tokens"][0] == 0 and len(curve["tokens"]) >= 2
  assert all(value > 0 for value in curve["ppl_over_teacher"])
  assert (tmp_path / "align_curve.png").is_file()
  assert report["val_teacher"]["ppl_demo_corpus"] > 0
  loaded = model_registry.load(str(tmp_path / "model"))
  assert loaded.config.num_layers == 2


def test_student_and_teacher_must_match(tmp_path, tiny_model_dir):
  config = align_config.get_config("quick")
  other = model_registry.build_tiny_model(tmp_path / "other", num_layers=3)
  config.student = str(other)
  config.teacher = str(tiny_model_dir)
  with pytest.raises(ValueError, match="different architectures"):
    align.run(config, tmp_path / "out")
