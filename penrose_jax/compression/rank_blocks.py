"""Per-tile truncated SVD (optionally in an activation-whitened basis).

Storage convention: a rank-r tile B (h, w) is stored as u (h, r) = U_r sqrt(s_r) and
v (w, r) = V_r sqrt(s_r), so B_hat = u v^T. The balanced split keeps both factors at the same
dynamic range, which matters for group-wise quantization of the factors. With whitening,
u = L^{-T} U_r sqrt(s_r) where U_r, s_r, V_r come from the SVD of L^T B.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import scipy.linalg

from penrose_jax.compression import whitening
from penrose_jax.compression.tiling import Tiling


@dataclasses.dataclass(frozen=True, eq=False)
class TileSpectrum:
  """Singular values of one tile (whitened when a Gram was given); all an allocator needs.

  Attributes:
    h: tile rows.
    w: tile cols.
    sigma: descending singular values (float64).
    weight: multiplier on squared-error reductions (e.g. per-matrix importance).
    key: free identification, e.g. (matrix name, tile index).
  """

  h: int
  w: int
  sigma: np.ndarray
  weight: float = 1.0
  key: tuple = ()


@dataclasses.dataclass(frozen=True, eq=False)
class TileSVD:
  """Full SVD of one (possibly whitened) tile plus what is needed to un-whiten.

  Attributes:
    u: (h, p) left singular vectors of the whitened tile L^T B (or B).
    s: (p,) singular values.
    vt: (p, w) right singular vectors.
    chol: band Cholesky L (h, h) or None when not whitened.
  """

  u: np.ndarray
  s: np.ndarray
  vt: np.ndarray
  chol: Optional[np.ndarray] = None


def tile_blocks(w: np.ndarray, tiling: Tiling) -> list[np.ndarray]:
  """Returns the float64 blocks of w in tiling order."""
  if tuple(w.shape) != (tiling.m, tiling.n):
    raise ValueError(f"matrix shape {tuple(w.shape)} does not match tiling ({tiling.m}, {tiling.n})")
  w = np.asarray(w, np.float64)
  return [w[r0:r0 + h, c0:c0 + ww] for r0, c0, h, ww, _ in tiling.tiles]


def tile_svds(w, tiling: Tiling, gram: Optional[np.ndarray] = None,
              damping: float = 1e-2) -> tuple[list[TileSVD], list[float]]:
  """SVD of every tile, in the band-whitened basis when gram is given.

  Args:
    w: (in, out) kernel.
    tiling: its tiling.
    gram: optional (in, in) activation Gram of the layer input.
    damping: relative Cholesky damping.

  Returns:
    (per-tile TileSVD list, damping used per band ([] without gram)).
  """
  w = np.asarray(w, np.float64)
  blocks = tile_blocks(w, tiling)
  chols, damps = {}, []
  if gram is not None:
    for (a, b), (chol, d) in zip(zip(tiling.row_cuts[:-1], tiling.row_cuts[1:]),
                                 whitening.band_choleskys(np.asarray(gram), tiling.row_cuts, damping)):
      chols[a] = chol
      damps.append(d)
  out = []
  for (r0, _, _, _, _), block in zip(tiling.tiles, blocks):
    chol = chols.get(r0)
    target = block if chol is None else chol.T @ block
    u, s, vt = np.linalg.svd(target, full_matrices=False)
    out.append(TileSVD(u, s, vt, chol))
  return out, damps


def tile_spectra_for_matrix(w, tiling: Tiling, gram: Optional[np.ndarray] = None,
                            damping: float = 1e-2, name: str = "",
                            weight: float = 1.0) -> list[TileSpectrum]:
  """Singular values of every tile (for streaming allocation: spectra now, ranks later).

  Args:
    w: (in, out) kernel.
    tiling: its tiling.
    gram: optional activation Gram for whitening.
    damping: relative Cholesky damping.
    name: matrix name stored in each spectrum's key.
    weight: error weight of this matrix in a global allocation.

  Returns:
    One TileSpectrum per tile, in tiling order.
  """
  svds, _ = tile_svds(w, tiling, gram, damping)
  return [TileSpectrum(t[2], t[3], sv.s.copy(), weight, (name, i))
          for i, (t, sv) in enumerate(zip(tiling.tiles, svds))]


def truncate_tile(svd: TileSVD, rank: int) -> tuple[np.ndarray, np.ndarray]:
  """Rank-r balanced factors (u (h, r), v (w, r)) of a tile, un-whitened.

  Args:
    svd: the tile's TileSVD.
    rank: kept rank (0 <= rank <= len(s)).

  Returns:
    (u, v) float64 with B_hat = u @ v.T.
  """
  r = int(min(max(rank, 0), svd.s.shape[0]))
  root = np.sqrt(svd.s[:r])
  u = svd.u[:, :r] * root
  v = svd.vt[:r].T * root
  if svd.chol is not None and r:
    # Un-whiten: B_hat = L^{-T} (U s V^T); solve instead of inverting for stability.
    u = scipy.linalg.solve_triangular(svd.chol.T, u, lower=False)
  return u, v
