"""The one `linear(w, x)` dispatch every projection of the model goes through.

A weight leaf is either a dense kernel array of shape (in, out), so y = x @ W, or any object
that implements the `CompressedMatrix` protocol below (the compression package's pytree
dataclasses). The model never needs to know which kind it holds, and compressed leaves run
under `jax.jit` without materialising the dense matrix.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

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


def linear(w: Any, x: jax.Array) -> jax.Array:
  """Applies a weight leaf to activations: x @ W.

  Args:
    w: dense kernel (in, out) or a CompressedMatrix.
    x: activations (..., in).

  Returns:
    (..., out) activations in x's dtype.
  """
  if is_compressed(w):
    return w.matmul(x).astype(x.dtype)
  return jnp.matmul(x, jnp.asarray(w, x.dtype))
