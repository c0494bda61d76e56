"""Paired comparison of two models on the same questions (exact McNemar test).

Two runs scored on one exam are not independent samples: most questions are answered the same
way by both. What tells them apart is the discordant questions (right in one run, wrong in the
other); under "no difference" each discordant question is a fair coin, so the two-sided exact
binomial test on those counts (McNemar's exact test) gives the p-value. With 56 questions an
unpaired standard error is ~6.6 points at p = 0.5, far more conservative than this.
"""

from __future__ import annotations

import math
from typing import Sequence


def mcnemar(a_correct: Sequence[float], b_correct: Sequence[float]) -> dict[str, float]:
  """Exact two-sided McNemar test of two runs' per-question correctness.

  Args:
    a_correct: 1 / 0 (or True / False) per question for run A.
    b_correct: the same questions, same order, for run B.

  Returns:
    {'n': questions, 'accuracy_a', 'accuracy_b', 'a_only': right in A only, 'b_only': right in
    B only, 'p_value': exact two-sided p of a_only vs b_only under a fair coin}.

  Raises:
    ValueError: the two lists differ in length or are empty.
  """
  if len(a_correct) != len(b_correct) or not a_correct:
    raise ValueError(f"mcnemar: need two equally long, non-empty lists, got {len(a_correct)} "
                     f"and {len(b_correct)} questions")
  a = [bool(x) for x in a_correct]
  b = [bool(x) for x in b_correct]
  a_only = sum(x and not y for x, y in zip(a, b))
  b_only = sum(y and not x for x, y in zip(a, b))
  discordant = a_only + b_only
  tail = sum(math.comb(discordant, i) for i in range(min(a_only, b_only) + 1))
  p_value = min(1.0, 2 * tail / 2 ** discordant) if discordant else 1.0
  return {"n": len(a), "accuracy_a": sum(a) / len(a), "accuracy_b": sum(b) / len(b),
          "a_only": a_only, "b_only": b_only, "p_value": p_value}
