"""The `evaluate` job: perplexity per text set and accuracy per benchmark for any checkpoint.

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
from penrose_jax.data import text_sources
from penrose_jax.evaluation import multiple_choice, perplexity
from penrose_jax.jobs import model_source
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import report_json


def evaluate_loaded(loaded: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Scores one loaded model on the configured text sets and benchmarks.

  Missing data paths (e.g. no ../shared beside a fresh clone) are skipped and listed under
  'skipped' instead of failing, so the job still runs on the package's own data.

  Args:
    loaded: a model_source.Loaded (config, params, tokenizer, name).
    config: needs text_sets (name -> path), window, max_windows, benchmarks (comma list),
      benchmark_dir, max_items, batch_size.

  Returns:
    {'ppl': {set: ppl}, 'ppl_detail': {...}, 'accuracy': {bench: acc}, 'skipped': [...]}.
  """
  metrics: dict[str, Any] = {"ppl": {}, "ppl_detail": {}, "accuracy": {}, "skipped": []}
  # Compressed leaves are scored through their dense equivalent: same values, and the model's
  # dense compiled forward instead of a compile of the compressed structure.
  loaded = loaded._replace(params=dense_equivalent(loaded.params))
  max_windows = config.max_windows if config.max_windows > 0 else None
  for name, spec in sorted(config.text_sets.items()):
    path = text_sources.source_path(spec)
    if not path.exists():
      metrics["skipped"].append(f"text set {name}: {path} not found")
      logging.warning("skipping text set %s: %s not found", name, path)
      continue
    result = perplexity.text_perplexity(loaded.params, loaded.config, loaded.tokenizer, spec,
                                        window=config.window, max_windows=max_windows,
                                        batch_size=config.batch_size, progress=True)
    metrics["ppl"][name] = result["ppl"]
    metrics["ppl_detail"][name] = result
  max_items = config.max_items if config.max_items > 0 else None
  for bench in [b.strip() for b in config.benchmarks.split(",") if b.strip()]:
    file = pathlib.Path(model_source.resolve_data_path(config.benchmark_dir)) / f"{bench}.jsonl"
    if not file.exists():
      metrics["skipped"].append(f"benchmark {bench}: {file} not found")
      logging.warning("skipping benchmark %s: %s not found", bench, file)
      continue
    items = multiple_choice.load_benchmark(file, bench, max_items)
    result = multiple_choice.score_items(loaded.params, loaded.config, loaded.tokenizer, items,
                                         batch_size=config.batch_size, progress=True)
    metrics["accuracy"][bench] = result["accuracy"]
    metrics.setdefault("accuracy_detail", {})[bench] = result
  return metrics


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
  loaded = model_source.load(config.model, cache_dir=workdir / "model_cache")
  loaded = loaded._replace(params=parallel.shard_params(loaded.params, mesh, rules))
  with parallel.batch_placement(mesh, data_axes):
    metrics = evaluate_loaded(loaded, config)
  report = report_json.build_report("evaluate", config, loaded.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  return report
