"""Reading JSONL files: ones this package writes (a kill may tear the last line) and hand-written
ones (every line must parse). Both documents' side files and exam files are read with these,
so they sit in data/, below evaluation/ and qa/; writers stay with the records they write
(`qa.records.write_jsonl_atomic`, `reporting.report_json`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any


def read_jsonl(path: str | pathlib.Path, drop_partial_last_line: bool = True
               ) -> list[dict[str, Any]]:
  """Reads a JSONL file into dicts, skipping blank lines.

  Args:
    path: the file.
    drop_partial_last_line: ignore a final line without newline that is not valid JSON.

  Returns:
    The decoded objects.

  Raises:
    ValueError: naming the line number of an invalid line.
  """
  data = pathlib.Path(path).read_bytes()
  lines = data.split(b'\n')
  out = []
  for number, raw in enumerate(lines, start=1):
    if not raw.strip():
      continue
    try:
      out.append(json.loads(raw))
    except json.JSONDecodeError as e:
      if drop_partial_last_line and number == len(lines):
        break
      raise ValueError(f'{path}:{number}: invalid JSON ({e.msg})') from None
  return out


def read_json_objects(path: str | pathlib.Path, error: type[Exception] = ValueError
                      ) -> list[tuple[int, dict[str, Any]]]:
  """(line number, object) for every non-blank line of a hand-written JSONL file.

  Unlike `read_jsonl` (files this package writes, where a kill may tear the last line), every
  line must parse: a user's file with a bad line is an error naming file and line.

  Args:
    path: the file.
    error: exception type raised (e.g. the caller's ValueError subclass).

  Returns:
    The objects with their 1-based line numbers.

  Raises:
    error: a line that is not UTF-8, not JSON or not a JSON object.
  """
  path = pathlib.Path(path)
  try:
    lines = path.read_text(encoding='utf-8').splitlines()
  except UnicodeDecodeError as e:
    raise error(f'{path}: not valid UTF-8 ({e.reason})') from None
  out = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise error(f'{path}:{number}: invalid JSON ({e.msg})') from None
    if not isinstance(obj, dict):
      raise error(f'{path}:{number}: expected a JSON object, got {type(obj).__name__}')
    out.append((number, obj))
  return out
