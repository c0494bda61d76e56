"""report.json and other small outputs, written atomically so nothing is ever half-written."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np


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
  """
  report = {"job": job, "config": _jsonable(config), "wall_s": round(float(wall_s), 3),
            "model": model}
  report.update(_jsonable(dict(metrics)))
  return report
