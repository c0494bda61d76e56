"""The evaluate / generate / pipeline jobs run their quick variants end to end on the tiny model."""

import json
import math
import pathlib

import ml_collections
import pytest

from configs import evaluate as evaluate_config
from configs import generate as generate_config
from configs import pipeline as pipeline_config
from penrose_jax.jobs import align, evaluate, generate, model_source, pipeline

SHARED = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_evaluate_quick_writes_report(tmp_path, tiny_model_dir):
  config = evaluate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  report = evaluate.run(config, tmp_path)
  on_disk = json.loads((tmp_path / "report.json").read_text())
  assert on_disk["job"] == "evaluate"
  for key in ("config", "wall_s", "model", "ppl", "accuracy", "skipped"):
    assert key in on_disk
  assert "demo_corpus" in report["ppl"]
  # A random tiny model is close to uniform over its vocabulary.
  vocab = model_source.load(str(tiny_model_dir)).config.vocab_size
  assert 0.3 * vocab < report["ppl"]["demo_corpus"] < 3 * vocab
  if SHARED.exists():
    assert set(report["accuracy"]) == {"arc_easy", "piqa", "copa"}
    assert all(0.0 <= a <= 1.0 for a in report["accuracy"].values())
  else:
    assert any("not found" in s for s in report["skipped"])


def test_evaluate_skips_missing_data_and_says_so(tmp_path, tiny_model_dir):
  config = evaluate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.text_sets = {"missing": str(tmp_path / "nope"), "demo_corpus": "package:demo_corpus"}
  config.benchmark_dir = str(tmp_path / "no_benchmarks")
  report = evaluate.run(config, tmp_path / "out")
  assert report["accuracy"] == {}
  assert any("missing" in s for s in report["skipped"])
  assert any("arc_easy" in s for s in report["skipped"])


def test_generate_quick(tmp_path, tiny_model_dir):
  config = generate_config.get_config("quick")
  config.model = str(tiny_model_dir)
  report = generate.run(config, tmp_path)
  assert report["job"] == "generate"
  assert isinstance(report["completion"], str)
  assert (tmp_path / "report.json").exists()


def test_pipeline_quick_writes_markdown_and_plots(tmp_path):
  config = pipeline_config.get_config("quick")
  report = pipeline.run(config, tmp_path)
  text = (tmp_path / "report.md").read_text()
  assert "# penrose-jax pipeline report" in text
  assert list((tmp_path / "plots").glob("*.png"))
  assert math.isfinite(report["wall_s"])
  # Alignment takes the student's and teacher's perplexities from the compress stage (same
  # windows) instead of measuring them again; the values are the compress report's.
  compress_report = json.loads((tmp_path / "compress" / "report.json").read_text())
  align_report = report["stages"]["align"]
  assert align_report["ppl_reused_from_compress"] == ["demo_corpus", "lambada"]
  for name in align_report["ppl_reused_from_compress"]:
    assert align_report["ppl_before"][name] == compress_report["ppl_compressed_by_set"][name]
    assert align_report["ppl_teacher"][name] == compress_report["ppl_dense_by_set"][name]
  # Other windows, or another student, and nothing is reused.
  eval_config = ml_collections.ConfigDict(config.align.eval.to_dict())
  report_path = str(tmp_path / "compress" / "report.json")
  student = str(tmp_path / "compress" / "model")
  teacher = compress_report["config"]["model"]
  assert align.measured_by_compress(report_path, eval_config, student, teacher)[0]
  eval_config.max_windows = 5
  assert align.measured_by_compress(report_path, eval_config, student, teacher) == ({}, {})
  eval_config.max_windows = config.align.eval.max_windows
  assert align.measured_by_compress(report_path, eval_config, str(tmp_path), teacher) == ({}, {})
  with pytest.raises(ValueError, match="eval.compress_report=.*nothing.json"):
    align.measured_by_compress(str(tmp_path / "nothing.json"), eval_config, student, teacher)


def test_unknown_config_variant_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown variant 'fast'"):
    pipeline_config.get_config("fast")
