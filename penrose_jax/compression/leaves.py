"""Compressed weight leaves (pytree dataclasses) implementing the CompressedMatrix protocol.

* `TiledLowRank`: tiles grouped by (h, w, rank). A low-rank group stores u (g, h, r) and
  v (g, w, r) (B_i = u_i v_i^T); a dense group stores blocks (g, h, w). Any of these arrays may
  be a plain float32 array, a `QuantizedArray` or a `SpectralArray` (factor-scope spectral).
* `SpectralMatrix`: every tile stored as truncated 2-D transform coefficients (block scope).
* `QuantizedDense`: the plain RTN int8/int4 baseline of the whole kernel.

matmul never forms the (in, out) matrix. Every tiling we build (penrose, grid, single) is a set
of row bands whose tiles cut the band's columns into intervals (`band_plan`, checked
statically), so the default path (`factored.apply_segments`) runs one dot per band (x[..., band]
against the band's u factors and dense blocks side by side) and then one dot per output column
segment (the intervals between all bands' column cuts), whose contraction spans every band's
rank slots covering it; segments are concatenated: static slices and dots only, no gather,
scatter or band sum. `MATMUL_PATH = 'batched'` selects `factored.apply` (batched dots per tile
shape and rank bucket) instead. Gathers/scatters are kept only as the fallback for leaves whose
tiles are not band-structured (custom layouts). Tile coordinates are static (`StaticArray`), so
jit specialises the slices and grads flow only through the stored float values. For inference,
`compression.inference.prepare_for_inference` decodes codecs and stacks factors once.

Registration: every leaf is put in LEAF_TYPES here and, when `penrose_jax.io.checkpoint`
provides `register_leaf_type`, registered there too (try-import: no hard dependency either
way; io.checkpoint may also consult LEAF_TYPES directly).
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Leaf arrays may be QuantizedArray / SpectralArray: importing their modules here registers
# their codecs, so restoring a checkpoint in a fresh process (which imports only this module)
# can decode them.
from penrose_jax.compression import factored, pytree_codec, quantization, spectral  # noqa: F401
from penrose_jax.compression.pytree_codec import (StaticArray, as_dense, host_dense,
                                                  register_codec, stored_bytes, stored_count)

LEAF_TYPES: dict[str, type] = {}
# How band-structured leaves multiply (read at trace time; see factored.py): 'segments' (one
# dot per row band, then one per output column segment; fastest measured on CPU) or
# 'batched' (one batched dot per band height and per (tile width, rank bucket): the fewest
# ops, slower on XLA:CPU whose batched dots and band-sum assembly ran 1.5-3x slower).
MATMUL_PATH = "segments"


def register_leaf(cls: type) -> type:
  """Registers a leaf for decoding and, if available, with io.checkpoint."""
  register_codec(cls)
  LEAF_TYPES[cls.__name__] = cls
  try:
    ckpt = importlib.import_module("penrose_jax.io.checkpoint")
    ckpt.register_leaf_type(cls)
  except (ImportError, AttributeError):
    pass  # io.checkpoint absent or still initialising (it may import us): LEAF_TYPES suffices.
  return cls


class _CheckpointMixin:
  """The checkpoint contract, derived generically from the dataclass fields."""

  def checkpoint_arrays(self) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    pytree_codec.encode(self, "", arrays)
    return arrays

  def checkpoint_meta(self) -> dict:
    return pytree_codec.encode(self, "", {})

  @classmethod
  def from_checkpoint(cls, arrays: dict, meta: dict):
    obj = pytree_codec.decode(meta, "", arrays)
    if not isinstance(obj, cls):
      raise ValueError(f"checkpoint meta describes {type(obj).__name__}, not {cls.__name__}")
    return obj


def _tile_index(start: StaticArray, length: int) -> np.ndarray:
  """(g, length) absolute indices of each tile's rows or cols."""
  return start.array.astype(np.int64)[:, None] + np.arange(length, dtype=np.int64)[None, :]


def _gather(x: jax.Array, row0: StaticArray, h: int) -> jax.Array:
  idx = _tile_index(row0, h)
  return jnp.take(x, idx.reshape(-1), axis=-1).reshape(x.shape[:-1] + idx.shape)


def _scatter_add(out: jax.Array, y: jax.Array, col0: StaticArray, w: int) -> jax.Array:
  idx = _tile_index(col0, w).reshape(-1)
  return out.at[..., idx].add(y.reshape(y.shape[:-2] + (-1,)))


def _materialize_groups_host(shape, groups) -> np.ndarray:
  """Dense (m, n) float32 numpy matrix from grouped blocks, computed on the host.

  The streaming compressor materializes every new leaf once; eager jnp ops here compiled one
  XLA program per distinct (tiles, rank) shape and kept it cached, which grew the process by
  ~100 MiB per layer of a 1.5 B model. numpy has no such cache.
  """
  out = np.zeros(shape, np.float32)
  for group in groups:
    if isinstance(group, LowRankGroup):
      blocks = np.einsum("ghr,gwr->ghw", host_dense(group.u), host_dense(group.v))
    else:
      blocks = host_dense(group.data)
    for k, (r0, c0) in enumerate(zip(group.row0.array.tolist(), group.col0.array.tolist())):
      out[r0:r0 + group.h, c0:c0 + group.w] = blocks[k]
  return out


def _materialize_groups(shape, groups) -> jax.Array:
  """Dense (m, n) from grouped blocks with ONE static gather (scatters are slow eagerly).

  The blocks of all groups are flattened into one vector plus a trailing zero; a static
  (m * n,) index maps every matrix position to its value (or to the zero, for positions not
  covered, e.g. rank-0 tiles).
  """
  m, n = shape
  pieces, positions, offset = [], np.full(m * n, -1, np.int64), 0
  for group in groups:
    blocks = group.blocks()
    g, h, w = blocks.shape
    rows = _tile_index(group.row0, h)[:, :, None]
    cols = _tile_index(group.col0, w)[:, None, :]
    target = (rows * n + cols).reshape(-1)
    positions[target] = offset + np.arange(g * h * w)
    offset += g * h * w
    pieces.append(blocks.reshape(-1))
  pieces.append(jnp.zeros((1,), jnp.float32))
  flat = jnp.concatenate(pieces)
  positions[positions < 0] = offset
  return jnp.take(flat, positions).reshape(m, n)


def _merge_lowrank(groups, min_fill: float = 0.5):
  """Buckets low-rank groups of the same (h, w) for matmul, padding ranks at trace time.

  Storage keeps one group per exact (h, w, rank) (no padding stored); a budget allocation
  can give every tile its own rank, which would mean one einsum chain per tile. At trace
  time we merge groups of equal (h, w) whose rank is >= min_fill * the bucket's max rank,
  zero-padding factors to that max: at most 1/min_fill extra FLOPs, far fewer kernels.
  Yields (u (G, h, rmax), v (G, w, rmax), row0, col0, h, w) with u/v as decoded arrays.
  """
  by_shape: dict[tuple, list] = {}
  for grp in groups:
    by_shape.setdefault((grp.h, grp.w), []).append(grp)
  for (h, w), gs in sorted(by_shape.items()):
    gs = sorted(gs, key=lambda grp: -grp.rank)
    buckets: list[list] = []
    for grp in gs:
      if buckets and grp.rank >= min_fill * buckets[-1][0].rank:
        buckets[-1].append(grp)
      else:
        buckets.append([grp])
    for bucket in buckets:
      rmax = bucket[0].rank
      pad = lambda a, r: jnp.pad(a, ((0, 0), (0, 0), (0, rmax - r)))
      yield (bucket, rmax, h, w,
             StaticArray(np.concatenate([grp.row0.array for grp in bucket])),
             StaticArray(np.concatenate([grp.col0.array for grp in bucket])), pad)


@register_codec
@struct.dataclass
class LowRankGroup:
  """g tiles of shape (h, w) at rank r: B_i = u[i] @ v[i].T."""

  u: Any
  v: Any
  row0: StaticArray = struct.field(pytree_node=False)
  col0: StaticArray = struct.field(pytree_node=False)
  h: int = struct.field(pytree_node=False)
  w: int = struct.field(pytree_node=False)
  rank: int = struct.field(pytree_node=False)

  def blocks(self) -> jax.Array:
    return jnp.einsum("ghr,gwr->ghw", as_dense(self.u, jnp.float32), as_dense(self.v, jnp.float32))

  def apply(self, x: jax.Array, out: jax.Array) -> jax.Array:
    xg = _gather(x, self.row0, self.h)
    t = jnp.einsum("...gh,ghr->...gr", xg, as_dense(self.u, x.dtype))
    y = jnp.einsum("...gr,gwr->...gw", t, as_dense(self.v, x.dtype))
    return _scatter_add(out, y, self.col0, self.w)

  def stored(self) -> tuple[int, int]:
    coords = self.row0.size + self.col0.size
    return (stored_count(self.u) + stored_count(self.v) + coords,
            stored_bytes(self.u) + stored_bytes(self.v) + 4 * coords)


@register_codec
@struct.dataclass
class DenseGroup:
  """g dense tiles of shape (h, w) (blocks may be a QuantizedArray or SpectralArray)."""

  data: Any
  row0: StaticArray = struct.field(pytree_node=False)
  col0: StaticArray = struct.field(pytree_node=False)
  h: int = struct.field(pytree_node=False)
  w: int = struct.field(pytree_node=False)

  def blocks(self) -> jax.Array:
    return as_dense(self.data, jnp.float32)

  def apply(self, x: jax.Array, out: jax.Array) -> jax.Array:
    xg = _gather(x, self.row0, self.h)
    y = jnp.einsum("...gh,ghw->...gw", xg, as_dense(self.data, x.dtype))
    return _scatter_add(out, y, self.col0, self.w)

  def stored(self) -> tuple[int, int]:
    coords = self.row0.size + self.col0.size
    return stored_count(self.data) + coords, stored_bytes(self.data) + 4 * coords


def band_plan(shape, groups) -> Optional[tuple]:
  """The static band structure of a grouped leaf, or None when it has none.

  A leaf is band-structured when tiles sharing a row0 share their height, bands do not
  overlap in rows, and tiles of a band do not overlap in columns. Gaps (rank-0 tiles are not
  stored; whole bands may be missing) are allowed: they contribute zeros, as in materialize.

  Args:
    shape: dense (in, out) shape.
    groups: the leaf's LowRankGroup / DenseGroup tuple.

  Returns:
    Tuple of (row0, h, tiles) per band sorted by row0, tiles = ((col0, w, group index, k,
    rank or None for dense), ...) sorted by col0; or None.
  """
  return band_structure(shape, [
      (r0, grp.h, c0, grp.w, gi, k, grp.rank if isinstance(grp, LowRankGroup) else None)
      for gi, grp in enumerate(groups)
      for k, (r0, c0) in enumerate(zip(grp.row0.array.tolist(), grp.col0.array.tolist()))])


def band_structure(shape, tiles) -> Optional[tuple]:
  """Tiles given as (row0, h, col0, w, *payload) grouped into bands, or None (see band_plan).

  Args:
    shape: dense (in, out) shape.
    tiles: iterable of (row0, h, col0, w, *payload) tuples.

  Returns:
    Tuple of (row0, h, ((col0, w, *payload), ...)) per band, sorted by row0 then col0; or None
    when the tiles are not band-structured inside `shape`.
  """
  m, n = shape
  bands: dict[int, list] = {}
  heights: dict[int, int] = {}
  for r0, h, c0, w, *payload in tiles:
    if heights.setdefault(r0, h) != h:
      return None
    bands.setdefault(r0, []).append((c0, w, *payload))
  plan, row_end = [], 0
  for r0 in sorted(bands):
    h = heights[r0]
    if r0 < row_end or r0 + h > m:
      return None
    row_end = r0 + h
    band = sorted(bands[r0])
    col_end = 0
    for c0, w, *_ in band:
      if c0 < col_end or c0 + w > n:
        return None
      col_end = c0 + w
    plan.append((r0, h, tuple(band)))
  return tuple(plan)


def _decode_groups(groups, dtype) -> list:
  """Per group (u, v) or (blocks, None) as dtype arrays, codecs decoded (once per group)."""
  return [(as_dense(g.u, dtype), as_dense(g.v, dtype)) if isinstance(g, LowRankGroup)
          else (as_dense(g.data, dtype), None) for g in groups]


def _gather_matmul(shape, groups, x: jax.Array, dtype) -> jax.Array:
  """x @ W by per-group gathers and scatter-adds (any tile layout; the fallback)."""
  out = jnp.zeros(x.shape[:-1] + (shape[1],), dtype)
  lowrank = [grp for grp in groups if isinstance(grp, LowRankGroup)]
  for bucket, rmax, h, w, row0, col0, pad in _merge_lowrank(lowrank):
    u = jnp.concatenate([pad(as_dense(grp.u, dtype), grp.rank) for grp in bucket])
    v = jnp.concatenate([pad(as_dense(grp.v, dtype), grp.rank) for grp in bucket])
    out = LowRankGroup(u, v, row0, col0, h, w, rmax).apply(x, out)
  for group in groups:
    if not isinstance(group, LowRankGroup):
      out = group.apply(x, out)
  return out


class _GroupedLeaf(_CheckpointMixin):
  """Shared matmul / materialize / counting over `self.groups()`."""

  def groups(self):
    raise NotImplementedError

  def matmul(self, x: jax.Array) -> jax.Array:
    """x (..., in) -> (..., out) without forming the dense matrix.

    Args:
      x: activations (..., in); integer inputs are computed in float32.

    Returns:
      (..., out) in x's float dtype.
    """
    x = jnp.asarray(x)
    if x.shape[-1] != self.shape[0]:
      raise ValueError(f"matmul input width {x.shape[-1]} != leaf in-dim {self.shape[0]}")
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    groups = self.groups()
    bands = band_plan(self.shape, groups)
    if bands is None:
      return _gather_matmul(self.shape, groups, x, dtype)
    decoded = _decode_groups(groups, dtype)
    if MATMUL_PATH == "batched":
      plan = factored.plan_for(self.shape, bands)
      return factored.apply(plan, factored.stack_factors(plan, decoded, jnp, dtype), x)
    plan = factored.segment_plan_for(self.shape, bands)
    return factored.apply_segments(plan, factored.stack_segment_factors(plan, decoded, jnp, dtype),
                                   x)

  def materialize(self) -> jax.Array:
    """The dense (in, out) float32 matrix."""
    return _materialize_groups(self.shape, self.groups())

  def materialize_host(self) -> np.ndarray:
    """The dense (in, out) float32 matrix as numpy, without compiling anything (eager use).

    Returns:
      (in, out) float32 numpy array equal to `materialize()`.
    """
    return _materialize_groups_host(self.shape, self.groups())

  def param_count(self) -> int:
    """Stored numbers: values, factors, scales, indices and tile coordinates."""
    return int(sum(g.stored()[0] for g in self.groups()))

  def nbytes(self) -> int:
    """Bytes of the stored form (int4 counted as 0.5 byte, see quantization.py)."""
    return int(sum(g.stored()[1] for g in self.groups()))


@register_leaf
@struct.dataclass
class TiledLowRank(_GroupedLeaf):
  """A kernel stored as per-tile low-rank factors (and dense tiles where cheaper).

  Attributes:
    lowrank: LowRankGroup per distinct (h, w, rank) with rank > 0.
    dense: DenseGroup per distinct (h, w) of dense tiles.
    shape: dense (in, out) shape (static).
    layout: tiling kind that produced it (static, informational).
  """

  lowrank: tuple
  dense: tuple
  shape: tuple = struct.field(pytree_node=False)
  layout: str = struct.field(pytree_node=False, default="custom")

  def groups(self):
    return tuple(self.lowrank) + tuple(self.dense)


@register_leaf
@struct.dataclass
class SpectralMatrix(_GroupedLeaf):
  """A kernel stored as truncated 2-D transform coefficients of each tile (block scope).

  matmul rebuilds each group's blocks from coefficients inside jit (scatter + two basis
  matmuls), then contracts; FLOPs are therefore not lower than dense. The saving is storage.

  Attributes:
    blocks: DenseGroup per tile shape whose `data` is a SpectralArray.
    shape: dense (in, out) shape (static).
    layout: tiling kind (static).
  """

  blocks: tuple
  shape: tuple = struct.field(pytree_node=False)
  layout: str = struct.field(pytree_node=False, default="custom")

  def groups(self):
    return tuple(self.blocks)


@register_leaf
@struct.dataclass
class QuantizedDense(_CheckpointMixin):
  """Plain round-to-nearest int8/int4 kernel (the baseline), dequantized on the fly.

  Attributes:
    weight: QuantizedArray of the (in, out) kernel, grouped along the input axis.
    shape: (in, out) (static).
  """

  weight: Any
  shape: tuple = struct.field(pytree_node=False)

  def matmul(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    return jnp.matmul(x.astype(dtype), self.weight.dense().astype(dtype))

  def materialize(self) -> jax.Array:
    return self.weight.dense()

  def materialize_host(self) -> np.ndarray:
    """The dequantized (in, out) float32 matrix as numpy (see _GroupedLeaf.materialize_host).

    Returns:
      (in, out) float32 numpy array.
    """
    return host_dense(self.weight)

  def param_count(self) -> int:
    return int(self.weight.param_count())

  def nbytes(self) -> int:
    return int(self.weight.nbytes())


def rtn_quantize_dense(w, bits: int = 8, group_size: int = 64) -> QuantizedDense:
  """RTN baseline: quantize a dense (in, out) kernel in groups along the input axis.

  Args:
    w: (in, out) kernel.
    bits: 8 or 4.
    group_size: input entries per scale.

  Returns:
    The QuantizedDense leaf.
  """
  from penrose_jax.compression.quantization import quantize_array
  w = np.asarray(w, np.float32)
  return QuantizedDense(quantize_array(w, bits, group_size, axis=0), tuple(int(s) for s in w.shape))


@register_leaf
@struct.dataclass
class CorrectedQuantizedDense(_CheckpointMixin):
  """A quantized kernel plus a low-rank correction of its rounding error: W ~ Q + u v^T.

  Attributes:
    weight: QuantizedArray of the (in, out) kernel (as in `QuantizedDense`).
    u: (in, r) factor (float32 array or QuantizedArray).
    v: (out, r) factor (float32 array or QuantizedArray).
    shape: (in, out) (static).
  """

  weight: Any
  u: Any
  v: Any
  shape: tuple = struct.field(pytree_node=False)

  def matmul(self, x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    return (jnp.matmul(x, self.weight.dense().astype(dtype))
            + jnp.matmul(jnp.matmul(x, as_dense(self.u, dtype)), as_dense(self.v, dtype).T))

  def materialize(self) -> jax.Array:
    return self.weight.dense() + as_dense(self.u, jnp.float32) @ as_dense(self.v, jnp.float32).T

  def materialize_host(self) -> np.ndarray:
    """The (in, out) float32 matrix Q + u v^T as numpy.

    Returns:
      (in, out) float32 numpy array.
    """
    return (host_dense(self.weight) + host_dense(self.u) @ host_dense(self.v).T).astype(
        np.float32)

  def param_count(self) -> int:
    return int(self.weight.param_count() + stored_count(self.u) + stored_count(self.v))

  def nbytes(self) -> int:
    return int(self.weight.nbytes() + stored_bytes(self.u) + stored_bytes(self.v))
