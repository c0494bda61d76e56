"""The SOFC-Exp extraction table and grouped bar plot, shared by the pipeline report and
benchmarks/sofc_extraction.py so both show the same columns.

Low-level on purpose (markdown and matplotlib only): it formats score dicts and knows nothing of
the stages or runs that produced them.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Optional

import numpy as np

from penrose_jax.reporting import markdown, plots

# Extraction scores (evaluation/extraction.py summary keys without the shot suffix) and their
# column labels: detection by log-likelihood, entity / slot span micro-F1.
EXTRACTION_COLUMNS = (("detection_accuracy", "detection acc"), ("detection_f1", "detection F1"),
                      ("entity_micro_f1", "entity F1 exact"),
                      ("entity_micro_f1_overlap", "entity F1 overlap"),
                      ("slot_micro_f1", "slot F1 exact"),
                      ("slot_micro_f1_overlap", "slot F1 overlap"))


def extraction_scores(extraction: dict[str, Any], shot: int) -> dict[str, Optional[float]]:
  """One shot count's headline scores from an evaluate report's `extraction` section.

  Args:
    extraction: report['extraction'] (evaluation/extraction.py).
    shot: the shot count.

  Returns:
    {EXTRACTION_COLUMNS key: value or None (task not run)}.
  """
  summary = extraction.get("summary", {})
  return {key: summary.get(f"{key}_{shot}_shot") for key, _ in EXTRACTION_COLUMNS}


def extraction_table(rows: list[tuple[str, dict[str, Optional[float]]]]) -> str:
  """Markdown table: one row per model / method, the EXTRACTION_COLUMNS scores.

  Args:
    rows: (label, scores) pairs (`extraction_rows`, or the benchmark's methods).

  Returns:
    Markdown table text.
  """
  return markdown.table(["model"] + [label for _, label in EXTRACTION_COLUMNS],
                        [[name] + [scores.get(k) for k, _ in EXTRACTION_COLUMNS]
                         for name, scores in rows])


def extraction_plot(rows: list[tuple[str, dict[str, Optional[float]]]], path: pathlib.Path,
                    title: str) -> pathlib.Path:
  """One grouped bar chart: per score a group, per row (model / method) a bar.

  Args:
    rows: (label, scores) pairs; None (not measured) draws no bar.
    path: destination PNG (written atomically).
    title: figure title.

  Returns:
    The PNG path.
  """
  # plots.plt: pyplot with the Agg backend that reporting.plots selects before importing it.
  wide = max(7.0, 1.3 * len(EXTRACTION_COLUMNS) + 0.4 * len(rows))
  fig, ax = plots.plt.subplots(figsize=(wide, 4))
  width = 0.8 / max(1, len(rows))
  x = np.arange(len(EXTRACTION_COLUMNS))
  for i, (name, scores) in enumerate(rows):
    values = [scores.get(k) for k, _ in EXTRACTION_COLUMNS]
    keep = [j for j, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    ax.bar(x[keep] + (i - (len(rows) - 1) / 2) * width, [float(values[j]) for j in keep],
           width, label=name)
  ax.set_xticks(x, [label for _, label in EXTRACTION_COLUMNS], rotation=15, ha="right")
  ax.set_ylim(0, 1.0)
  ax.set_ylabel("score (0-1)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  return plots.save_figure(fig, path)
