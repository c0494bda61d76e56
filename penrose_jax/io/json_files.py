"""Reading and atomically writing the JSON side files of model and checkpoint directories."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Optional

from penrose_jax.io.errors import CheckpointFormatError
from penrose_jax.reporting import report_json


def read_json(path: str | os.PathLike) -> Optional[Any]:
  """Reads a JSON file.

  Args:
    path: the file.

  Returns:
    The decoded value, or None when the file does not exist.

  Raises:
    CheckpointFormatError: the file exists but is not valid JSON.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise CheckpointFormatError(f"{path}: invalid JSON ({err})") from err


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
  """Writes JSON so readers see either the old file or the complete new one.

  Args:
    path: the file.
    value: a JSON-serialisable value (non-ASCII text is kept as is).
  """
  report_json.write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
