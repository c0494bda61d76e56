"""Exact McNemar test of paired exam answers."""

import math

import pytest

from penrose_jax.evaluation.paired import mcnemar


def test_mcnemar_counts_discordant_questions_and_exact_p():
  a = [1, 1, 1, 1, 1, 0, 0, 1]
  b = [0, 0, 0, 0, 1, 0, 1, 1]
  test = mcnemar(a, b)
  assert (test["a_only"], test["b_only"], test["n"]) == (4, 1, 8)
  # Two-sided binomial tail of 1 or fewer successes in 5 fair coins: 2 * 6 / 32.
  assert test["p_value"] == pytest.approx(2 * (1 + 5) / 32)
  assert test["accuracy_a"] == 6 / 8 and test["accuracy_b"] == 3 / 8
  # Symmetric, 1 when the runs agree everywhere or split the discordant questions evenly.
  assert mcnemar(b, a)["p_value"] == test["p_value"]
  assert mcnemar(a, a)["p_value"] == 1.0 and mcnemar([1, 0], [0, 1])["p_value"] == 1.0
  # A lopsided split of 12 discordant questions is significant.
  assert mcnemar([1] * 12 + [0] * 4, [0] * 16)["p_value"] == pytest.approx(2 / 2 ** 12)
  assert math.isclose(mcnemar([True, False], [False, False])["p_value"], 1.0)


def test_mcnemar_rejects_unequal_or_empty_lists():
  with pytest.raises(ValueError, match="2 and 1 questions"):
    mcnemar([1, 0], [1])
  with pytest.raises(ValueError, match="non-empty"):
    mcnemar([], [])
