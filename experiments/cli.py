"""Flag parsing shared by the experiments/* mains: a mistyped --config override is one clear line.

ml_collections applies `--config.a.b=v` overrides while absl parses flags; an override naming
a field the config does not have raises AttributeError / KeyError from inside ml_collections,
which absl does not catch, so the user saw a 30-line traceback ending in `AttributeError:
"'bogus'"`. `parse_flags` reports the offending argument instead.

`run(main)` is how every main starts: an expected error (bad input, bad config value, missing
or unreadable file, a workdir of another run or held by another process; the library raises
these as ValueError / OSError with the file, field and value in the message) prints one line
to stderr and exits 2. `--verbose` (or PENROSE_VERBOSE=1) prints the traceback as well.
Ctrl-C prints one line and exits 130 at once, skipping the interpreter's shutdown (see
`one_line_errors`).

List and tuple fields (e.g. `calibration.sources`) take a comma list
(`--config.calibration.sources=a@train,package:demo_corpus`) or a Python / JSON literal
(`--config.runs='[["a", {"compression.tiling": "grid"}]]'`, needed for nested values). Out of
the box ml_collections refuses list fields and reads an unquoted `a,b` tuple override as the
one string 'a,b'; importing this module registers `parse_sequence` for both types.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import traceback
from typing import Any, Callable

from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import tuple_parser

from penrose_jax.training import NonFiniteLossError


def parse_sequence(argument: Any) -> list:
  """The items of a list / tuple override.

  Args:
    argument: the command-line text, or an existing list / tuple (a default value).

  Returns:
    The items: a literal list / tuple's items, the comma-separated parts of plain text (each
    stripped), [] for an empty value; a single literal (`3`, `'a'`) is one item.

  Raises:
    ValueError: text that opens a bracket but is no valid literal (a half-quoted list would
      otherwise be split into garbage items).
  """
  if isinstance(argument, (list, tuple)):
    return list(argument)
  text = str(argument).strip()
  if not text:
    return []
  for parse in (ast.literal_eval, json.loads):  # JSON: true / false / null spellings
    try:
      value = parse(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
      continue
    return list(value) if isinstance(value, (list, tuple)) else [value]
  if text[0] in "[(" or text[-1] in "])":
    raise ValueError(f"{text!r} is not a valid list literal: quote each item "
                     "('[\"a\", \"b\"]') or give a comma list without brackets (a,b)")
  return [part.strip() for part in text.split(",")]


class _ListParser(flags.ArgumentParser):
  """absl parser of list fields (see `parse_sequence`)."""

  def parse(self, argument: Any) -> list:
    return parse_sequence(argument)

  def flag_type(self) -> str:
    return "list"


class _TupleParser(tuple_parser.TupleParser):
  """Tuple fields (a TupleParser, so `--config.x=a --config.x=b` still appends)."""

  def parse(self, argument: Any) -> tuple:
    return tuple(parse_sequence(() if argument is None else argument))


config_flags.register_flag_parser_for_type(list, _ListParser())
config_flags.register_flag_parser_for_type(tuple, _TupleParser())


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


_VERBOSE = flags.DEFINE_boolean(
    "verbose", False, "On an expected error (bad input / config / workdir), print the "
    "traceback as well as the one-line message (also PENROSE_VERBOSE=1).")
# What the library raises for a user's mistake; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError, NonFiniteLossError)
EXIT_EXPECTED_ERROR = 2
EXIT_INTERRUPTED = 130
hard_exit = os._exit  # tests replace it (os._exit would end the test process)


def verbose() -> bool:
  """Whether tracebacks of expected errors are wanted (--verbose or PENROSE_VERBOSE=1)."""
  parsed = flags.FLAGS.is_parsed() and _VERBOSE.value
  return parsed or os.environ.get("PENROSE_VERBOSE", "") not in ("", "0")


def error_line(error: BaseException) -> str:
  """The one line an expected error prints: its type and message, newlines folded."""
  text = " ".join(str(error).split()) or repr(error)
  return f"error ({type(error).__name__}): {text}"


def one_line_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
  """Wraps an absl main: expected errors become one stderr line and exit status 2.

  Args:
    main: the absl main(argv).

  Returns:
    The wrapped main.
  """
  def wrapped(argv: list[str]) -> Any:
    try:
      return main(argv)
    except EXPECTED_ERRORS as error:
      if verbose():
        traceback.print_exc()
      sys.stderr.write(error_line(error) + "\n")
      sys.exit(EXIT_EXPECTED_ERROR)
    except KeyboardInterrupt:
      if verbose():
        traceback.print_exc()
      sys.stderr.write("interrupted: rerun the same command to resume from the last "
                       "checkpoint\n")
      sys.stdout.flush()
      sys.stderr.flush()
      # Not sys.exit: after a Ctrl-C inside XLA compilation the interpreter's normal shutdown
      # segfaulted (4 of 4 tries, results/reliability/README.md); leaving at once is as safe
      # as the SIGKILLs the fault-injection tests resume from (atomic writes, orbax steps).
      hard_exit(EXIT_INTERRUPTED)
  return wrapped


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run` of `main` with `parse_flags` and `one_line_errors` (every experiments/ main).

  Args:
    main: the absl main(argv).
  """
  app.run(one_line_errors(main), flags_parser=parse_flags)
