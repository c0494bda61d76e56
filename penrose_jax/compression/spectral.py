"""Spectral truncation of blocks or factors with real orthonormal transforms.

Transforms: 'dct' = orthonormal DCT-II; 'fft' = the orthonormal discrete Hartley transform
H = Re(F) - Im(F) with F the unitary DFT. We use the Hartley form for 'fft' on purpose: it
carries exactly the DFT's information as N real numbers, so the coefficient count is honest
(no complex pairs, no Hermitian bookkeeping) and it is its own inverse. Both are applied as
explicit (N, N) orthonormal basis matrices C (coef = C x, x = C^T coef).

`SpectralArray` stores an array of shape (g, a, b) (g blocks) as kept coefficient values plus
per-block flat indices into a*b (uint16 when a*b <= 65536, else int32) and per-block counts
(int32). All three are counted in param_count / nbytes. `dense()` scatters the values and
applies the inverse transform; a leaf's matmul calls it inside jit (the coefficient block is
rebuilt per call; there is no cheaper sparse path on XLA:CPU/GPU for these sizes).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from flax import struct

from penrose_jax.compression.pytree_codec import (StaticArray, as_dense, host_dense,
                                                  register_codec)

SPECTRAL_KINDS = ("none", "dct", "fft")


@functools.lru_cache(maxsize=256)
def basis_matrix(kind: str, n: int) -> np.ndarray:
  """Orthonormal (n, n) float64 basis: coef = C @ x.

  Args:
    kind: 'dct' or 'fft' (Hartley).
    n: length.

  Returns:
    Read-only C with C @ C.T == I.
  """
  eye = np.eye(n)
  if kind == "dct":
    c = scipy.fft.dct(eye, type=2, norm="ortho", axis=0)
  elif kind == "fft":
    f = scipy.fft.fft(eye, norm="ortho", axis=0)
    c = f.real - f.imag
  else:
    raise ValueError(f"unknown spectral transform {kind!r}; allowed: ['dct', 'fft']")
  c.setflags(write=False)
  return c


def forward(x: np.ndarray, kind: str, axes: tuple[int, ...]) -> np.ndarray:
  """Coefficients of x (float64) along the given axes."""
  out = np.asarray(x, np.float64)
  for ax in axes:
    c = basis_matrix(kind, out.shape[ax])
    out = np.moveaxis(np.tensordot(c, np.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
  return out


def _inverse(xp, coef, kind: str, axes: tuple[int, ...]):
  """Inverse transform in float32 with xp = jnp (jittable) or np (host, compiles nothing)."""
  out = coef
  for ax in axes:
    c = xp.asarray(basis_matrix(kind, out.shape[ax]), xp.float32)
    out = xp.moveaxis(xp.tensordot(c.T, xp.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
  return out


def keep_mask(coef: np.ndarray, tau: Optional[float] = None,
              keep_energy: Optional[float] = None) -> np.ndarray:
  """Per-block selection of coefficients to keep (block = leading axis).

  Args:
    coef: (g, a, b) coefficients.
    tau: keep |c| > tau (absolute; transforms are orthonormal so this is in weight units).
    keep_energy: keep the largest coefficients until this fraction of the block's energy.

  Returns:
    Boolean mask of coef's shape. With neither given (or keep_energy >= 1) keeps everything.
  """
  g = coef.shape[0]
  flat = np.abs(coef.reshape(g, -1))
  if tau is not None:
    if tau < 0:
      raise ValueError(f"tau must be >= 0, got {tau}")
    mask = flat > tau if tau > 0 else np.ones_like(flat, bool)
  elif keep_energy is not None and keep_energy < 1.0:
    if not 0.0 < keep_energy:
      raise ValueError(f"keep_energy must be in (0, 1], got {keep_energy}")
    order = np.argsort(-flat, axis=1)
    sorted_e = np.take_along_axis(flat ** 2, order, axis=1)
    cum = np.cumsum(sorted_e, axis=1)
    need = keep_energy * cum[:, -1:]
    count = np.minimum(np.sum(cum < need, axis=1) + 1, flat.shape[1])
    mask = np.zeros_like(flat, bool)
    for i in range(g):
      mask[i, order[i, :count[i]]] = True
  else:
    mask = np.ones_like(flat, bool)
  return mask.reshape(coef.shape)


@register_codec
@struct.dataclass
class SpectralArray:
  """A (g, a, b) array stored as truncated orthonormal-transform coefficients per block.

  Attributes:
    values: kept coefficient values (K,), float32 array or QuantizedArray.
    index: per-block flat positions into a*b (K,), uint16 or int32 (static).
    counts: kept coefficients per block (g,) int32 (static).
    shape: (g, a, b) (static).
    kind: 'dct' or 'fft' (static).
    axes: transformed axes among (1, 2) (static).
  """

  values: jax.Array
  index: StaticArray = struct.field(pytree_node=False)
  counts: StaticArray = struct.field(pytree_node=False)
  shape: tuple = struct.field(pytree_node=False)
  kind: str = struct.field(pytree_node=False)
  axes: tuple = struct.field(pytree_node=False)

  def _flat_index(self) -> np.ndarray:
    g, a, b = self.shape
    block = np.repeat(np.arange(g, dtype=np.int64), self.counts.array)
    return block * (a * b) + self.index.array.astype(np.int64)

  def _reconstruct(self, xp, vals):
    # Static gather instead of a scatter: every coefficient slot points at its kept value
    # or at an appended zero (gathers compile and run faster than scatters, eager or jit).
    size = int(np.prod(self.shape))
    slots = np.full(size, vals.shape[0], np.int64)
    slots[self._flat_index()] = np.arange(vals.shape[0])
    coef = xp.take(xp.concatenate([vals, xp.zeros((1,), xp.float32)]), slots)
    return _inverse(xp, coef.reshape(self.shape), self.kind, self.axes)

  def dense(self) -> jax.Array:
    """The reconstructed float32 (g, a, b) array (scatter + inverse transform)."""
    return self._reconstruct(jnp, as_dense(self.values, jnp.float32))

  def dense_host(self) -> np.ndarray:
    """`dense()` computed in numpy (eager callers: compiles nothing).

    Returns:
      float32 numpy array of shape (g, a, b).
    """
    return self._reconstruct(np, host_dense(self.values))

  def param_count(self) -> int:
    from penrose_jax.compression.pytree_codec import stored_count
    return stored_count(self.values) + self.index.size + self.counts.size

  def nbytes(self) -> int:
    from penrose_jax.compression.pytree_codec import stored_bytes
    return stored_bytes(self.values) + self.index.nbytes + self.counts.nbytes


def spectral_encode(x: np.ndarray, kind: str, axes: tuple[int, ...], tau=None, keep_energy=None,
                    quantize: str = "none", group_size: int = 64) -> SpectralArray:
  """Transforms a (g, a, b) array per block, truncates, and stores values + indices.

  Args:
    x: (g, a, b) float array.
    kind: 'dct' or 'fft'.
    axes: axes to transform: (1, 2) for 2-D blocks, (1,) for factors along their long axis.
    tau: magnitude threshold.
    keep_energy: kept-energy fraction per block.
    quantize: 'none' | 'int8' | 'int4' for the kept values.
    group_size: quantization group size.

  Returns:
    The SpectralArray.
  """
  from penrose_jax.compression.quantization import maybe_quantize
  x = np.asarray(x, np.float64)
  if x.ndim != 3:
    raise ValueError(f"spectral_encode expects (g, a, b), got shape {x.shape}")
  coef = forward(x, kind, axes)
  mask = keep_mask(coef, tau, keep_energy)
  g, a, b = x.shape
  flat_mask = mask.reshape(g, -1)
  counts = flat_mask.sum(axis=1).astype(np.int32)
  pos = np.nonzero(flat_mask)[1]
  index = pos.astype(np.uint16 if a * b <= 65536 else np.int32)
  values = coef.reshape(g, -1)[flat_mask]
  return SpectralArray(maybe_quantize(values, quantize, group_size), StaticArray(index),
                       StaticArray(counts), (int(g), int(a), int(b)), kind, tuple(axes))
