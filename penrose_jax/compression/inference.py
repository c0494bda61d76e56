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

`prepare_for_inference(params, share_layers=True)` also cuts the decoder layers into a few runs
of consecutive layers, pads each tile's rank to the largest that tile position has within its
run (the same matrix of every layer of a run then has one structure) and stacks each run
(`llama.stack_layers`), so the forward scans one compiled block per run instead of compiling
every layer: the compile time of a tiled model stops growing with its depth, at the price of
the padded FLOPs (`rank_padding` reports them, from static metadata only).
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from penrose_jax.compression import factored
from penrose_jax.compression.leaves import (LowRankGroup, SpectralMatrix, TiledLowRank,
                                            band_plan, band_structure)
from penrose_jax.compression.pytree_codec import host_dense
from penrose_jax.models import llama
from penrose_jax.models.linear import map_selected_leaves


@struct.dataclass
class FactoredMatrix:
  """A kernel in inference form: x @ W = segment matmul of pre-stacked float factors.

  Attributes:
    u: per band, (h, sum of slot widths) float array.
    v: per output column segment, (K_s, width) float array or None (no low-rank input).
    stored: int32 [param_count, nbytes] of the stored leaf; an array (not static), so leaves
      that differ only in their stored sizes share one structure, and stacked layers
      (`llama.stack_layers`) keep one row per layer.
    plan: the static SegmentPlan.
    layout: tiling kind (static, informational).
  """

  u: tuple
  v: tuple
  stored: Any
  plan: factored.SegmentPlan = struct.field(pytree_node=False)
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
    """Stored numbers of the leaf (or stacked leaves) this was prepared from."""
    return int(np.sum(np.asarray(self.stored)[..., 0], dtype=np.int64))

  def nbytes(self) -> int:
    """Stored bytes of the leaf (or stacked leaves) this was prepared from."""
    return int(np.sum(np.asarray(self.stored)[..., 1], dtype=np.int64))


# 16-tile Penrose / grid SmolLM2-135M at a uniform 0.6 fit in 1-3 runs at +46 % / +41 % tile
# FLOPs: compile 8-17 s instead of ~300 s, decode 1.15-1.31x dense, prefill 0.91-1.08x
# (results/README.md, "Inference speed: shared layer programs").
DEFAULT_MAX_PADDING = 0.5
DEFAULT_MAX_RUNS = 3
# A tile position: (row0, height, col0, width).
TileKey = tuple[int, int, int, int]


def _tile_ranks(leaf: Any) -> Optional[dict]:
  """Tile position -> stored rank (None for a dense tile), from static metadata only."""
  bands = band_plan(leaf.shape, leaf.groups())
  if bands is None:
    return None
  return {(r0, h, c0, w): rank for r0, h, tiles in bands for c0, w, _, _, rank in tiles}


def _factored(leaf: Any, ranks: dict) -> FactoredMatrix:
  """The FactoredMatrix of a band-structured leaf with each tile padded to `ranks[position]`.

  One group per tile, in (row0, col0) order: two leaves with the same positions and ranks get
  the same SegmentPlan, whatever groups their stored form had. Codecs are decoded here, once.
  """
  decoded_groups = [(host_dense(g.u), host_dense(g.v)) if isinstance(g, LowRankGroup)
                    else (host_dense(g.data), None) for g in leaf.groups()]
  stored = {(r0, h, c0, w): (rank, decoded_groups[gi][0][k],
                             None if rank is None else decoded_groups[gi][1][k])
            for r0, h, tiles in band_plan(leaf.shape, leaf.groups())
            for c0, w, gi, k, rank in tiles}
  decoded, entries = [], []
  for key in sorted(ranks):
    r0, h, c0, w = key
    target = ranks[key]
    rank, a, b = stored.get(key, (0, None, None))
    if target is None:  # dense here, or dense in another layer: the block, formed
      block = a if rank is None else (np.zeros((h, w), np.float32) if not rank else a @ b.T)
      decoded.append((np.asarray(block, np.float32)[None], None))
    else:
      u, v = np.zeros((1, h, target), np.float32), np.zeros((1, w, target), np.float32)
      if rank:
        u[0, :, :rank], v[0, :, :rank] = a, b
      decoded.append((u, v))
    entries.append((r0, h, c0, w, len(decoded) - 1, 0, target))
  plan = factored.segment_plan_for(leaf.shape, band_structure(leaf.shape, entries))
  stacked = factored.stack_segment_factors(plan, decoded, np, np.float32)
  put = lambda a: None if a is None else jax.device_put(np.ascontiguousarray(a))
  return FactoredMatrix(tuple(put(a) for a in stacked["u"]), tuple(put(a) for a in stacked["v"]),
                        np.asarray([leaf.param_count(), leaf.nbytes()], np.int32), plan,
                        leaf.layout)


def _own_ranks(ranks: dict) -> dict:
  return {key: rank for key, rank in ranks.items() if rank != 0}


def prepare_leaf(leaf: Any) -> Any:
  """One stored leaf in inference form (leaves without band structure are returned as is).

  Args:
    leaf: a TiledLowRank or SpectralMatrix with concrete arrays.

  Returns:
    A FactoredMatrix equal to the leaf as a linear map, or the leaf itself.
  """
  ranks = _tile_ranks(leaf)
  return leaf if ranks is None else _factored(leaf, _own_ranks(ranks))


def _aligned_ranks(shape: tuple, tables: list) -> Optional[dict]:
  """Per tile position the largest rank over `tables`, or None when they cannot share a plan.

  A position stored dense in any table is dense in all (a low-rank tile costs at most the
  dense block's FLOPs). They cannot share when the union of positions is not a band
  structure (different layouts).
  """
  ranks: dict[TileKey, Any] = {}
  for table in tables:
    for key, rank in table.items():
      dense = rank is None or (key in ranks and ranks[key] is None)
      ranks[key] = None if dense else max(rank, ranks.get(key) or 0)
  if band_structure(shape, list(ranks)) is None:
    return None
  return _own_ranks(ranks)


def _layer_and_family(path: tuple) -> Optional[tuple[int, tuple]]:
  """(i, the path below 'layers_i') for a leaf inside decoder layer i, else None."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  if not names or not names[0].startswith("layers_"):
    return None
  return int(names[0][len("layers_"):]), tuple(names[1:])


def _selectable(x: Any) -> bool:
  return isinstance(x, (TiledLowRank, SpectralMatrix))


def _tile_flops(ranks: dict) -> int:
  """Multiply-adds per input row of the tiles: (h + w) * rank, h * w for a dense tile."""
  return sum(h * w if r is None else (h + w) * r for (_, h, _, w), r in ranks.items())


def _aligned_targets(flat: list, max_padding: float, max_runs: int) -> tuple[list, dict]:
  """Tile ranks of the flattened leaves and the aligned ranks of the layer runs chosen.

  The decoder layers are cut into at most `max_runs` runs of consecutive layers; inside a run
  each matrix's tiles get their largest rank over the run's layers. The fewest runs whose
  padding adds at most `max_padding` to the tile FLOPs win (exact dynamic programme over the
  cut points); when none does, nothing is aligned.

  Args:
    flat: `tree_flatten_with_path(params, is_leaf=_selectable)` leaves.
    max_padding: largest allowed padded / true tile FLOPs - 1.
    max_runs: most runs (each compiles its own block).

  Returns:
    (tables: per leaf its tile ranks or None, targets: leaf index -> aligned ranks).
  """
  tables = [_tile_ranks(leaf) if _selectable(leaf) else None for _, leaf in flat]
  grid: dict[tuple, dict[int, int]] = collections.defaultdict(dict)  # family -> layer -> leaf
  for index, (path, _) in enumerate(flat):
    where = _layer_and_family(path)
    if tables[index] is not None and where is not None:
      grid[where[1]][where[0]] = index
  count = 1 + max((l for by_layer in grid.values() for l in by_layer), default=-1)

  def segment(i: int, j: int) -> Optional[tuple[int, int, dict]]:
    """(padded, true, leaf -> ranks) of layers i..j-1 as one run, None if they cannot share."""
    padded = true = 0
    assign = {}
    for by_layer in grid.values():
      members = [by_layer[l] for l in range(i, j) if l in by_layer]
      if members and len(members) != j - i:
        return None  # compressed in some layers of the run only
      ranks = (_aligned_ranks(flat[members[0]][1].shape, [tables[k] for k in members])
               if members else {})
      if ranks is None:
        return None
      padded += len(members) * _tile_flops(ranks)
      true += sum(_tile_flops(_own_ranks(tables[k])) for k in members)
      assign.update({k: ranks for k in members})
    return padded, true, assign

  segments = {(i, j): segment(i, j) for i in range(count) for j in range(i + 1, count + 1)}
  total = sum(segments[(l, l + 1)][1] for l in range(count))
  best = {0: {0: (0, ())}}  # runs -> end layer -> (padded FLOPs, cut points)
  for runs in range(1, max_runs + 1):
    best[runs] = {}
    for (i, j), seg in segments.items():
      if seg is not None and i in best[runs - 1]:
        option = (best[runs - 1][i][0] + seg[0], best[runs - 1][i][1] + ((i, j),))
        if j not in best[runs] or option < best[runs][j]:
          best[runs][j] = option
    done = best[runs].get(count)
    if count and done is not None and done[0] <= (1 + max_padding) * total:
      targets = {}
      for cut in done[1]:
        targets.update(segments[cut][2])
      return tables, targets
  return tables, {}


def rank_padding(params: Any, max_padding: float = DEFAULT_MAX_PADDING,
                 max_runs: int = DEFAULT_MAX_RUNS) -> float:
  """FLOPs the rank alignment of `share_layers` adds to the tiles it aligns (0.1 = +10 %).

  Args:
    params: params with stored compressed leaves (before `prepare_for_inference`).
    max_padding: as in `prepare_for_inference`.
    max_runs: as in `prepare_for_inference`.

  Returns:
    Padded / true tile FLOPs of the aligned matrices, minus 1 (0 when nothing aligns).
  """
  tables, targets = _aligned_targets(
      jax.tree_util.tree_flatten_with_path(params, is_leaf=_selectable)[0], max_padding,
      max_runs)
  true = sum(_tile_flops(_own_ranks(tables[i])) for i in targets)
  padded = sum(_tile_flops(ranks) for ranks in targets.values())
  return padded / true - 1.0 if true else 0.0


def prepare_for_inference(params: Any, share_layers: bool = False,
                          max_padding: float = DEFAULT_MAX_PADDING,
                          max_runs: int = DEFAULT_MAX_RUNS) -> Any:
  """Pure transform: every tiled / spectral leaf of a params tree in inference form.

  Spectral and quantized codecs are decoded once here (host numpy, no compiles), so the
  compiled forward holds only the segment matmul's dots. `QuantizedDense` leaves, dense
  arrays and packed training leaves are left unchanged.

  Args:
    params: params pytree with stored compressed leaves.
    share_layers: also cut the decoder layers into at most `max_runs` runs of consecutive
      layers, pad each tile's rank to its largest over its run (same layout needed) and stack
      each run (`llama.stack_layers`): `llama.forward` then scans it, compiling one block per
      run instead of one per layer. Costs `rank_padding(params)` more tile FLOPs.
    max_padding: the most padding allowed (fraction of the tile FLOPs); the fewest runs that
      stay within it are chosen, and with none the layers keep their own ranks.
    max_runs: the most runs (compiled blocks).

  Returns:
    A new tree (the input is not modified) for generation, evaluation and benchmarks.
  """
  if not share_layers:
    return map_selected_leaves(params, _selectable,
                               lambda chosen: [prepare_leaf(l) for l in chosen])
  flat, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=_selectable)
  tables, targets = _aligned_targets(flat, max_padding, max_runs)
  # Leaves without a tile table (not compressed, or not band-structured) stay as they are.
  out = [leaf if tables[i] is None else _factored(leaf, targets.get(i) or _own_ranks(tables[i]))
         for i, (_, leaf) in enumerate(flat)]
  return llama.stack_layers(jax.tree_util.tree_unflatten(treedef, out))
