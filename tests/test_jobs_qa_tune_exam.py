"""qa_tune with a user's exam: before/after keys, documents not trained, cached "before"."""

import json

import pytest

from configs import qa_tune as qa_tune_config
from penrose_jax.evaluation import exam_files
from penrose_jax.jobs import exam_eval, qa_tune


def _config(tiny_model_dir, cache_dir):
  config = qa_tune_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.corpus = "package:injection_corpus"
  config.qa_sources = "rule"
  config.heldout_path = ""
  config.curated_path = ""
  config.exam_path = "package:injection_exam"
  config.open_exam_path = "package:injection_open_exam"
  config.exam_cache_dir = str(cache_dir)
  config.eval.benchmarks = ""
  config.eval.answer_max_new_tokens = 2
  config.save_model = False
  return config


def test_exam_before_after_and_the_before_cache(tmp_path, tiny_model_dir, monkeypatch):
  calls = []
  real_score = exam_eval.score
  monkeypatch.setattr(exam_eval, "score", lambda *a, **k: calls.append(1) or real_score(*a, **k))
  config = _config(tiny_model_dir, tmp_path / "cache")
  config.curve_points = 3
  report = qa_tune.run(config, tmp_path / "run")
  # The learning curve: before, two points inside the run (at section ends), after.
  curve = report["exam_curve"]
  assert [p["step"] for p in curve][0] == 0 and curve[-1]["step"] == report["train_steps"]
  assert len(curve) == 4 and curve[1]["step"] < curve[2]["step"] < curve[-1]["step"]
  assert curve[0]["exam_accuracy_sum"] == report["exam_accuracy_sum_before"]
  assert curve[-1]["exam_accuracy_mean"] == report["exam_accuracy_mean_after"]
  assert len(calls) == 4  # before, the 2 inner curve points, after
  # max_documents=2: the questions about the other 6 documents are counted, not scored.
  assert report["exam_questions"] == 14 and report["open_exam_questions"] == 14
  assert report["exam_questions_excluded"] == 2 * (56 - 14)
  assert any("not scored" in note for note in report["skipped"])
  for key in exam_eval.SCALAR_KEYS[:-1]:
    for stage in ("before", "after"):
      assert 0.0 <= report[f"{key}_{stage}"] <= 1.0, (key, stage)
  assert set(report["exam_by_doc_after"]) == {"cryonel_superconductor", "lumora_perovskite"}
  answers = json.loads((tmp_path / "run" / "exam_answers.json").read_text())
  assert len(answers["before"]["choice"]) == 14 and len(answers["after"]["open"]) == 14
  assert len(list((tmp_path / "cache").glob("exam_before_*.json"))) == 1
  # A sibling run (another workdir) of the same model and exam reuses "before" from the cache.
  config.mode = "none"
  other = qa_tune.run(config, tmp_path / "other")
  assert len(calls) == 4 and other["exam_curve"] == []
  assert other["exam_accuracy_sum_before"] == report["exam_accuracy_sum_before"]
  assert (tmp_path / "other" / "exam_before.json").is_file()


def test_a_bad_exam_line_stops_the_run_before_qa_generation(tmp_path, tiny_model_dir):
  bad = tmp_path / "exam.jsonl"
  bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "gold": 5}) + "\n")
  config = _config(tiny_model_dir, "")
  config.exam_path = str(bad)
  with pytest.raises(exam_files.ExamError, match=f"{bad}:1: gold=5 outside 0..1"):
    qa_tune.run(config, tmp_path / "run")
  assert not (tmp_path / "run" / "qa_pairs.jsonl").exists()
