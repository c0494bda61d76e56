"""Rank policies: fixed per tile shape, per-tile energy, and the global-budget greedy.

Storage rule shared with the leaves: a tile (h, w) at rank r costs r * (h + w) numbers while
r * (h + w) < h * w, otherwise it is stored dense at cost h * w (its rank is then reported as
min(h, w) and the reconstruction is exact).
"""

from __future__ import annotations

import heapq
from typing import Mapping, Optional, Sequence

import numpy as np

from penrose_jax.compression.rank_blocks import TileSpectrum
from penrose_jax.compression.tiling import Tiling


def is_dense_rank(h: int, w: int, rank: int) -> bool:
  """True when a rank-`rank` tile is cheaper (or equal) stored dense."""
  return rank * (h + w) >= h * w


def tile_cost(h: int, w: int, rank: int) -> int:
  """Stored numbers of an (h, w) tile at this rank (dense when that is cheaper)."""
  return h * w if is_dense_rank(h, w, rank) else rank * (h + w)


def canonical_rank(h: int, w: int, rank: int) -> int:
  """Clamps to [0, min(h, w)] and maps dense-equivalent ranks to min(h, w)."""
  rank = int(min(max(rank, 0), min(h, w)))
  return min(h, w) if is_dense_rank(h, w, rank) else rank


def fixed_ranks(tiling: Tiling, ranks: Mapping[int, int] | int) -> list[int]:
  """The paper's (p, q, r) dictionary: one rank per tile shape id.

  Args:
    tiling: the tiling.
    ranks: shape_id -> rank, or one int for every shape.

  Returns:
    Canonical rank per tile.
  """
  out = []
  for _, _, h, w, sid in tiling.tiles:
    if isinstance(ranks, Mapping):
      if sid not in ranks:
        raise ValueError(f"fixed_ranks has no rank for tile shape id {sid} ({h}x{w}); "
                         f"shapes present: {tiling.shapes}")
      r = ranks[sid]
    else:
      r = ranks
    out.append(canonical_rank(h, w, int(r)))
  return out


def energy_ranks(spectra: Sequence[TileSpectrum], energy: float) -> list[int]:
  """Smallest rank per tile keeping `energy` of its squared singular values.

  Args:
    spectra: per-tile spectra.
    energy: fraction in (0, 1].

  Returns:
    Canonical rank per tile.
  """
  if not 0.0 < energy <= 1.0:
    raise ValueError(f"energy must be in (0, 1], got {energy}")
  out = []
  for sp in spectra:
    e = np.cumsum(np.asarray(sp.sigma, np.float64) ** 2)
    total = (e[-1] if e.size else 0.0) + sp.tail_energy
    if e.size == 0 or total <= 0:
      out.append(0)
      continue
    r = int(np.searchsorted(e, energy * total * (1 - 1e-12))) + 1
    if r > e.size:  # the listed values (randomized SVD) do not reach it: store dense
      r = min(sp.h, sp.w)
    out.append(canonical_rank(sp.h, sp.w, r))
  return out


# Every stored tile also keeps its (row0, col0) coordinates; `param_count` counts them, so the
# budget handed to the allocator leaves room for them.
COORDS_PER_TILE = 2


def factor_budget(dense_params: float, param_ratio: float, num_tiles: int) -> float:
  """Stored numbers left for factors / dense tiles once tile coordinates are paid for.

  Args:
    dense_params: dense parameter count of the matrices being allocated.
    param_ratio: target stored / dense.
    num_tiles: tiles in those matrices.

  Returns:
    The budget to pass to `allocate_ranks`. param_ratio 1.0 means "drop nothing": every tile
    is kept whole even though coordinates then make the stored count exceed dense slightly.
  """
  if param_ratio >= 1.0:
    return float("inf")
  return max(0.0, param_ratio * dense_params - COORDS_PER_TILE * num_tiles)


def allocate_ranks(spectra: Sequence[TileSpectrum], budget_params: float,
                   weights: Optional[Sequence[float]] = None, min_rank: int = 0) -> list[int]:
  """Greedy global rank allocation under a parameter budget.

  Each tile offers at each state either one more rank (gain w * sigma_r^2, cost h + w) or,
  when that is no longer cheaper than dense or when dense has the better gain per parameter,
  the jump to dense storage (gain = all remaining energy, cost = h*w - r*(h+w)). A heap over
  all tiles pops the best gain per stored parameter; options that no longer fit the remaining
  budget are dropped (the budget only shrinks, so they never fit again from that state).
  The stored total therefore ends within one tile's rank step (max h + w) of the budget,
  unless every tile went dense. Works on singular values only, so spectra may be computed
  layer by layer by a streaming job and allocated afterwards.

  Args:
    spectra: TileSpectrum per tile (whitened singular values when whitening).
    budget_params: total stored numbers allowed across all tiles.
    weights: optional per-tile multipliers (default each spectrum's .weight).
    min_rank: rank every tile gets before the greedy runs (as far as the budget allows, in
      tile order). Without a floor the greedy can zero whole matrices (SmolLM2 at 0.6:
      layers_0 v_proj went to rank 0), which no later training can revive.

  Returns:
    Canonical rank per tile (min(h, w) means stored dense).
  """
  n = len(spectra)
  ranks = [0] * n
  wts = [sp.weight for sp in spectra] if weights is None else list(weights)
  sig2 = [np.asarray(sp.sigma, np.float64) ** 2 for sp in spectra]
  # tail[r] = sum_{j>=r} sigma_j^2, including energy beyond the listed values (randomized SVD).
  tails = [np.concatenate([np.cumsum(s[::-1])[::-1], [0.0]]) + sp.tail_energy
           for s, sp in zip(sig2, spectra)]
  remaining = float(budget_params)
  dense = [False] * n
  if min_rank < 0:
    raise ValueError(f"min_rank must be >= 0, got {min_rank}")
  for i, sp in enumerate(spectra):
    floor = min(min_rank, sig2[i].size)
    if floor > 0 and not is_dense_rank(sp.h, sp.w, floor) and floor * (sp.h + sp.w) <= remaining:
      ranks[i] = floor
      remaining -= floor * (sp.h + sp.w)

  def options(i):
    sp, r = spectra[i], ranks[i]
    h, w = sp.h, sp.w
    opts = []
    if r < sig2[i].size and not is_dense_rank(h, w, r + 1):
      opts.append((wts[i] * sig2[i][r] / (h + w), h + w, "step"))
    dense_cost = h * w - r * (h + w)
    if tails[i][min(r, sig2[i].size)] > 0 or r < min(h, w):
      opts.append((wts[i] * tails[i][min(r, sig2[i].size)] / dense_cost, dense_cost, "dense"))
    return [o for o in opts if o[1] <= remaining]

  heap = []

  def push(i):
    opts = options(i)
    if opts:
      ratio, cost, kind = max(opts, key=lambda o: (o[0], o[2] == "step"))
      heapq.heappush(heap, (-ratio, i, cost, kind))

  for i in range(n):
    push(i)
  while heap:
    _, i, cost, kind = heapq.heappop(heap)
    if dense[i]:
      continue
    if cost > remaining:
      push(i)  # re-offer only the options that still fit.
      continue
    remaining -= cost
    if kind == "dense":
      dense[i] = True
      ranks[i] = min(spectra[i].h, spectra[i].w)
    else:
      ranks[i] += 1
      push(i)
  return ranks


# Budget scopes that share one budget over every matrix (ranks chosen after all spectra).
MODEL_WIDE_SCOPES = ("global", "normalized")


def matrix_weights(spectra: Mapping[str, Sequence[TileSpectrum]], scope: str
                   ) -> dict[str, float]:
  """Per-matrix multiplier of its tiles' squared singular values in the model-wide greedy.

  'global' compares raw whitened output energies, which differ by orders of magnitude across
  layers (SmolLM2 at 0.8: 123 of 210 matrices stayed dense while layers_0 v_proj got rank 1).
  'normalized' divides by the matrix's whole whitened energy, so the greedy minimizes the sum
  of *relative* output errors and every matrix competes on the same scale (the normalized
  truncation loss of SVD-LLM V2).

  Args:
    spectra: path -> TileSpectrum list.
    scope: 'global' | 'normalized'.

  Returns:
    Path -> weight.
  """
  if scope == "global":
    return {p: 1.0 for p in spectra}
  if scope != "normalized":
    raise ValueError(f"budget_scope={scope!r} has no model-wide weights; expected one of "
                     f"{MODEL_WIDE_SCOPES}")
  out = {}
  for path, tiles in spectra.items():
    energy = sum(float(np.sum(np.asarray(sp.sigma, np.float64) ** 2)) + sp.tail_energy
                 for sp in tiles)
    out[path] = 1.0 / energy if energy > 0 else 1.0
  return out


def allocation_cost(spectra: Sequence[TileSpectrum], ranks: Sequence[int]) -> int:
  """Total stored numbers for these ranks."""
  return sum(tile_cost(sp.h, sp.w, r) for sp, r in zip(spectra, ranks))


def allocation_error(spectra: Sequence[TileSpectrum], ranks: Sequence[int]) -> float:
  """Weighted squared error left (sum of dropped sigma^2; 0 for dense tiles)."""
  total = 0.0
  for sp, r in zip(spectra, ranks):
    if is_dense_rank(sp.h, sp.w, r):
      continue
    total += sp.weight * (float(np.sum(np.asarray(sp.sigma[r:], np.float64) ** 2))
                          + sp.tail_energy)
  return total
