"""metrics.jsonl: one JSON object per logged step, appended and flushed as training goes."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from penrose_jax.reporting import report_json

# Keys whose values depend on the machine and timing, not on the computation; a resumed run
# matches an uninterrupted one on every other key.
TIMING_KEYS = ("tokens_per_s", "wall_time", "elapsed_s")


def _plain(value: Any) -> Any:
  """JSON-friendly version of a scalar (numpy/jax scalars -> float/int; NaN -> 'nan')."""
  if hasattr(value, "item"):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


class MetricsLog:
  """Append-only JSON-lines log keyed by 'step'."""

  def __init__(self, path: str):
    """Opens the log (the file is created on first write).

    Args:
      path: the metrics.jsonl path.
    """
    self.path = path

  def append(self, record: Mapping[str, Any]) -> None:
    """Appends one record and flushes it to disk.

    Args:
      record: must contain 'step'; values are scalars.
    """
    line = json.dumps({k: _plain(v) for k, v in record.items()}, sort_keys=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(line + "\n")
      f.flush()
      os.fsync(f.fileno())

  def truncate_after(self, step: int) -> int:
    """Drops records with step > `step` (and any torn last line) so a resumed run appends to a
    file equal to what an uninterrupted run had written at that step.

    Args:
      step: the restored step (0 for a fresh start).

    Returns:
      Number of records kept.
    """
    if not os.path.exists(self.path):
      return 0
    kept = [line if line.endswith("\n") else line + "\n"
            for line, record in _whole_lines(self.path) if int(record.get("step", 0)) <= step]
    report_json.write_text_atomic(self.path, "".join(kept))
    return len(kept)

  def logged_at(self, step: int) -> dict[str, Any] | None:
    """The record logged at `step` (the last one when logged twice), or None.

    Args:
      step: the step to look up.

    Returns:
      The record dict, or None when the file or the step is missing.
    """
    if not os.path.exists(self.path):
      return None
    found = None
    for _, record in _whole_lines(self.path):
      if int(record.get("step", -1)) == step:
        found = record
    return found


def _whole_lines(path: str):
  """(line, record) for every line that parses (a kill can leave the last one torn)."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        yield line, json.loads(line)
      except json.JSONDecodeError:
        continue


def read_metrics(path: str, drop_timing: bool = False) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file, skipping a line a kill left torn.

  Args:
    path: the file.
    drop_timing: remove TIMING_KEYS (to compare runs).

  Returns:
    List of records in file order.
  """
  records = []
  for _, record in _whole_lines(path):
    if drop_timing:
      record = {k: v for k, v in record.items() if k not in TIMING_KEYS}
    records.append(record)
  return records
