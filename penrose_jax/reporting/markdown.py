"""Small markdown builders for report.md files."""

from __future__ import annotations

from typing import Any, Sequence


def format_value(value: Any) -> str:
  """Formats a table cell: floats to 4 significant digits, None as '-'.

  Args:
    value: any cell value.

  Returns:
    The cell text.
  """
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if value != value:
      return "nan"
    return f"{value:.4g}"
  return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table.

  Args:
    headers: column names.
    rows: cell rows.

  Returns:
    The table text (ending with a newline).
  """
  lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  for row in rows:
    lines.append("| " + " | ".join(format_value(v) for v in row) + " |")
  return "\n".join(lines) + "\n"
