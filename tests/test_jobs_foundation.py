"""The evaluate / generate / pipeline jobs run their quick variants end to end on the tiny model."""

import json
import math
import pathlib

import pytest

from configs import evaluate as evaluate_config
from configs import generate as generate_config
from configs import pipeline as pipeline_config
from penrose_jax.jobs import evaluate, generate, model_source, pipeline

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


def test_unknown_config_variant_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown variant 'fast'"):
    pipeline_config.get_config("fast")
