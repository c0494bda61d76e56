"""Factored matmul of a band-structured tiled leaf with few dots per matrix, not one per tile.

Every tiling we build is a set of row bands whose tiles cut the band's columns into
intervals (`leaves.band_plan`). Two static plans use that structure; both are computed from
static leaf metadata only (tile coordinates, shapes, ranks), so they are trace-time constants
under jit (cached), and gradients flow through the stacking (slices, pads, concatenations) to
the stored factors.

Segments (`segment_plan_for` / `apply_segments`, the default): one dot per row band of
x[..., band] with the band's u factors and dense blocks side by side, then one dot per output
column segment (the intervals between all bands' column cuts) whose contraction runs over
every band's rank slots that cover the segment, with the matching row slices of the v factors
stacked; the segments are concatenated. No padding (FLOPs are the true ranks'), no band sum,
no gather or scatter. Measured on the 2-core CPU (SmolLM2-135M layer 3, 0.6, 2048 rows):
penrose gate_proj 37 ms vs 64 ms for the former per-tile band path and 50 ms dense; long
contractions run near peak on XLA:CPU where per-tile dots with one tile's rank did not.

Batched (`plan_for` / `apply`, `leaves.MATMUL_PATH = 'batched'`): the fewest ops:

1. per band height h: the band inputs are stacked to (bands, ..., h) and multiplied by U_h
   (bands, h, R_h) (band b's u factors side by side, zero-padded to the longest band).
2. per (tile width w, rank bucket R): each tile's slice of the stage-1 output is zero-padded to
   R and stacked to (tiles, ..., R), times V (tiles, w, R). Dense tiles: one dot per (h, w).
3. per band, tile outputs are concatenated in column order (zeros for rank-0 gaps) and the
   bands summed.

Rank buckets pad ranks within a width (FLOPs only: `param_count` / `nbytes` of the leaves count
true ranks). On XLA:CPU its batched dots and the band-sum assembly measured 1.5-3x slower than
the segment path at prefill; it is kept for accelerators, where batched dots are the fast form.

The stacked factor arrays are built inside jit from the stored groups (training: the stored
leaves are the unit that is trained) or once on the host with xp=np for inference
(`compression.inference`). This module imports nothing from `leaves` (leaves uses it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Plan:
  """Static description of the grouped matmul of one leaf (hashable: a jit-static value).

  Attributes:
    shape: dense (in, out).
    heights: per band height, (h, r_total, bands) with bands = ((row0, slots), ...) and slots
      = ((group index, tile index, rank), ...) the band's low-rank tiles in column order.
    lowrank: per (width, bucket), (w, R, tiles) with tiles = ((height index, band index,
      offset in the band's stage-1 output, group index, tile index, rank), ...).
    dense: per dense tile shape, (h, w, tiles) with tiles = ((row0, group index, tile index),).
    assembly: per band, pieces ((col0, w, kind, key index, position in key), ...) in column
      order; kind 0 = low-rank key, 1 = dense key.
  """

  shape: tuple
  heights: tuple
  lowrank: tuple
  dense: tuple
  assembly: tuple

  def padded_rank_fraction(self) -> float:
    """Stage-2 rank padding overhead: sum of bucket ranks / sum of true ranks - 1."""
    true = sum(t[5] for _, _, tiles in self.lowrank for t in tiles)
    padded = sum(r * len(tiles) for _, r, tiles in self.lowrank)
    return padded / true - 1.0 if true else 0.0


def rank_buckets(ranks: list[int], max_buckets: int = 3, max_waste: float = 0.15) -> tuple:
  """The fewest bucket ranks (<= max_buckets) whose padding wastes <= max_waste of the ranks.

  Optimal 1-D partition of the sorted ranks by dynamic programming: each bucket pads its
  ranks up to its largest.

  Args:
    ranks: true ranks (> 0) of the tiles sharing one width.
    max_buckets: most buckets (each one is one more dot).
    max_waste: allowed padded / true - 1; the best partition with max_buckets otherwise.

  Returns:
    Sorted tuple of bucket ranks (each tile goes to the smallest bucket >= its rank).
  """
  values = sorted(set(ranks))
  count = {r: ranks.count(r) for r in values}
  true = sum(ranks)
  n = len(values)
  # cost[i][j]: padding values[i..j] (inclusive) up to values[j].
  prefix_n = np.cumsum([0] + [count[v] for v in values])
  prefix_s = np.cumsum([0] + [count[v] * v for v in values])
  cost = lambda i, j: values[j] * (prefix_n[j + 1] - prefix_n[i]) - (prefix_s[j + 1] - prefix_s[i])
  best = None
  # dp[k][j]: least padding covering values[0..j] with k buckets, last ending at j.
  dp = {0: {-1: (0, ())}}
  for k in range(1, min(max_buckets, n) + 1):
    dp[k] = {}
    for j in range(n):
      options = [(prev[0] + cost(i + 1, j), prev[1] + (values[j],))
                 for i, prev in dp[k - 1].items() if i < j]
      if options:
        dp[k][j] = min(options)
    if n - 1 in dp[k]:
      best = dp[k][n - 1]
      if best[0] <= max_waste * true:
        break
  return best[1]


def _bucket(buckets: tuple, r: int) -> int:
  return next(b for b in buckets if b >= r)


@functools.lru_cache(maxsize=4096)
def _plan_cached(shape: tuple, bands: tuple, max_buckets: int, max_waste: float) -> Plan:
  n = shape[1]
  by_width: dict[int, list[int]] = {}
  for _, _, tiles in bands:
    for _, w, _, _, rank in tiles:
      if rank is not None:
        by_width.setdefault(w, []).append(rank)
  buckets = {w: rank_buckets(rs, max_buckets, max_waste) for w, rs in by_width.items()}

  heights: dict[int, list] = {}
  for r0, h, tiles in bands:
    if any(rank is not None for *_, rank in tiles):
      heights.setdefault(h, []).append((r0, tuple((gi, k, rank) for _, _, gi, k, rank in tiles
                                                  if rank is not None)))
  height_list = sorted(heights)
  where: dict[int, tuple] = {}  # row0 -> (height index, band index)
  for hi, h in enumerate(height_list):
    for bi, (r0, _) in enumerate(heights[h]):
      where[r0] = (hi, bi)

  lr_keys: dict[tuple, list] = {}
  dn_keys: dict[tuple, list] = {}
  assembly = []
  for r0, h, tiles in bands:
    off, pieces = 0, []
    for c0, w, gi, k, rank in tiles:
      if rank is None:
        key = dn_keys.setdefault((h, w), [])
        pieces.append((c0, w, 1, (h, w), len(key)))
        key.append((r0, gi, k))
      else:
        hi, bi = where[r0]
        key = lr_keys.setdefault((w, _bucket(buckets[w], rank)), [])
        pieces.append((c0, w, 0, (w, _bucket(buckets[w], rank)), len(key)))
        key.append((hi, bi, off, gi, k, rank))
        off += rank
    assembly.append(pieces)
  lr_order = {key: i for i, key in enumerate(sorted(lr_keys))}
  dn_order = {key: i for i, key in enumerate(sorted(dn_keys))}
  assembly = tuple(tuple((c0, w, kind, (lr_order if kind == 0 else dn_order)[key], j)
                         for c0, w, kind, key, j in pieces) for pieces in assembly)
  return Plan(
      shape=tuple(shape),
      heights=tuple((h, max(sum(r for *_, r in slots) for _, slots in heights[h]),
                     tuple(heights[h])) for h in height_list),
      lowrank=tuple((w, r, tuple(lr_keys[(w, r)])) for w, r in sorted(lr_keys)),
      dense=tuple((h, w, tuple(dn_keys[(h, w)])) for h, w in sorted(dn_keys)),
      assembly=assembly)


def plan_for(shape: tuple, bands: Optional[tuple], max_buckets: int = 3,
             max_waste: float = 0.15) -> Optional[Plan]:
  """The grouped-matmul plan of a band-structured leaf (cached: a pure function of statics).

  Args:
    shape: dense (in, out).
    bands: `leaves.band_plan(shape, groups)`; None (not band-structured) gives None.
    max_buckets: most rank buckets per tile width.
    max_waste: rank padding allowed before another bucket is used (see `rank_buckets`).

  Returns:
    The Plan, or None.
  """
  if bands is None:
    return None
  return _plan_cached(tuple(shape), bands, max_buckets, max_waste)


def stack_factors(plan: Plan, decoded: list, xp=jnp, dtype=jnp.float32) -> dict:
  """The plan's stacked factor arrays from each group's decoded arrays.

  Args:
    plan: the leaf's Plan.
    decoded: per group (in the leaf's `groups()` order), (u, v) of a low-rank group or
      (blocks, None) of a dense group, as float arrays of module xp.
    xp: jnp (inside jit: gradients flow to the stored arrays) or np (host, compiles nothing).
    dtype: compute dtype.

  Returns:
    {'u': (U_h (bands, h, R_h) per height), 'v': (V (tiles, w, R) per key),
     'd': (D (tiles, h, w) per dense key)}.
  """
  def pad_last(a, size):
    extra = size - a.shape[-1]
    return a if extra == 0 else xp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, extra)])

  def cat(parts, axis):
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=axis)

  us = []
  for h, r_total, bands in plan.heights:
    rows = []
    for _, slots in bands:
      parts = [decoded[gi][0][k] for gi, k, _ in slots]
      band = cat(parts, 1) if parts else xp.zeros((h, 0), dtype)
      rows.append(pad_last(band.astype(dtype), r_total))
    us.append(xp.stack(rows))
  vs = tuple(xp.stack([pad_last(decoded[gi][1][k].astype(dtype), r)
                       for *_, gi, k, _ in tiles]) for _, r, tiles in plan.lowrank)
  ds = tuple(xp.stack([decoded[gi][0][k].astype(dtype) for _, gi, k in tiles])
             for _, _, tiles in plan.dense)
  return {"u": tuple(us), "v": vs, "d": ds}


def apply(plan: Plan, stacked: dict, x: jax.Array) -> jax.Array:
  """x @ W with the plan's batched dots (see the module docstring).

  Args:
    plan: the leaf's Plan.
    stacked: `stack_factors` output (jax or numpy arrays) in x's dtype.
    x: (..., in) float activations.

  Returns:
    (..., out) in x's dtype.
  """
  n = plan.shape[1]
  last = x.ndim - 1
  take = lambda r0, h: jax.lax.slice_in_dim(x, r0, r0 + h, axis=last)
  stage1 = []
  for (h, _, bands), u in zip(plan.heights, stacked["u"]):
    xs = jnp.stack([take(r0, h) for r0, _ in bands])  # (bands, ..., h)
    stage1.append(jnp.einsum("b...h,bhr->b...r", xs, u))
  outputs = ([], [])
  for (_, r, tiles), v in zip(plan.lowrank, stacked["v"]):
    parts = []
    for hi, bi, off, _, _, rank in tiles:
      t = jax.lax.slice_in_dim(stage1[hi][bi], off, off + rank, axis=last)
      parts.append(t if rank == r else jnp.pad(t, [(0, 0)] * last + [(0, r - rank)]))
    outputs[0].append(jnp.einsum("g...r,gwr->g...w", jnp.stack(parts), v))
  for (h, _, tiles), d in zip(plan.dense, stacked["d"]):
    xs = jnp.stack([take(r0, h) for r0, _, _ in tiles])
    outputs[1].append(jnp.einsum("g...h,ghw->g...w", xs, d))
  zeros = lambda width: jnp.zeros(x.shape[:-1] + (width,), x.dtype)
  out = None
  for pieces in plan.assembly:
    parts, pos = [], 0
    for c0, w, kind, key, j in pieces:
      if c0 > pos:
        parts.append(zeros(c0 - pos))
      parts.append(outputs[kind][key][j])
      pos = c0 + w
    if pos < n:
      parts.append(zeros(n - pos))
    band = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)
    out = band if out is None else out + band
  return zeros(n) if out is None else out


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
  """Static description of the column-segment matmul of one leaf (hashable).

  Attributes:
    shape: dense (in, out).
    bands: per band with stored tiles, (row0, h, slots) with slots = ((group index, tile
      index, kind, width): kind 0 low-rank (width = rank), 1 dense (width = tile width)).
    segments: per output column segment [a, b), (a, b, lowrank, dense) with lowrank =
      ((band index, offset, rank, group index, tile index, row offset in v), ...) and dense =
      ((band index, offset),): the stage-1 columns that feed the segment.
  """

  shape: tuple
  bands: tuple
  segments: tuple


@functools.lru_cache(maxsize=4096)
def _segment_plan_cached(shape: tuple, bands: tuple) -> SegmentPlan:
  n = shape[1]
  cuts = {0, n}
  plan_bands, placed = [], []  # placed: (band index, c0, w, offset, kind, rank, gi, k)
  for r0, h, tiles in bands:
    slots, off = [], 0
    for c0, w, gi, k, rank in tiles:
      width = w if rank is None else rank
      slots.append((gi, k, 1 if rank is None else 0, width))
      placed.append((len(plan_bands), c0, w, off, rank, gi, k))
      cuts.update((c0, c0 + w))
      off += width
    plan_bands.append((r0, h, tuple(slots)))
  edges = sorted(cuts)
  segments = []
  for a, b in zip(edges[:-1], edges[1:]):
    lowrank, dense = [], []
    for bi, c0, w, off, rank, gi, k in placed:
      if c0 <= a and b <= c0 + w:
        if rank is None:
          dense.append((bi, off + a - c0))
        else:
          lowrank.append((bi, off, rank, gi, k, a - c0))
    segments.append((a, b, tuple(lowrank), tuple(dense)))
  return SegmentPlan(tuple(shape), tuple(plan_bands), tuple(segments))


def segment_plan_for(shape: tuple, bands: Optional[tuple]) -> Optional[SegmentPlan]:
  """The column-segment plan of a band-structured leaf (cached), or None.

  Args:
    shape: dense (in, out).
    bands: `leaves.band_plan(shape, groups)`.

  Returns:
    The SegmentPlan, or None when `bands` is None.
  """
  return None if bands is None else _segment_plan_cached(tuple(shape), bands)


def stack_segment_factors(plan: SegmentPlan, decoded: list, xp=jnp, dtype=jnp.float32) -> dict:
  """Per band U_b (h, sum of slot widths) and per segment V_s (K_s, b - a).

  Args:
    plan: the leaf's SegmentPlan.
    decoded: per group (u, v) or (blocks, None), arrays of module xp.
    xp: jnp (inside jit, differentiable) or np (host).
    dtype: compute dtype.

  Returns:
    {'u': (U_b per band), 'v': (V_s per segment, None where the segment has no low-rank
    contribution)}.
  """
  cat = lambda parts, axis: parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=axis)
  us = tuple(cat([decoded[gi][0][k].astype(dtype) for gi, k, _, _ in slots], 1)
             for _, _, slots in plan.bands)
  vs = []
  for a, b, lowrank, _ in plan.segments:
    parts = [decoded[gi][1][k][row:row + b - a].T.astype(dtype)
             for _, _, _, gi, k, row in lowrank]
    vs.append(cat(parts, 0) if parts else None)
  return {"u": us, "v": tuple(vs)}


def apply_segments(plan: SegmentPlan, stacked: dict, x: jax.Array) -> jax.Array:
  """x @ W: one dot per band, then one dot per output column segment, concatenated.

  Each output segment is written once by a dot whose contraction runs over every band's
  rank slots that cover it (long contractions run near peak on CPU; per-tile dots with a
  contraction of one tile's rank did not), and no band outputs are summed.

  Args:
    plan: the leaf's SegmentPlan.
    stacked: `stack_segment_factors` output in x's dtype.
    x: (..., in) float activations.

  Returns:
    (..., out) in x's dtype.
  """
  last = x.ndim - 1
  t = [jax.lax.slice_in_dim(x, r0, r0 + h, axis=last) @ u
       for (r0, h, _), u in zip(plan.bands, stacked["u"])]
  cols = lambda bi, start, width: jax.lax.slice_in_dim(t[bi], start, start + width, axis=last)
  pieces = []
  for (a, b, lowrank, dense), v in zip(plan.segments, stacked["v"]):
    y = None
    if lowrank:
      parts = [cols(bi, off, rank) for bi, off, rank, *_ in lowrank]
      y = (parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)) @ v
    for bi, off in dense:
      y = cols(bi, off, b - a) if y is None else y + cols(bi, off, b - a)
    pieces.append(jnp.zeros(x.shape[:-1] + (b - a,), x.dtype) if y is None else y)
  return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
