"""Parameter and byte counting over params pytrees that mix dense arrays and compressed leaves.

Counting rules (the same everywhere, so reported ratios are comparable):
  * dense array: size numbers, size * itemsize bytes;
  * compressed leaf: its `param_count()` / `nbytes()`, which include factors, dense tiles,
    kept spectral values AND their indices/counts, quantization scales, and tile coordinates
    (2 int32 per tile). int4 values count 0.5 byte, float16 scales 2 bytes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_compressed_leaf(x: Any) -> bool:
  """True for objects implementing the CompressedMatrix protocol."""
  return hasattr(x, "matmul") and hasattr(x, "materialize") and hasattr(x, "param_count")


def leaf_param_count(x: Any) -> int:
  """Stored numbers of one leaf (dense array or compressed)."""
  if is_compressed_leaf(x):
    return int(x.param_count())
  return int(np.prod(np.shape(x)))


def leaf_nbytes(x: Any) -> int:
  """Stored bytes of one leaf (dense array or compressed)."""
  if is_compressed_leaf(x):
    return int(x.nbytes())
  return int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize


def _leaves(params: Any) -> list:
  return jax.tree_util.tree_leaves(params, is_leaf=is_compressed_leaf)


def tree_param_count(params: Any) -> int:
  """Stored numbers of a whole params tree."""
  return sum(leaf_param_count(x) for x in _leaves(params))


def tree_nbytes(params: Any) -> int:
  """Stored bytes of a whole params tree."""
  return sum(leaf_nbytes(x) for x in _leaves(params))


def tree_dense_param_count(params: Any) -> int:
  """Numbers the tree would hold with every compressed leaf dense (sum of leaf shapes)."""
  total = 0
  for x in _leaves(params):
    total += int(np.prod(x.shape)) if is_compressed_leaf(x) else int(np.prod(np.shape(x)))
  return total
