"""qa_tune with the recall material: self-test before / during / after, plateau stop.

A resumed stopped run: tests/test_qa_trainer_curve.py."""

import json

from configs import qa_tune as qa_tune_config
from penrose_jax.jobs import qa_tune
from penrose_jax.qa import fact_recall


def _config(tiny_model_dir):
  config = qa_tune_config.get_config("injection")
  config.model = str(tiny_model_dir)
  config.documents = "veltrane_ceramic"
  config.exam_cache_dir = ""
  config.eval.benchmarks = ""
  config.open_exam_path = ""  # greedy answers are the slow part; the self-test has its own
  config.eval.answer_max_new_tokens = 2
  config.selftest.max_new_tokens = 2
  config.selftest.curve_per_doc = 2
  config.seq_len = 64  # the tiny model's short chat prompt; keeps the test fast
  config.epochs_per_section = 0.5
  config.curve_points = 3
  config.save_model = False
  return config


def test_recall_recipe_reports_selftest_and_stops_at_a_plateau(tmp_path, tiny_model_dir):
  config = _config(tiny_model_dir)
  assert config.qa_sources == "recall" and config.learning_rate == 0.0
  config.patience = 1
  config.plateau_min_delta = 1.0  # nothing counts as progress: stop at the second inner point
  report = qa_tune.run(config, tmp_path / "run")
  facts = report["selftest_after"]["questions"]
  assert facts == report["fact_exposures"]["facts"] >= 10
  assert report["selftest_before"]["questions"] == facts
  assert report["selftest_after_trained_wordings"]["questions"] == facts
  assert report["selftest_after"]["by_doc"]["veltrane_ceramic"].endswith(
      f"of {facts} facts recalled")
  assert report["learning_rate"] == 3e-3  # LoRA's rate, picked by the trainable choice
  assert report["fact_exposures"]["min"] >= 1
  # The diagnosis: gold answers' first-token rank and log-prob on each question set.
  for stage in ("before", "after"):
    ranks = report[f"gold_ranks_{stage}"]
    assert ranks["exam"] is None  # no open exam in this test
    for split in ("trained", "heldout"):
      assert ranks[split]["median_rank"] >= 1 and ranks[split]["logprob_per_token"] < 0
  # Stopped at the plateau: fewer updates than planned, the curve ends where training ended.
  assert report["train_steps"] < report["planned_steps"]
  assert any("stopped at step" in note for note in report["notes"])
  curve = report["exam_curve"]
  assert [p["step"] for p in curve] == sorted({p["step"] for p in curve})
  assert curve[-1]["step"] == report["train_steps"]
  assert all("selftest_recall" in p and "exam_accuracy_mean" in p for p in curve)
  assert (tmp_path / "run" / "plots" / "recall_curve.png").is_file()
  answers = json.loads((tmp_path / "run" / "selftest_answers.json").read_text())
  assert len(answers["after_heldout"]) == len(answers["after_trained"]) == facts
  selftest = fact_recall.read_selftest([tmp_path / "run" / "qa_pairs.selftest.jsonl"])
  assert len(selftest) == 2 * facts
