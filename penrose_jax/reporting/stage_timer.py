"""Wall time per named stage of a job (load / calibrate / factor / write / eval ...).

Jobs time their stages with one `StageTimer` and put `timer.rounded()` in their report, so the
compression-speed benchmark and users read where the time went from the report itself.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Iterator, Optional


class StageTimer:
  """Accumulates seconds per stage name over any number of `with timer.stage(name)` blocks."""

  def __init__(self) -> None:
    self.seconds: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def stage(self, name: str) -> Iterator[None]:
    """Adds the block's wall time to `name` (also when the block raises).

    Args:
      name: stage name.

    Yields:
      None.
    """
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - start

  def rounded(self, digits: int = 2) -> dict[str, float]:
    """Stage -> seconds, rounded, in first-use order.

    Args:
      digits: decimals kept.

    Returns:
      A plain dict (JSON-ready).
    """
    return {k: round(v, digits) for k, v in self.seconds.items()}


@contextlib.contextmanager
def maybe_stage(timer: Optional[StageTimer], name: str) -> Iterator[None]:
  """`timer.stage(name)` when a timer is given, else a no-op (library functions take it optional).

  Args:
    timer: a StageTimer or None.
    name: stage name.

  Yields:
    None.
  """
  if timer is None:
    yield
  else:
    with timer.stage(name):
      yield
