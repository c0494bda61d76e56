"""GPTQ (Frantar et al., arXiv 2210.17323): group-wise int quantization with error feedback.

For a kernel W (in, out) applied as y = x W, GPTQ quantizes the input rows of W one at a time
and spreads each row's rounding error over the rows not yet quantized, using the inverse of the
calibration Hessian H = X^T X (the same input Gram the whitening collects). With the upper
Cholesky factor U of H^-1 (H^-1 = U^T U), quantizing row i with error e_i = (w_i - q_i) / U_ii
and updating the later rows by -U[i, i+1:]^T e_i is the optimal (OBS) compensation for the
output error ||X (W - Q)||^2. Rows are handled in blocks: within a block every update is applied
at once, later blocks get one lazy matrix update per block (the paper's "lazy batch" trick).

Extras of this implementation, each a named option:
  damping       H + damping * mean(diag H) * I (the paper's 1 %), raised x10 when H^-1 does
                not factor; inputs that never fire (zero diagonal) get H_ii = 1 and W_i = 0.
  act_order     rows in order of decreasing H_ii (the most used inputs first, while the most
                later rows remain to absorb their error). The group scales are then computed up
                front on the original matrix ("static groups"), so the stored groups stay
                consecutive input rows and the leaf is the RTN path's `QuantizedDense`.
  clip search   each group's scale is the one of a shrink grid (1.0, 0.95, ... of max|w|)
                minimising that group's H-weighted rounding error sum_j d_j^T H_gg d_j.
The result is stored exactly like RTN (int8 container, float16 scale per 64 input rows and
output column), so bytes accounting, the forward pass and checkpoints need nothing new.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np
import scipy.linalg

from penrose_jax.compression.leaves import QuantizedDense
from penrose_jax.compression.quantization import QMAX, QuantizedArray

DEFAULT_CLIP_GRID = tuple(round(1.0 - 0.05 * i, 2) for i in range(9))  # 1.0 ... 0.6
DEFAULT_BLOCK_SIZE = 128
DEFAULT_DAMPING = 0.01  # the paper's 1 % of the mean Hessian diagonal


@dataclasses.dataclass(frozen=True)
class GPTQSettings:
  """GPTQ options (see the module docstring).

  Attributes:
    bits: stored bits per weight (3, 4 or 8).
    group_size: input rows sharing one scale per output column.
    damping: relative ridge on H (fraction of mean(diag H)).
    act_order: quantize rows in order of decreasing H_ii (static groups).
    clip_grid: shrink factors of max|w| tried for each group's scale; (1.0,) = no search.
    block_size: rows per lazy-update block (rounded up to a multiple of group_size).
  """

  bits: int = 4
  group_size: int = 64
  damping: float = DEFAULT_DAMPING
  act_order: bool = True
  clip_grid: tuple = DEFAULT_CLIP_GRID
  block_size: int = DEFAULT_BLOCK_SIZE

  def __post_init__(self):
    if self.bits not in QMAX:
      raise ValueError(f"GPTQ bits={self.bits!r}; expected one of {sorted(QMAX)}")
    if not isinstance(self.group_size, int) or self.group_size < 1:
      raise ValueError(f"GPTQ group_size={self.group_size!r} must be an int >= 1")
    if self.damping < 0:
      raise ValueError(f"GPTQ damping={self.damping!r} must be >= 0")
    if not self.clip_grid or any(not 0.0 < c <= 1.0 for c in self.clip_grid):
      raise ValueError(f"GPTQ clip_grid={self.clip_grid!r}: shrink factors must be in (0, 1]")
    if self.block_size < 1:
      raise ValueError(f"GPTQ block_size={self.block_size!r} must be >= 1")


def _round_scale(scale: np.ndarray) -> np.ndarray:
  """Scales as stored (float16), back in float64, with 0 where the group is all zero."""
  return scale.astype(np.float16).astype(np.float64)


def _quantize_rows(rows: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
  safe = np.where(scale > 0, scale, 1.0)
  return np.clip(np.rint(rows / safe), -qmax - 1, qmax)


def clipped_group_scale(rows: np.ndarray, h_block: np.ndarray, qmax: int,
                        clip_grid=DEFAULT_CLIP_GRID) -> np.ndarray:
  """Per output column, the grid scale minimising the group's H-weighted rounding error.

  Args:
    rows: (g, out) weights of one group of input rows.
    h_block: (g, g) the Hessian block of those rows.
    qmax: largest positive integer level (7 for 4 bits).
    clip_grid: shrink factors of max|w| to try.

  Returns:
    (out,) float64 scales, already rounded to float16 as stored.
  """
  amax = np.max(np.abs(rows), axis=0)
  best_scale = _round_scale(amax / qmax)
  best_err = np.full(rows.shape[1], np.inf)
  for shrink in clip_grid:
    scale = _round_scale(shrink * amax / qmax)
    diff = rows - _quantize_rows(rows, scale, qmax) * scale
    err = np.einsum("gj,gj->j", diff, h_block @ diff)
    better = err < best_err
    best_err = np.where(better, err, best_err)
    best_scale = np.where(better, scale, best_scale)
  return best_scale


def _inverse_hessian_factor(h: np.ndarray, damping: float) -> tuple[np.ndarray, float]:
  """Upper U with (H + d mean(diag H) I)^-1 = U^T U, raising d x10 until it factors.

  With J the index reversal, the lower Cholesky J H J = L L^T gives H = R R^T with R = J L J
  upper, so H^-1 = (R^-1)^T R^-1 and U = R^-1 = J L^-1 J: one Cholesky and one triangular
  inverse instead of inverting H and factoring the inverse (4x fewer flops).
  """
  mean_diag = float(np.mean(np.diag(h))) or 1.0
  d = damping
  eye = np.eye(h.shape[0])
  while True:
    try:
      lower = np.linalg.cholesky((h + d * mean_diag * eye)[::-1, ::-1])
      inv, info = scipy.linalg.lapack.dtrtri(lower, lower=1)
      if info == 0 and np.all(np.isfinite(inv)):
        return np.ascontiguousarray(inv[::-1, ::-1]), d
    except np.linalg.LinAlgError:
      pass
    d = max(d * 10.0, 1e-6)
    if d > 1e3:
      raise ValueError(f"GPTQ: the Hessian does not factor even with relative damping {d / 10:g}")


def gptq_quantize(w, gram, settings: GPTQSettings = GPTQSettings()
                  ) -> tuple[QuantizedDense, dict]:
  """GPTQ of one (in, out) kernel on its input Gram.

  Args:
    w: (in, out) kernel.
    gram: (in, in) input Gram X^T X (float64 preferred), e.g. `whitening.gram_from_activations`.
    settings: GPTQ options.

  Returns:
    (QuantizedDense leaf grouped along the input axis like `rtn_quantize_dense`,
    info dict with 'damping' (relative ridge used) and 'dead_inputs' (zero-diagonal rows)).
  """
  w = np.array(w, np.float64)
  if w.ndim != 2:
    raise ValueError(f"GPTQ expects a 2-D (in, out) kernel, got shape {w.shape}")
  n, out = w.shape
  h = np.array(gram, np.float64)
  if h.shape != (n, n):
    raise ValueError(f"GPTQ: Gram of shape {h.shape} does not match kernel shape {w.shape} "
                     f"(expected ({n}, {n}))")
  if not np.all(np.isfinite(h)):
    raise ValueError("GPTQ: the Gram contains non-finite values")
  h = 0.5 * (h + h.T)
  qmax = QMAX[settings.bits]
  gs = min(settings.group_size, max(n, 1))
  n_groups = -(-n // gs)
  dead = np.diag(h) <= 0
  h[dead, dead] = 1.0
  w[dead, :] = 0.0
  group_of_row = np.arange(n) // gs
  scales = np.zeros((n_groups, out))
  if settings.act_order:
    # Static groups: scales from the original rows, so the stored groups stay consecutive.
    for g in range(n_groups):
      a, b = g * gs, min((g + 1) * gs, n)
      scales[g] = clipped_group_scale(w[a:b], h[a:b, a:b], qmax, settings.clip_grid)
    perm = np.argsort(-np.diag(h), kind="stable")
  else:
    perm = np.arange(n)
  w, h, group_of_row = w[perm], h[perm][:, perm], group_of_row[perm]
  upper, used_damping = _inverse_hessian_factor(h, settings.damping)
  block = gs * max(1, -(-settings.block_size // gs))
  q_rows = np.zeros((n, out), np.int8)
  for i1 in range(0, n, block):
    i2 = min(i1 + block, n)
    errors = np.zeros((i2 - i1, out))
    for i in range(i1, i2):
      if not settings.act_order and i % gs == 0:
        # Scale from the rows as error feedback has left them (all inside this block).
        b = min(i + gs, n)
        scales[i // gs] = clipped_group_scale(w[i:b], h[i:b, i:b], qmax, settings.clip_grid)
      scale = scales[group_of_row[i]]
      q = _quantize_rows(w[i], scale, qmax)
      q_rows[i] = q.astype(np.int8)
      err = (w[i] - q * scale) / upper[i, i]
      w[i + 1:i2] -= np.outer(upper[i, i + 1:i2], err)
      errors[i - i1] = err
    w[i2:] -= upper[i1:i2, i2:].T @ errors
  q_orig = np.zeros((n_groups * gs, out), np.int8)
  q_orig[perm] = q_rows
  q_arr = np.ascontiguousarray(q_orig.T.reshape(out, n_groups, gs))
  scale_arr = np.ascontiguousarray(scales.T[:, :, None].astype(np.float16))
  leaf = QuantizedDense(QuantizedArray(jax.device_put(q_arr), jax.device_put(scale_arr), (n, out),
                                       0, settings.bits), (n, out))
  return leaf, {"damping": used_damping, "dead_inputs": int(np.sum(dead))}


def output_error(w, w_hat, gram) -> float:
  """H-weighted squared error tr((W - W_hat)^T H (W - W_hat)) = ||X (W - W_hat)||_F^2.

  Args:
    w: (in, out) reference kernel.
    w_hat: (in, out) approximation.
    gram: (in, in) input Gram.

  Returns:
    The error (float).
  """
  diff = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.einsum("ij,ij->", diff, np.asarray(gram, np.float64) @ diff))


def settings_from_config(cfg, bits: int, damping: Optional[float] = None) -> GPTQSettings:
  """GPTQSettings from a CompressionConfig's gptq_* fields.

  Args:
    cfg: CompressionConfig.
    bits: stored bits (from cfg.quantize).
    damping: override of cfg.gptq_damping.

  Returns:
    The settings.
  """
  if damping is None:
    damping = cfg.gptq_damping or DEFAULT_DAMPING
  return GPTQSettings(bits=bits, group_size=cfg.group_size, damping=damping,
                      act_order=not cfg.gptq_natural_order,
                      clip_grid=tuple(cfg.gptq_clip_grid) or DEFAULT_CLIP_GRID)
