"""The one exception type the io package raises for unusable model files."""

from __future__ import annotations


class CheckpointFormatError(ValueError):
  """A model file or directory is missing, truncated, or inconsistent.

  The message always names the offending file (and tensor, where there is one) and says what
  is wrong with it.
  """
