"""Inference form of compressed params: codecs decoded once, factors pre-stacked for matmul.

The stored leaves (`TiledLowRank`, `SpectralMatrix`) stay the on-disk format and the unit of
training. Their `matmul` decodes every codec (spectral coefficients: a scatter-free gather
plus two basis matmuls per group; quantized values: a dequantization) and stacks the factors
for the segment matmul on every call, inside the compiled program. For generation and
benchmarks that work is the same at every step, and for a factor-scope DCT model it made the
compiled program so large that SmolLM2's prefill did not compile (LLVM ran out of code-section
memory). `prepare_for_inference(params)` is a pure params -> params transform that does it
once on the host (numpy: compiles nothing) and returns `FactoredMatrix` leaves holding only
the per-band U and per-column-segment V arrays of `factored.apply_segments`.

A FactoredMatrix is not a checkpoint format (it is not registered with io.checkpoint, so
saving one fails loudly); its `param_count` / `nbytes` are those of the stored leaf it came
from (padding and decoding cost memory and FLOPs at inference, not storage).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from penrose_jax.compression import factored
from penrose_jax.compression.leaves import LowRankGroup, SpectralMatrix, TiledLowRank, band_plan
from penrose_jax.compression.pytree_codec import host_dense
from penrose_jax.models.linear import map_selected_leaves


@struct.dataclass
class FactoredMatrix:
  """A kernel in inference form: x @ W = segment matmul of pre-stacked float factors.

  Attributes:
    u: per band, (h, sum of slot widths) float array.
    v: per output column segment, (K_s, width) float array or None (no low-rank input).
    plan: the static SegmentPlan.
    stored_params: `param_count()` of the stored leaf (static).
    stored_bytes: `nbytes()` of the stored leaf (static).
    layout: tiling kind (static, informational).
  """

  u: tuple
  v: tuple
  plan: factored.SegmentPlan = struct.field(pytree_node=False)
  stored_params: int = struct.field(pytree_node=False)
  stored_bytes: int = struct.field(pytree_node=False)
  layout: str = struct.field(pytree_node=False, default="custom")

  @property
  def shape(self) -> tuple:
    return self.plan.shape

  def matmul(self, x: jax.Array) -> jax.Array:
    """x (..., in) -> (..., out) without forming W.

    Args:
      x: activations; integer inputs are computed in float32.

    Returns:
      (..., out) in x's float dtype.
    """
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    cast = lambda a: None if a is None else a.astype(dtype)
    stacked = {"u": tuple(cast(a) for a in self.u), "v": tuple(cast(a) for a in self.v)}
    return factored.apply_segments(self.plan, stacked, x.astype(dtype))

  def materialize(self) -> jax.Array:
    """The dense (in, out) float32 matrix (the matmul of the identity)."""
    return self.matmul(jnp.eye(self.shape[0], dtype=jnp.float32))

  def param_count(self) -> int:
    """Stored numbers of the leaf this was prepared from."""
    return self.stored_params

  def nbytes(self) -> int:
    """Stored bytes of the leaf this was prepared from."""
    return self.stored_bytes


def _decoded_groups(leaf: Any) -> list:
  return [(host_dense(g.u), host_dense(g.v)) if isinstance(g, LowRankGroup)
          else (host_dense(g.data), None) for g in leaf.groups()]


def prepare_leaf(leaf: Any) -> Any:
  """One stored leaf in inference form (leaves without band structure are returned as is).

  Args:
    leaf: a TiledLowRank or SpectralMatrix with concrete arrays.

  Returns:
    A FactoredMatrix equal to the leaf as a linear map, or the leaf itself.
  """
  plan = factored.segment_plan_for(leaf.shape, band_plan(leaf.shape, leaf.groups()))
  if plan is None:
    return leaf
  stacked = factored.stack_segment_factors(plan, _decoded_groups(leaf), np, np.float32)
  put = lambda a: None if a is None else jax.device_put(np.ascontiguousarray(a))
  return FactoredMatrix(tuple(put(a) for a in stacked["u"]), tuple(put(a) for a in stacked["v"]),
                        plan, leaf.param_count(), leaf.nbytes(), leaf.layout)


def prepare_for_inference(params: Any) -> Any:
  """Pure transform: every tiled / spectral leaf of a params tree in inference form.

  Spectral and quantized codecs are decoded once here (host numpy, no compiles), so the
  compiled forward holds only the segment matmul's dots. `QuantizedDense` leaves, dense
  arrays and packed training leaves are left unchanged.

  Args:
    params: params pytree with stored compressed leaves.

  Returns:
    A new tree (the input is not modified) for generation, evaluation and benchmarks.
  """
  select = lambda x: isinstance(x, (TiledLowRank, SpectralMatrix))
  return map_selected_leaves(params, select, lambda chosen: [prepare_leaf(l) for l in chosen])
