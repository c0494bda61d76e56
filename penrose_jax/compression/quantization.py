"""Round-to-nearest group-wise int8/int4/int3 quantization of stored values.

`QuantizedArray` is a stored-array codec usable wherever a leaf holds a float array (factors,
dense tiles, spectral coefficient values). Groups of `group_size` consecutive entries along
`axis` share one float16 scale (symmetric, scale = max|x| / qmax). int4 / int3 values live in an
int8 container in memory (no packing kernel); `nbytes` reports the packed format size (bits / 8
byte per value: 0.5 for int4, 0.375 for int3) plus 2 bytes per scale, which is what a packed checkpoint would hold.

`QuantizedDense` is the plain RTN baseline leaf for a whole (in, out) kernel, grouped along
the input axis; its matmul dequantizes on the fly inside jit (the dense float matrix exists
transiently in the compiled graph, the stored form stays int).
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
from flax import struct

from penrose_jax.compression.pytree_codec import register_codec

QMAX = {8: 127, 4: 7, 3: 3}
BITS = {"int8": 8, "int4": 4, "int3": 3}


@register_codec
@struct.dataclass
class QuantizedArray:
  """Group-wise symmetric RTN quantized array.

  Attributes:
    q: int8 values, shape (*rest, n_groups, group_size) with `axis` moved last and padded.
    scale: float16 scales (*rest, n_groups, 1).
    shape: original shape (static).
    axis: grouped axis of the original array (static).
    bits: 8, 4 or 3 (static).
  """

  q: jax.Array
  scale: jax.Array
  shape: tuple = struct.field(pytree_node=False)
  axis: int = struct.field(pytree_node=False)
  bits: int = struct.field(pytree_node=False)

  def _dequantize(self, xp, q, scale):
    x = q.astype(xp.float32) * scale.astype(xp.float32)
    moved = list(self.shape)
    length = moved.pop(self.axis)
    x = x.reshape(tuple(moved) + (-1,))[..., :length]
    return xp.moveaxis(x, -1, self.axis)

  def dense(self) -> jax.Array:
    """Dequantized float32 array of the original shape."""
    return self._dequantize(jnp, self.q, self.scale)

  def dense_host(self) -> np.ndarray:
    """`dense()` computed in numpy (eager callers: compiles nothing).

    Returns:
      float32 numpy array of the original shape.
    """
    return self._dequantize(np, np.asarray(self.q), np.asarray(self.scale))

  def param_count(self) -> int:
    return int(self.q.size + self.scale.size)

  def nbytes(self) -> int:
    return int(np.ceil(self.q.size * self.bits / 8)) + 2 * int(self.scale.size)


def quantize_array(x, bits: int, group_size: int = 64, axis: int = -1) -> QuantizedArray:
  """Quantizes x with symmetric RTN in groups along `axis`.

  Args:
    x: float array.
    bits: 8, 4 or 3.
    group_size: entries per scale (>= 1); the axis is zero-padded to a multiple.
    axis: axis along which groups run (choose the long axis of a factor).

  Returns:
    The QuantizedArray.
  """
  if bits not in QMAX:
    raise ValueError(f"bits must be one of {sorted(QMAX)}, got {bits}")
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}")
  x = np.asarray(x, np.float32)
  axis = axis % x.ndim
  moved = np.moveaxis(x, axis, -1)
  length = moved.shape[-1]
  gs = min(group_size, max(length, 1))
  pad = (-length) % gs
  moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
  grouped = moved.reshape(moved.shape[:-1] + (-1, gs))
  amax = np.max(np.abs(grouped), axis=-1, keepdims=True)
  scale = (amax / QMAX[bits]).astype(np.float16)
  scale32 = scale.astype(np.float32)
  safe = np.where(scale32 > 0, scale32, 1.0)
  q = np.clip(np.rint(grouped / safe), -QMAX[bits] - 1, QMAX[bits]).astype(np.int8)
  return QuantizedArray(jax.device_put(q), jax.device_put(scale), tuple(int(s) for s in x.shape),
                        int(axis), int(bits))


def quantization_error(x, qa: QuantizedArray) -> float:
  """Relative Frobenius error of a quantized array."""
  x = np.asarray(x, np.float64)
  d = np.asarray(qa.dense(), np.float64)
  return float(np.linalg.norm(x - d) / max(np.linalg.norm(x), 1e-30))


def maybe_quantize(x, quantize: str, group_size: int, axis: int = -1):
  """Returns x as float32 jax array ('none') or a QuantizedArray ('int8' / 'int4' / 'int3')."""
  if quantize == "none":
    # device_put, not jnp.asarray: the latter compiles one program per new shape (JAX 0.10).
    return jax.device_put(np.asarray(x, np.float32))
  if quantize not in BITS:
    raise ValueError(f"unknown quantize {quantize!r}; allowed: {['none'] + list(BITS)}")
  return quantize_array(x, BITS[quantize], group_size, axis)
