"""Activation whitening (SVD-LLM style) for rank blocks.

For a kernel W (in, out) applied as y = x W, the quantity that matters is the output error
||X (W - W_hat)||_F over calibration inputs X (N, in), not ||W - W_hat||_F. With the Gram
G = X^T X = L L^T (Cholesky, L lower), ||X D||_F = ||L^T D||_F, so truncating the SVD of L^T W
is optimal for the output error and W_hat = L^{-T} (truncated L^T W).

Tiles cover a row range r0:r1 (input dims) of W. We use the Cholesky of the band's own Gram
block G[r0:r1, r0:r1] = X[:, r0:r1]^T X[:, r0:r1]: that is exact for the band's own
contribution X[:, r0:r1] D_band, but ignores the cross terms between bands (X bands are not
orthogonal), which is the price of independent per-tile factoring.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

MAX_DAMPING = 1e3  # relative to mean(diag); beyond this the Gram is ~ a multiple of I anyway.


def gram_from_activations(x, gram: Optional[np.ndarray] = None) -> np.ndarray:
  """Accumulates X^T X in float64 so a streaming job can sum Grams over batches.

  Args:
    x: activations (..., in) (numpy or jax array); leading axes are flattened.
    gram: running (in, in) float64 Gram to add to (not modified in place), or None.

  Returns:
    (in, in) float64 Gram (gram + X^T X).
  """
  x = np.asarray(x, np.float64)
  x = x.reshape(-1, x.shape[-1])
  g = x.T @ x
  if gram is not None:
    if gram.shape != g.shape:
      raise ValueError(f"gram shape {gram.shape} does not match activations width {g.shape}")
    g = g + gram
  return g


def damped_cholesky(gram: np.ndarray, damping: float = 1e-2,
                    max_damping: float = MAX_DAMPING) -> tuple[np.ndarray, float]:
  """Cholesky of G + damping * mean(diag(G)) * I, raising damping x10 until it succeeds.

  Rank-deficient Grams (N < in, duplicated or zero columns) make the plain Cholesky fail or
  be ill-conditioned; the relative ridge keeps L invertible so un-whitening is stable.

  Args:
    gram: (k, k) symmetric PSD matrix.
    damping: initial relative damping (>= 0).
    max_damping: give up (ValueError) beyond this relative damping.

  Returns:
    (L lower-triangular float64, damping actually used).
  """
  if damping < 0:
    raise ValueError(f"damping must be >= 0, got {damping}")
  g = np.asarray(gram, np.float64)
  g = 0.5 * (g + g.T)
  scale = float(np.mean(np.diag(g))) if g.size else 1.0
  if not np.isfinite(scale):
    raise ValueError("gram contains non-finite values")
  if scale <= 0.0:
    scale = 1.0  # all-zero activations: whitening degenerates to the identity metric.
  d = damping
  while True:
    try:
      chol = np.linalg.cholesky(g + d * scale * np.eye(g.shape[0]))
      if np.all(np.isfinite(chol)) and np.min(np.abs(np.diag(chol))) > 0:
        return chol, d
    except np.linalg.LinAlgError:
      pass
    d = max(d * 10.0, 1e-8)
    if d > max_damping:
      raise ValueError(f"Cholesky failed even with relative damping {d / 10:g}")


def band_choleskys(gram: np.ndarray, row_cuts, damping: float = 1e-2):
  """Damped Cholesky of each row band's own Gram block.

  Args:
    gram: (in, in) Gram of the layer input.
    row_cuts: band boundaries (0, ..., in).
    damping: relative damping.

  Returns:
    List of (L, damping_used) per band.
  """
  if gram.shape[0] != row_cuts[-1]:
    raise ValueError(f"gram of size {gram.shape[0]} does not match kernel rows {row_cuts[-1]}")
  return [damped_cholesky(gram[a:b, a:b], damping) for a, b in zip(row_cuts[:-1], row_cuts[1:])]
