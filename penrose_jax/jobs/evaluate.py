"""The `evaluate` job: perplexity per text set and accuracy per benchmark for any checkpoint,
and a user's closed-book exam (multiple-choice and open questions,
evaluation/closed_book.py) when configured.

Parallelism: `config.parallel` builds the mesh at start-up; the loaded params are placed with
the sharding rules and perplexity / scoring batches are split over the data axes.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import ml_collections
from absl import logging

from penrose_jax import parallel
from penrose_jax.data import paths, text_sources
from penrose_jax.evaluation import benchmarks, closed_book, exam_files, extraction, perplexity
from penrose_jax.io import model_registry
from penrose_jax.jobs import config_checks
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import report_json


def evaluate_loaded(loaded: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Scores one loaded model on the configured text sets and benchmarks.

  Missing data paths (e.g. no ../shared beside a fresh clone) are skipped and listed under
  'skipped' instead of failing, so the job still runs on the package's own data.

  Args:
    loaded: a model_registry.Loaded (config, params, tokenizer, name).
    config: needs text_sets (name -> path), window, max_windows, benchmarks (comma list),
      benchmark_dir, max_items, batch_size; optional `extraction` (SOFC-Exp tasks, see
      configs/evaluate.py), `skip_text_sets` (comma list of text_sets names to leave out) and
      the exam fields `exam_path`, `open_exam_path` (comma lists of JSONL files, see
      evaluation/exam_files.py), `exam_corpus` (doc_ids are checked against it; '' = no check),
      `exam_max_new_tokens`.

  Returns:
    {'ppl': {set: ppl}, 'ppl_detail': {...}, 'accuracy': {bench: acc}, 'skipped': [...]}, plus
    'extraction' (evaluation/extraction.py) when that section is enabled and its data exists,
    plus the `evaluation.closed_book.evaluate_exam` keys (exam_accuracy_sum, exam_accuracy_mean,
    exam_em, exam_f1, exam_by_doc, exam_answers, ...) when `exam_path` / `open_exam_path` name
    files.
  """
  metrics: dict[str, Any] = {"ppl": {}, "ppl_detail": {}, "accuracy": {}, "skipped": []}
  # A user's exam is read first: an unusable question (exam_files.ExamError names file and line)
  # stops the run before minutes of scoring, and no question is ever dropped.
  choice, open_ = exam_files.load_exams(config.get("exam_path", ""),
                                        config.get("open_exam_path", ""),
                                        exam_files.corpus_doc_ids(config.get("exam_corpus", "")))
  # Compressed leaves are scored through their dense equivalent: same values, and the model's
  # dense compiled forward instead of a compile of the compressed structure.
  loaded = loaded._replace(params=dense_equivalent(loaded.params))
  max_windows = config.max_windows if config.max_windows > 0 else None
  text_sets = text_sources.selected_text_sets(config.text_sets,
                                              config.get("skip_text_sets", ""))
  results, missing = perplexity.text_set_perplexities(
      loaded.params, loaded.config, loaded.tokenizer, text_sets, window=config.window,
      max_windows=max_windows, batch_size=config.batch_size, progress=True)
  for name, path in missing:
    metrics["skipped"].append(f"text set {name}: {path} not found")
    logging.warning("skipping text set %s: %s not found", name, path)
  for name, result in results.items():
    metrics["ppl"][name] = result["ppl"]
    metrics["ppl_detail"][name] = result
  max_items = config.max_items if config.max_items > 0 else None
  general = benchmarks.benchmark_accuracies(
      loaded.params, loaded.config, loaded.tokenizer, config.benchmark_dir, config.benchmarks,
      max_items, config.batch_size, progress=True)
  metrics["accuracy"] = general["accuracy"]
  metrics["skipped"] += general["skipped"]
  if general["accuracy_detail"]:
    metrics["accuracy_detail"] = general["accuracy_detail"]
  ext = config.get("extraction")
  if ext is not None and ext.enabled:
    root = paths.resolve_data_path(ext.data_root)
    if not (root / "metadata.tsv").is_file():
      metrics["skipped"].append(f"extraction: {root / 'metadata.tsv'} not found")
      logging.warning("skipping extraction: %s not found", root / "metadata.tsv")
    else:
      metrics["extraction"] = extraction.evaluate_extraction(
          loaded.params, loaded.config, loaded.tokenizer,
          extraction.settings_from_config(ext, str(root)), progress=True)
  if choice or open_:
    metrics.update(closed_book.evaluate_exam(loaded.params, loaded.config, loaded.tokenizer, choice,
                                             open_, config.batch_size,
                                             config.get("exam_max_new_tokens", 24)))
  return metrics


@workdir_guard.claims_workdir("evaluate")
def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Evaluates `config.model` and writes DIR/report.json.

  Args:
    config: see configs/evaluate.py.
    workdir: output folder (created).

  Returns:
    The report dict.
  """
  start = time.time()
  mesh, rules, data_axes = parallel.setup_for_job(config)
  workdir = pathlib.Path(workdir)
  loaded = model_registry.load(config.model, cache_dir=workdir / "model_cache")
  config_checks.check_context(config, loaded.config.max_position, loaded.name)
  loaded = loaded._replace(params=parallel.shard_params(loaded.params, mesh, rules))
  with parallel.batch_placement(mesh, data_axes):
    metrics = evaluate_loaded(loaded, config)
  measured = ("ppl", "accuracy", "extraction", "exam_accuracy_sum", "exam_em")
  if not any(metrics.get(key) not in (None, {}) for key in measured):
    raise ValueError(f"evaluate measured nothing: every configured text set, benchmark and "
                     f"exam was missing ({'; '.join(metrics['skipped']) or 'none configured'})")
  if "exam_answers" in metrics:  # per-question rows go beside the report, not into it
    report_json.write_json_atomic(workdir / "exam_answers.json", metrics.pop("exam_answers"))
  report = report_json.build_report("evaluate", config, loaded.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  return report
