"""The one `linear(w, x)` dispatch every projection of the model goes through.

A weight leaf is either a dense kernel array of shape (in, out), so y = x @ W, or any object
that implements the `CompressedMatrix` protocol below (the compression package's pytree
dataclasses). The model never needs to know which kind it holds, and compressed leaves run
under `jax.jit` without materialising the dense matrix.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp


@runtime_checkable
class CompressedMatrix(Protocol):
  """What a compressed weight leaf provides. `shape` is the dense (in, out) shape."""

  shape: tuple[int, int]

  def matmul(self, x: jax.Array) -> jax.Array:
    """Returns x @ W for x of shape (..., in), without forming W."""

  def materialize(self) -> jax.Array:
    """Returns the dense (in, out) matrix this leaf represents."""

  def param_count(self) -> int:
    """Returns the number of stored numbers, indices included."""

  def nbytes(self) -> int:
    """Returns the bytes the stored arrays occupy."""


def is_compressed(w: Any) -> bool:
  """Returns True when `w` is a compressed leaf rather than a dense array.

  Args:
    w: a weight leaf.

  Returns:
    Whether it implements `matmul` (the CompressedMatrix protocol).
  """
  return hasattr(w, "matmul") and hasattr(w, "materialize")


COMPRESSED_MATMUL_MODES = ("factored", "materialize")


def linear(w: Any, x: jax.Array, compressed_matmul: str = "factored") -> jax.Array:
  """Applies a weight leaf to activations: x @ W.

  Args:
    w: dense kernel (in, out) or a CompressedMatrix.
    x: activations (..., in).
    compressed_matmul: for compressed leaves, 'factored' runs `w.matmul(x)` (never forms W;
      fewest FLOPs) and 'materialize' forms W inside the computation and does one dense
      matmul (far fewer ops for XLA to compile; gradients still reach the stored values).

  Returns:
    (..., out) activations in x's dtype.
  """
  if is_compressed(w):
    if compressed_matmul == "materialize":
      return jnp.matmul(x, w.materialize().astype(x.dtype))
    return w.matmul(x).astype(x.dtype)
  return jnp.matmul(x, jnp.asarray(w, x.dtype))


def dense_equivalent(params: Any) -> Any:
  """A copy of a params tree with every compressed leaf replaced by its dense matrix.

  Materialized once, in one jitted program over all compressed leaves: evaluation of a
  compressed model's values (perplexity, KL) then reuses the dense model's compiled forward
  instead of compiling the compressed structure. (Eagerly, every op of every leaf compiled its
  own small program: thousands for SmolLM2, and the demo ran out of memory in LLVM.)

  Args:
    params: params pytree.

  Returns:
    The same tree with dense float32 kernels.
  """
  return map_selected_leaves(params, is_compressed, _materialize_all)


def map_selected_leaves(tree: Any, select: Callable[[Any], bool],
                        transform: Callable[[list], list]) -> Any:
  """Replaces the subtrees where `select` holds by `transform` of all of them at once.

  One call over the whole list lets `transform` be a single jitted program (or one host pass)
  instead of one small compile per subtree.

  Args:
    tree: a pytree.
    select: picks subtrees (used as tree_flatten's is_leaf).
    transform: list of selected subtrees -> list of replacements, same length and order.

  Returns:
    A new tree (the input itself when nothing is selected).
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=select)
  chosen = [leaf for leaf in leaves if select(leaf)]
  if not chosen:
    return tree
  replaced = iter(transform(chosen))
  return jax.tree_util.tree_unflatten(
      treedef, [next(replaced) if select(leaf) else leaf for leaf in leaves])


@jax.jit
def _materialize_all(leaves: list) -> list:
  return [leaf.materialize() for leaf in leaves]
