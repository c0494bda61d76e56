"""report.json and other small outputs, written atomically so nothing is ever half-written."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, BinaryIO, Callable, Mapping

import math

import numpy as np


class NonFiniteMetricError(ValueError):
  """A report metric is NaN or infinite (a NaN weight, an overflow): never written as a number."""


def nonfinite_fields(value: Any, prefix: str = "") -> list[str]:
  """Dotted paths (list items as [i]) of the NaN / inf floats inside `value`, with the value.

  Args:
    value: a JSON-like tree (after `_jsonable`).
    prefix: the path of `value` itself.

  Returns:
    ['ppl.demo=nan', ...].
  """
  if isinstance(value, dict):
    return [p for k, v in value.items()
            for p in nonfinite_fields(v, f"{prefix}.{k}" if prefix else str(k))]
  if isinstance(value, list):
    return [p for i, v in enumerate(value) for p in nonfinite_fields(v, f"{prefix}[{i}]")]
  if isinstance(value, float) and not math.isfinite(value):
    return [f"{prefix}={value}"]
  return []


def _jsonable(value: Any) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.floating, np.integer, np.bool_)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if hasattr(value, "to_dict"):
    return _jsonable(value.to_dict())
  if isinstance(value, pathlib.Path):
    return str(value)
  return value


def write_file_atomic(path: str | pathlib.Path, write: Callable[[BinaryIO], None]
                      ) -> pathlib.Path:
  """Calls `write` on a temp file in the same folder, fsyncs, then renames over `path`.

  Args:
    path: destination.
    write: writes the content to the open binary handle (e.g. `lambda f: np.save(f, a)`).

  Returns:
    The destination path.

  Raises:
    PermissionError / OSError: with the destination named, when the folder is not writable
      or a write fails (disk full); the previous file is left as it was, no temp file stays.
  """
  path = pathlib.Path(path)
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  except OSError as err:
    raise type(err)(f"cannot write {path}: {err.strerror or err}") from err
  try:
    with os.fdopen(fd, "wb") as handle:
      write(handle)
      handle.flush()
      os.fsync(handle.fileno())
    os.replace(tmp, path)
  except BaseException as err:
    if os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(err, OSError) and err.errno is not None:  # e.g. ENOSPC: name the file
      raise type(err)(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    raise
  return path


def write_text_atomic(path: str | pathlib.Path, text: str) -> pathlib.Path:
  """Writes UTF-8 text atomically (see `write_file_atomic`).

  Args:
    path: destination.
    text: content.

  Returns:
    The destination path.
  """
  data = text.encode("utf-8")
  return write_file_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(path: str | pathlib.Path, obj: Any) -> pathlib.Path:
  """Writes `obj` as indented JSON atomically (numpy scalars and configs converted).

  Args:
    path: destination.
    obj: JSON-like object.

  Returns:
    The destination path.
  """
  return write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def build_report(job: str, config: Any, model: str, wall_s: float,
                 metrics: Mapping[str, Any]) -> dict[str, Any]:
  """The report.json body every job writes (fields fixed by the design contract).

  Args:
    job: entrypoint name.
    config: the resolved config (ConfigDict or mapping).
    model: description of the model that ran.
    wall_s: wall-clock seconds of the job.
    metrics: job-specific metrics under snake_case keys.

  Returns:
    The report dict.

  Raises:
    NonFiniteMetricError: a metric is NaN or infinite (each one named by its key path).
  """
  report = {"job": job, "config": _jsonable(config), "wall_s": round(float(wall_s), 3),
            "model": model}
  values = _jsonable(dict(metrics))
  bad = nonfinite_fields(values)
  if bad:  # a NaN in a report reads as a result; it is a broken model or run instead
    raise NonFiniteMetricError(
        f"{job or 'job'} measured non-finite values ({', '.join(bad[:5])}"
        f"{', ...' if len(bad) > 5 else ''}) for model {model!r}: its weights or this run's "
        "numbers overflowed or hold NaN; no report written")
  report.update(values)
  return report
