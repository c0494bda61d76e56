"""Deterministic example order: which examples update i reads is a function of (seed, i) only."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """A fixed shuffle of range(num_examples) for one epoch."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
  """Example indices of update `step`: epochs of shuffled order, batches cut consecutively.

  Example k of the stream (k = step * batch_size + j) is example
  perm(seed, k // num_examples)[k % num_examples], so batches may straddle epochs and every
  example is seen once per epoch.

  Args:
    step: 0-based update index.
    batch_size: examples per update.
    num_examples: size of the data set.
    seed: data-order seed.

  Returns:
    (batch_size,) int64 indices.
  """
  if num_examples <= 0:
    raise ValueError("batch_indices needs a non-empty data set")
  stream = step * batch_size + np.arange(batch_size)
  epochs, positions = stream // num_examples, stream % num_examples
  return np.array([_epoch_permutation(seed, int(e), num_examples)[p]
                   for e, p in zip(epochs, positions)], np.int64)
