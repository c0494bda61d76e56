"""Choosing which arrays of a params tree are trained, and splitting/merging the tree.

A selector produces a boolean mask tree with exactly the structure of the params (compressed
leaves are descended into, so a mask holds one bool per stored array). `partition` turns
(params, mask) into a trainable tree and a frozen tree that hold None where the other holds
the array (equinox-style); `merge` puts them back together. Differentiating a loss with
respect to the trainable tree only (`merge` inside the loss) means gradients, optimizer state
and weight decay exist only where wanted; integer or boolean arrays (e.g. index arrays inside
compressed leaves) are never selected.

Path strings join dict keys and dataclass field names with '/', e.g.
'layers_0/mlp/down_proj/kernel' for a dense kernel or 'layers_0/mlp/down_proj/kernel/a' for
field `a` of a compressed leaf stored there.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models.linear import is_compressed

# (path string, array, is inside a compressed leaf) -> train it?
SelectorFn = Callable[[str, Any, bool], bool]
Selector = Union[str, SelectorFn]

NAMED_SELECTORS = ("compressed", "compressed+norms", "all", "none")


def path_to_string(path: tuple) -> str:
  """Renders a jax key path as 'a/b/c'.

  Args:
    path: key path from `jax.tree_util.tree_flatten_with_path`.

  Returns:
    The '/'-joined names.
  """
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def is_float_array(x: Any) -> bool:
  """Whether `x` is an array with an inexact (floating/complex) dtype.

  Args:
    x: any leaf.

  Returns:
    True for float arrays (the only kind that may be trained).
  """
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _selector_fn(selector: Selector) -> SelectorFn:
  """Turns a named selector or regex into a predicate."""
  if callable(selector):
    return selector
  if selector == "compressed":
    return lambda path, x, inside: inside
  if selector == "compressed+norms":
    return lambda path, x, inside: inside or path.endswith("norm/scale")
  if selector == "all":
    return lambda path, x, inside: True
  if selector == "none":
    return lambda path, x, inside: False
  pattern = re.compile(selector)
  return lambda path, x, inside: pattern.search(path) is not None


def trainable_mask(params: Any, selector: Selector) -> Any:
  """Boolean mask tree selecting the arrays to train.

  Args:
    params: params pytree (dense arrays and compressed leaves).
    selector: 'compressed' (float arrays stored inside compressed leaves), 'compressed+norms'
      (those plus RMSNorm scales), 'all' (every float array), 'none', a regular expression
      searched in each array's path string, or a callable (path, array, inside_compressed)
      -> bool. Non-float arrays are never selected.

  Returns:
    A tree with the structure of `params` holding Python bools.
  """
  decide = _selector_fn(selector)

  def leaf_mask(prefix: tuple, node: Any) -> Any:
    if is_compressed(node):
      return jax.tree_util.tree_map_with_path(
          lambda p, a: bool(is_float_array(a) and decide(path_to_string(prefix + p), a, True)),
          node)
    return bool(is_float_array(node) and decide(path_to_string(prefix), node, False))

  return jax.tree_util.tree_map_with_path(leaf_mask, params, is_leaf=is_compressed)


def partition(params: Any, mask: Any) -> tuple[Any, Any]:
  """Splits params into (trainable, frozen) trees with None in each other's places.

  Args:
    params: params pytree.
    mask: bool tree from `trainable_mask` (same structure).

  Returns:
    (trainable, frozen).
  """
  trainable = jax.tree_util.tree_map(lambda x, m: x if m else None, params, mask)
  frozen = jax.tree_util.tree_map(lambda x, m: None if m else x, params, mask)
  return trainable, frozen


def merge(trainable: Any, frozen: Any) -> Any:
  """Inverse of `partition`.

  Args:
    trainable: tree with None at frozen positions.
    frozen: tree with None at trainable positions.

  Returns:
    The full params tree.
  """
  return jax.tree_util.tree_map(lambda a, b: b if a is None else a, trainable, frozen,
                                is_leaf=lambda x: x is None)


def count_elements(tree: Any) -> int:
  """Number of array elements in a tree (None entries count 0).

  Args:
    tree: pytree of arrays.

  Returns:
    Total element count.
  """
  return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree_util.tree_leaves(tree)))


def describe_trainable(params: Any, mask: Any) -> dict[str, Any]:
  """Counts and paths of what a mask trains (for logs and reports).

  Args:
    params: params pytree.
    mask: bool tree from `trainable_mask`.

  Returns:
    Dict with 'trainable_params', 'frozen_params' (element counts) and 'trainable_paths'.
  """
  trainable, frozen = partition(params, mask)
  paths = [path_to_string(p) for p, _ in jax.tree_util.tree_flatten_with_path(trainable)[0]]
  return {"trainable_params": count_elements(trainable), "frozen_params": count_elements(frozen),
          "trainable_paths": paths}
