"""Accuracy on the general multiple-choice benchmarks named in a config (forgetting checks).

Shared by the evaluate job and the closed-book scorer (closed_book.py), so neither reaches into the
other's layer. A benchmark whose file is missing (e.g. no ../shared beside a fresh clone) is
skipped and named, not fatal.
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional

from absl import logging

from penrose_jax.data import paths
from penrose_jax.evaluation import multiple_choice


def benchmark_accuracies(params: Any, model_config: Any, tokenizer: Any, benchmark_dir: str,
                         benchmarks: str, max_items: Optional[int], batch_size: int,
                         progress: bool = False) -> dict[str, Any]:
  """Scores the model on each benchmark file `benchmark_dir/NAME.jsonl` that exists.

  Args:
    params: params pytree (dense, or dense equivalent of compressed leaves).
    model_config: the architecture.
    tokenizer: TextTokenizer.
    benchmark_dir: folder of the benchmark files (a config data path, see data/paths.py).
    benchmarks: comma list of names ('' = none).
    max_items: items per benchmark (None = all).
    batch_size: scoring batch size.
    progress: show progress bars.

  Returns:
    {'accuracy': {name: acc}, 'accuracy_detail': {name: score_items result},
    'skipped': [messages for missing files]}.
  """
  out: dict[str, Any] = {"accuracy": {}, "accuracy_detail": {}, "skipped": []}
  for bench in [b.strip() for b in benchmarks.split(",") if b.strip()]:
    file = pathlib.Path(paths.resolve_data_path(benchmark_dir)) / f"{bench}.jsonl"
    if not file.exists():
      out["skipped"].append(f"benchmark {bench}: {file} not found")
      logging.warning("skipping benchmark %s: %s not found", bench, file)
      continue
    items = multiple_choice.load_benchmark(file, bench, max_items)
    result = multiple_choice.score_items(params, model_config, tokenizer, items,
                                         batch_size=batch_size, progress=progress)
    out["accuracy"][bench] = result["accuracy"]
    out["accuracy_detail"][bench] = result
  return out
