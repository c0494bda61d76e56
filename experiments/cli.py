"""Flag parsing shared by the experiments/* mains: a mistyped --config override is one clear line.

ml_collections applies `--config.a.b=v` overrides while absl parses flags; an override naming
a field the config does not have raises AttributeError / KeyError from inside ml_collections,
which absl does not catch, so the user saw a 30-line traceback ending in `AttributeError:
"'bogus'"`. `parse_flags` reports the offending argument instead.
"""

from __future__ import annotations

import re
import sys

from absl import app


def _missing_field(error: BaseException) -> tuple[str, str]:
  """(the unknown field, ml_collections' suggested spelling or '') from its error text."""
  text = str(error).replace("\\", "")
  field = re.search(r"[A-Za-z_][A-Za-z0-9_]*", text)
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  return (field.group(0) if field else text), (suggestion.group(1) if suggestion else "")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.parse_flags_with_usage`) with a clear unknown-override error.

  Args:
    argv: the command line, program name first.

  Returns:
    The remaining (non-flag) arguments, program name first.
  """
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:
    field, suggestion = _missing_field(error)
    overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    culprit = next((a for a in overrides if field in a.split(".")[1:]), "a --config override")
    hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
    sys.stderr.write(f"FATAL Flags parsing error: {culprit}: the config has no field "
                     f"{field!r}{hint}; an override can only set a field that the config file's "
                     "get_config defines (check the spelling and the nesting).\n")
    sys.exit(2)
