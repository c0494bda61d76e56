"""When a Q&A run stops and at which rate it trains: curve points, plateaus, rates, exposures.

Helpers of qa/trainer.py (kept apart so the trainer stays one screenful of logic per mode):
`curve_steps` places the learning-curve points, `plateaued` says when the watched score stopped
rising (the early stop of shuffled runs), `resolved_learning_rate` picks the Adam rate that fits
what is trained, `group_exposures` counts the rows that show each fact.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

TRAINABLE = ("lora", "compressed", "all")


# Adam rates that fit what is trained: LoRA adapters take ~10x the full fine-tuning rate
# (Biderman et al., "LoRA learns less and forgets less"); stored factors and all weights
# diverge at 1e-3 (results/injection_compressed used 1e-4).
RECIPE_LEARNING_RATES = {"lora": 3e-3, "compressed": 1e-4, "all": 1e-4}


def resolved_learning_rate(cfg: Any) -> float:
  """cfg.learning_rate, or the rate of `RECIPE_LEARNING_RATES` for cfg.trainable when <= 0.

  Args:
    cfg: a curriculum_config.CurriculumConfig (learning_rate, trainable).

  Returns:
    The rate.

  Raises:
    ValueError: an unknown trainable choice.
  """
  if cfg.learning_rate > 0:
    return float(cfg.learning_rate)
  if cfg.trainable not in RECIPE_LEARNING_RATES:
    raise ValueError(f"trainable must be one of {TRAINABLE}, got {cfg.trainable!r}")
  return RECIPE_LEARNING_RATES[cfg.trainable]


def plateaued(values: Sequence[Optional[float]], patience: int, min_delta: float = 0.0) -> bool:
  """Whether the last `patience` values all failed to beat the best before them by > min_delta.

  Args:
    values: the watched score at successive curve points (None = not scored, skipped).
    patience: points without progress that make a plateau (<= 0: never).
    min_delta: the smallest rise that counts as progress.

  Returns:
    True on a plateau.
  """
  values = [v for v in values if v is not None]
  if patience <= 0 or len(values) <= patience:
    return False
  best = max(values[:-patience])
  return all(v <= best + min_delta for v in values[-patience:])


def curve_steps(num_steps: int, points: int, section_ends: Sequence[int] = ()) -> list[int]:
  """The steps inside a run at which the learning curve is scored.

  Args:
    num_steps: updates of the run.
    points: points of the curve after step 0, the last one being the end of the run (<= 1:
      no inner points).
    section_ends: when given, each point moves to the first section end at or after it.

  Returns:
    Sorted distinct steps in (0, num_steps).
  """
  steps = set()
  for k in range(1, max(points, 1)):
    target = int(round(num_steps * k / points))
    if section_ends:
      target = next((int(e) for e in section_ends if e >= target), num_steps)
    if 0 < target < num_steps:
      steps.add(target)
  return sorted(steps)


def group_exposures(table: Sequence[Any], plan: np.ndarray) -> dict[str, int]:
  """Rows of the plan that hold a text of each fact group (the exposures of its restatements).

  Args:
    table: the run's examples (train_data.Example with `groups`).
    plan: (steps, batch) indices into table.

  Returns:
    group -> rows.
  """
  counts: dict[str, int] = {}
  for index in plan.reshape(-1):
    for group in table[int(index)].groups:
      counts[group] = counts.get(group, 0) + 1
  return counts
