"""Low-rank correction of a quantized kernel's rounding error (QERA / LQER style).

For W (in, out) rounded to Q, the error E = W - Q is approximated at rank r in the whitened
basis of the layer's inputs, as the low-rank path factors W itself (compression/whitening.py):
with G + d I = L L^T, the truncated SVD of L^T E minimises ||X (E - E_r)||_F, and
E_r = L^-T U_r S_r V_r^T = u v^T with u = L^-T U_r sqrt(S_r), v = V_r sqrt(S_r). The factors
are stored in int8 (groups along their long axis), so each rank costs about (in + out) bytes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from penrose_jax.compression import whitening
from penrose_jax.compression.leaves import CorrectedQuantizedDense
from penrose_jax.compression.quantization import maybe_quantize


def correct(leaf, w, gram, rank: int, damping: float = 1e-4, quantize: str = "int8",
            group_size: int = 64) -> CorrectedQuantizedDense:
  """Adds a whitened rank-`rank` correction of W - Q to a quantized leaf.

  Args:
    leaf: `QuantizedDense` (RTN or GPTQ) of w.
    w: (in, out) original kernel.
    gram: (in, in) input Gram of the kernel.
    rank: correction rank (>= 1, at most min(in, out)).
    damping: relative Cholesky damping of the whitening.
    quantize: storage of the factors ('none' | 'int8' | 'int4' | 'int3').
    group_size: quantization group size of the factors.

  Returns:
    The CorrectedQuantizedDense leaf.
  """
  w = np.asarray(w, np.float64)
  n, out = w.shape
  if not isinstance(rank, int) or not 1 <= rank <= min(n, out):
    raise ValueError(f"correction rank={rank!r} must be an int in [1, {min(n, out)}] for a "
                     f"kernel of shape {w.shape}")
  error = w - np.asarray(leaf.materialize_host(), np.float64)
  chol, _ = whitening.damped_cholesky(np.asarray(gram, np.float64), damping)
  left, s, right_t = np.linalg.svd(chol.T @ error, full_matrices=False)
  root = np.sqrt(s[:rank])
  u = scipy.linalg.solve_triangular(chol.T, left[:, :rank] * root, lower=False)
  v = right_t[:rank].T * root
  return CorrectedQuantizedDense(leaf.weight, maybe_quantize(u, quantize, group_size, axis=0),
                                 maybe_quantize(v, quantize, group_size, axis=0),
                                 tuple(int(x) for x in w.shape))
