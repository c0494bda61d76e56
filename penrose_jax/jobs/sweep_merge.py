"""Merge committed sweep tables and redraw their x-vs-y plots, without rerunning any run.

A results folder (e.g. results/sweep_bytes) holds results.csv but not the run folders, so a
sweep cannot re-render it after a new column or new runs measured elsewhere (another workdir,
another day). This job reads DIR/results.csv, appends the rows of further results.csv files
whose run names it does not hold yet (a name present twice keeps the first row and records
whether the two agree), fills the source file's bytes (`model_registry.source_bytes`) into rows
that lack them, and rewrites DIR/results.csv and the plots of `sweep_report._xy_plots`.
report.md / report.json are left as the sweep wrote them; reading.md is the place for the
merged table.
"""

from __future__ import annotations

import csv
import pathlib
import re
from typing import Any, Sequence

import ml_collections

from penrose_jax.compression.transform import DEFAULT_INCLUDE
from penrose_jax.io import model_registry
from penrose_jax.jobs.sweep import results_csv_text
from penrose_jax.reporting import report_json, sweep_report

# Columns compared when a run appears in two tables (a deterministic run must agree).
_COMPARED = ("bytes_compressed", "ppl_compressed_by_set.sofc_dev", "ppl_compressed_by_set.lambada")


def parse_cell(text: str) -> Any:
  """A results.csv cell back as a Python value ('' -> None, numbers, booleans, else str).

  Args:
    text: the cell.

  Returns:
    The value.
  """
  if text == "":
    return None
  if text in ("True", "False"):
    return text == "True"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  """Rows of a results.csv with parsed values.

  Args:
    path: the CSV.

  Returns:
    One dict per run, in file order.
  """
  if not path.is_file():
    raise FileNotFoundError(f"{path}: results.csv not found")
  with path.open(newline="", encoding="utf-8") as handle:
    rows = [{k: parse_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
  if rows and "run" not in rows[0]:
    raise ValueError(f"{path}: no 'run' column; expected a sweep's results.csv")
  return rows


def projection_paths(num_layers: int, include: str = DEFAULT_INCLUDE) -> list[str]:
  """The default compressed kernels' param paths of a model with `num_layers` layers."""
  names = ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "mlp/gate_proj",
           "mlp/up_proj", "mlp/down_proj")
  paths = [f"layers_{i}/{name}/kernel" for i in range(num_layers) for name in names]
  return [p for p in paths if re.match(include, p)]


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
        merge_csvs: Sequence[str | pathlib.Path] = (), source_model: str = "",
        num_layers: int = 0) -> dict[str, Any]:
  """Merges tables into DIR/results.csv and redraws its x-vs-y plots.

  Args:
    config: the sweep config (labels, plot axes).
    workdir: the results folder holding results.csv.
    merge_csvs: further results.csv files whose new runs are appended.
    source_model: when set (e.g. 'default'), rows without source_bytes get the bytes of the
      default projections (all `num_layers` layers) in that model's GGUF file.
    num_layers: layers of the model (needed with source_model).

  Returns:
    {'runs', 'added', 'duplicates' (run -> whether the compared columns agree),
    'source_bytes', 'plots'}.
  """
  workdir = pathlib.Path(workdir)
  rows = read_rows(workdir / "results.csv")
  names = {row["run"]: row for row in rows}
  added, duplicates = [], {}
  for extra in merge_csvs:
    for row in read_rows(pathlib.Path(extra)):
      if row["run"] in names:
        first = names[row["run"]]
        duplicates[row["run"]] = {k: (first.get(k), row.get(k)) for k in _COMPARED}
        continue
      rows.append(row)
      names[row["run"]] = row
      added.append(row["run"])
  source = None
  if source_model:
    if num_layers < 1:
      raise ValueError(f"source_model={source_model!r} needs num_layers >= 1, got {num_layers}")
    source = model_registry.source_bytes(source_model, projection_paths(num_layers))
    if source is None:
      raise ValueError(f"source_model={source_model!r} is not read from a GGUF file")
    for row in rows:
      if row.get("source_bytes") is None:
        row["source_bytes"] = source["bytes"]
  report_json.write_text_atomic(workdir / "results.csv", results_csv_text(rows))
  plots = sweep_report.make_plots(config, rows, {}, workdir)
  return {"runs": [row["run"] for row in rows], "added": added, "duplicates": duplicates,
          "source_bytes": None if source is None else source["bytes"],
          "plots": [str(p) for p in plots]}
