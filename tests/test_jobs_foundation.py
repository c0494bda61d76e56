"""The evaluate / generate / pipeline jobs run their quick variants end to end on the tiny model."""

import json
import math

import ml_collections
import pytest

from configs import evaluate as evaluate_config
from configs import generate as generate_config
from configs import pipeline as pipeline_config
from penrose_jax.data import paths, text_sources
from penrose_jax.io import model_registry
from penrose_jax.jobs import align, evaluate, generate, pipeline


@pytest.mark.shared_data
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
  vocab = model_registry.load(str(tiny_model_dir)).config.vocab_size
  assert 0.3 * vocab < report["ppl"]["demo_corpus"] < 3 * vocab
  if paths.resolve_data_path(config.benchmark_dir).exists():  # ../shared, unless hidden
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


@pytest.mark.shared_data
def test_pipeline_quick_writes_markdown_and_plots(tmp_path):
  config = pipeline_config.get_config("quick")
  report = pipeline.run(config, tmp_path)
  text = (tmp_path / "report.md").read_text()
  assert "# penrose-jax pipeline report" in text
  _check_pipeline_report(report, text, tmp_path)
  assert math.isfinite(report["wall_s"])
  # Alignment takes the student's and teacher's perplexities from the compress stage (same
  # windows) instead of measuring them again; the values are the compress report's.
  compress_report = json.loads((tmp_path / "compress" / "report.json").read_text())
  align_report = report["stages"]["align"]
  # Every set both stages measured: the packaged sets always, lambada / SOFC dev where
  # ../shared exists.
  measured = sorted(name for name, spec in config.align.eval.text_sets.items()
                    if text_sources.source_path(spec).exists())
  assert {"demo_corpus", "general_text"} <= set(measured)
  assert align_report["ppl_reused_from_compress"] == measured
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


STAGE_ROWS = ("dense", "warmed up", "compressed", "aligned", "Q&A-tuned")
PLOTS = ("ppl_by_stage", "ppl_x_dense_by_stage", "hidden_divergence_per_layer", "align_loss",
         "qa_tune_sections")


def _check_pipeline_report(report, text, workdir):
  """report.md's headline table, chat section and plots; every stage's packaged-set ppl."""
  summary = report["summary"]
  for stage in ("dense", "warmed", "compressed", "aligned", "qa_tuned"):
    for name in ("demo_corpus", "general_text"):
      assert math.isfinite(summary["ppl"][stage][name]), (stage, name)
      assert summary["ppl_x_dense"][stage][name] > 0, (stage, name)
  cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
  header = cells(next(line for line in text.splitlines() if line.startswith("| stage |")))
  columns = ("demo_corpus", "demo_corpus x dense", "general_text", "general_text x dense")
  assert set(columns) <= set(header)
  for row in STAGE_ROWS:  # every stage row has a value in every packaged-set column
    line = cells(next(line for line in text.splitlines() if line.startswith(f"| {row} |")))
    assert all(line[header.index(c)] != "-" for c in columns), line
  assert summary["ppl_x_dense"]["dense"]["demo_corpus"] == 1.0
  assert isinstance(report["chat"]["final_answer"], str)
  assert "final (Q&A-tuned)" in text
  assert "python -m experiments.generate --config=configs/generate.py --config.model=" in text
  assert "qa_tune/model" in text
  # Every stage's model answered the chat prompt (the report shows where an answer breaks).
  assert set(report["chat"]["stage_answers"]) == {"warmup", "compress", "align", "qa_tune"}
  for label in ("| compressed |", "| aligned |", "| warmed up |"):
    assert sum(line.startswith(label) for line in text.splitlines()) >= 2, label
  _check_recall_stage(report, text, workdir)
  _check_warmup_stage(report, text, workdir)
  for name in PLOTS:
    assert (workdir / "plots" / f"{name}.png").stat().st_size > 0, name
    assert f"(plots/{name}.png)" in text
  # SOFC-Exp extraction (on in quick): one row per stage where ../shared has the corpus.
  extraction_rows = report["summary"]["extraction"]
  if paths.resolve_data_path(pipeline_config.get_config("quick").extraction.data_root).exists():
    assert list(extraction_rows)[:2] == ["majority 'no'", "dense 0-shot"]
    for row in ("compressed 1-shot", "aligned 0-shot", "Q&A-tuned 1-shot"):
      assert 0.0 <= extraction_rows[row]["entity_micro_f1"] <= 1.0, row
      assert f"| {row} |" in text
    assert "## SOFC-Exp extraction (dev split)" in text
    assert (workdir / "plots" / "extraction_by_stage.png").stat().st_size > 0
    assert (workdir / "extraction" / "qa_tuned" / "report.json").is_file()
  else:
    assert extraction_rows == {} and "SOFC-Exp extraction" not in text
  tilings = list((workdir / "plots").glob("tiling_*.png"))
  assert tilings and all(f"(plots/{p.name})" in text for p in tilings)
  compress_report = json.loads((workdir / "compress" / "report.json").read_text())
  rel = compress_report["hidden_rel_error_per_layer"]
  assert len(rel) == len(compress_report["hidden_kl_per_layer"])
  assert all(math.isfinite(v) and v >= 0 for v in rel)


def _check_recall_stage(report, text, workdir):
  """The Q&A stage runs the recall recipe with general replay; report.md shows open questions."""
  qa = report["stages"]["qa_tune"]
  assert qa["mode"] == "onepass_augmented" and qa["qa_pairs_by_source"]["recall"] > 0
  assert qa["row_counts"]["general"] > 0  # general replay reached the batches
  assert "packaged fallback" in qa["general_text"]
  assert qa["selftest_after"]["questions"] > 0
  assert "self-test recall (held-out wordings of the taught facts)" in text
  rows = report["open_questions"]
  assert 1 <= len(rows) <= pipeline.OPEN_QUESTIONS
  assert "## Open questions to the final model (self-test, held-out wordings)" in text
  assert rows[0]["question"][:40].replace("|", "\\|") in text


def _check_warmup_stage(report, text, workdir):
  """The warm-up ran on the domain sources, wrote its report, and compress used its model."""
  warm = json.loads((workdir / "warmup" / "report.json").read_text())
  assert warm["job"] == "warmup" and warm["train_steps"] > 0 and warm["documents"] > 0
  assert {"demo_corpus", "general_text"} <= set(warm["ppl_before"]) & set(warm["ppl_after"])
  assert (workdir / "warmup" / "metrics.jsonl").stat().st_size > 0
  compress_report = json.loads((workdir / "compress" / "report.json").read_text())
  assert compress_report["config"]["model"] == str(workdir.resolve() / "warmup" / "model")
  align_report = json.loads((workdir / "align" / "report.json").read_text())
  assert align_report["config"]["teacher"] == str(workdir.resolve() / "warmup" / "model")
  # compress measured the warmed model as its "dense" one, on the warm-up's windows.
  for name, value in warm["ppl_after"].items():
    assert math.isclose(compress_report["ppl_dense_by_set"][name], value, rel_tol=1e-3), name
  assert report["summary"]["ppl"]["warmed"] == warm["ppl_after"]
  assert "## Domain warm-up before compression" in text


def test_pipeline_quick_without_shared_measures_every_stage(tmp_path, monkeypatch):
  # What a clone without ../shared sees: every stage still has the packaged demo corpus and
  # general text, and the report's table has no empty stage row for them.
  monkeypatch.setenv(paths.SHARED_DIR_ENV, str(tmp_path / "no_shared"))
  config = pipeline_config.get_config("quick")
  report = pipeline.run(config, tmp_path / "run")
  text = (tmp_path / "run" / "report.md").read_text()
  _check_pipeline_report(report, text, tmp_path / "run")
  for stage in ("dense", "final"):
    assert {"demo_corpus", "general_text"} <= set(report["stages"][stage]["ppl"])
  assert set(report["summary"]["ppl"]["qa_tuned"]) == {"demo_corpus", "general_text"}
  header = next(line for line in text.splitlines() if line.startswith("| stage |"))
  assert "sofc_dev" not in header and "lambada" not in header


def test_packaged_general_text_is_several_documents_of_prose():
  docs = text_sources.read_source("package:general_text")
  words = sum(len(body.split()) for _, body in docs)
  assert len(docs) >= 5 and 1500 <= words <= 3000
  assert paths.resolve_data_path("package:general_text").name == "general_corpus"


def test_unknown_config_variant_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown variant 'fast'"):
    pipeline_config.get_config("fast")
