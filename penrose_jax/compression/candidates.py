"""Per-matrix storage candidates of the bytes allocator, as data: 'gptq:int4', 'lowrank0.8:int8'.

Grammar of one candidate (`compression.bytes_candidates` items):

  METHOD ':' QUANT [ '+r' RANK ]

  METHOD  'rtn' | 'gptq' (the dense kernel rounded in groups of `group_size` input rows;
          GPTQ with the layer's input Gram as Hessian) | 'lowrank<ratio>' (one whitened SVD
          of the whole matrix, tiling 'single', truncated to <ratio> of its numbers, ratio in
          (0, 1); `whiten`, `damping`, `min_rank`, `svd_method` as configured)
  QUANT   'int8' | 'int4' | 'int3' (lowrank also 'none': float32 factors)
  +rRANK  rtn / gptq only: a whitened rank-RANK int8 correction of the rounding error
          (compression.error_correction)

Every candidate is built by the same function as the streaming compress (`build`), so its
stored bytes are the leaf's own `nbytes()`. The bytes of a candidate depend only on the
matrix shape (quantized dense: values + scales; correction: two int8 factors; lowrank with
one tile: the rank is fixed by the ratio since a single tile never jumps to dense below ratio
1), so `nbytes` builds it on a seeded random matrix of that shape and caches the number;
tests check it against the leaves built from real matrices.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from penrose_jax.compression import error_correction, gptq, rank_allocation, rank_blocks
from penrose_jax.compression.leaves import rtn_quantize_dense
from penrose_jax.compression.quantization import BITS
from penrose_jax.compression.tiling import make_tiling

# The default menu (bytes_candidates = ()): GPTQ int3 / int4 / int8 and int3 with a rank-16
# correction; on SmolLM2-135M (group 64) 10.2 / 13.3 / 25.8 / ~11.3 % of the float32 bytes.
DEFAULT_CANDIDATES = ("gptq:int3", "gptq:int3+r16", "gptq:int4", "gptq:int8")
_PATTERN = re.compile(r"^(rtn|gptq|lowrank(?P<ratio>[0-9]*\.?[0-9]+))"
                      r":(?P<quant>none|int8|int4|int3)(\+r(?P<rank>[0-9]+))?$")
FIELD = "config.bytes_candidates"


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One storage choice for a matrix.

  Attributes:
    method: 'rtn' | 'gptq' | 'lowrank'.
    quantize: 'int8' | 'int4' | 'int3' ('none' for lowrank float32 factors).
    ratio: lowrank: stored / dense numbers of the truncation (1.0 for rtn / gptq).
    correction_rank: rtn / gptq: rank of the int8 correction of the rounding error (0 = none).
  """

  method: str
  quantize: str
  ratio: float = 1.0
  correction_rank: int = 0

  @property
  def key(self) -> str:
    """The canonical text ('gptq:int3+r16', 'lowrank0.8:int8')."""
    head = f"lowrank{self.ratio:g}" if self.method == "lowrank" else self.method
    tail = f"+r{self.correction_rank}" if self.correction_rank else ""
    return f"{head}:{self.quantize}{tail}"

  def needs_gram(self, whiten: bool) -> bool:
    """Whether building it needs the matrix's input Gram."""
    return (self.method == "gptq" or self.correction_rank > 0
            or (self.method == "lowrank" and whiten))


def parse(text: Any) -> Candidate:
  """One candidate from its text (see the module docstring).

  Args:
    text: e.g. 'gptq:int3+r16'.

  Returns:
    The Candidate.

  Raises:
    ValueError: naming config.bytes_candidates, the item and the expected form.
  """
  expected = ("expected METHOD:QUANT[+rRANK] with METHOD 'rtn' | 'gptq' | 'lowrank<ratio in "
              "(0, 1)>' and QUANT 'int8' | 'int4' | 'int3' (lowrank also 'none'), e.g. "
              "'gptq:int4', 'gptq:int3+r16', 'lowrank0.8:int8'")
  match = _PATTERN.match(str(text).strip()) if isinstance(text, str) else None
  if match is None:
    raise ValueError(f"{FIELD} item {text!r}: {expected}")
  quant, rank = match.group("quant"), int(match.group("rank") or 0)
  if match.group("ratio") is not None:
    ratio = float(match.group("ratio"))
    if not 0.0 < ratio < 1.0:
      raise ValueError(f"{FIELD} item {text!r}: lowrank ratio {ratio:g} must be in (0, 1); "
                       f"{expected}")
    if rank:
      raise ValueError(f"{FIELD} item {text!r}: '+r' corrects rounding errors of rtn / gptq, "
                       f"not lowrank; {expected}")
    return Candidate("lowrank", quant, ratio)
  if quant == "none":
    raise ValueError(f"{FIELD} item {text!r}: {match.group(1)} needs QUANT 'int8' | 'int4' | "
                     f"'int3'; {expected}")
  if match.group(4) is not None and rank < 1:
    raise ValueError(f"{FIELD} item {text!r}: correction rank must be >= 1; {expected}")
  return Candidate(match.group(1), quant, 1.0, rank)


def parse_all(items: Optional[Sequence[Any]]) -> tuple[Candidate, ...]:
  """The candidate menu of a config (() = DEFAULT_CANDIDATES), duplicates refused.

  Args:
    items: config.bytes_candidates (a sequence of strings, or one comma-separated string).

  Returns:
    Candidates in the given order.
  """
  if isinstance(items, str):
    items = [part for part in items.split(",") if part.strip()]
  out = tuple(parse(item) for item in (tuple(items or ()) or DEFAULT_CANDIDATES))
  keys = [c.key for c in out]
  duplicates = sorted({k for k in keys if keys.count(k) > 1})
  if duplicates:
    raise ValueError(f"{FIELD}={list(items)!r} lists {duplicates} more than once")
  return out


def build_all(w, candidates: Sequence[Candidate], gram, cfg) -> Iterable[tuple[Candidate, Any,
                                                                                 dict]]:
  """The leaf of every candidate for one kernel, sharing work between them.

  GPTQ / RTN leaves of one bit width are built once and reused by their corrections; the
  whitened SVD is computed once for all lowrank ratios.

  Args:
    w: (in, out) float32 kernel.
    candidates: the candidates.
    gram: (in, in) input Gram (needed by gptq, corrections and whitened lowrank), or None.
    cfg: CompressionConfig (group_size, gptq_*, whiten, damping, min_rank, svd_method).

  Yields:
    (candidate, leaf, info) in the order given; info holds GPTQ's damping / dead inputs, a lowrank
    candidate's rank.
  """
  w = np.asarray(w, np.float32)
  base: dict[tuple, tuple] = {}
  svds = None  # the whitened SVD, computed by the first lowrank candidate
  for cand in candidates:
    if cand.needs_gram(cfg.whiten) and gram is None:
      raise ValueError(f"candidate {cand.key!r} needs the kernel's input Gram")
    if cand.method == "lowrank":
      m, n = w.shape
      tiling = make_tiling("single", m, n, 1)
      if svds is None:
        svds = rank_blocks.tile_svds(
            w, tiling, gram if cfg.whiten else None, cfg.damping, cfg.svd_method)[0]
      spectra = [rank_blocks.TileSpectrum(t[2], t[3], sv.s, 1.0, (), sv.tail_energy)
                 for t, sv in zip(tiling.tiles, svds)]
      ranks = rank_allocation.allocate_ranks(
          spectra, rank_allocation.factor_budget(m * n, cand.ratio, tiling.num_tiles),
          min_rank=cfg.min_rank)
      from penrose_jax.compression.transform import build_leaf  # transform imports this module
      leaf = build_leaf(w, tiling, ranks, gram if cfg.whiten else None, cfg.damping,
                        quantize=cand.quantize, group_size=cfg.group_size, svds=svds)
      yield cand, leaf, {"rank": int(ranks[0])}
      continue
    bits = BITS[cand.quantize]
    if (cand.method, bits) not in base:
      if cand.method == "rtn":
        base[(cand.method, bits)] = (rtn_quantize_dense(w, bits, cfg.group_size), {})
      else:
        base[(cand.method, bits)] = gptq.gptq_quantize(w, gram,
                                                       gptq.settings_from_config(cfg, bits))
    leaf, info = base[(cand.method, bits)]
    if cand.correction_rank:
      leaf = error_correction.correct(leaf, w, gram, cand.correction_rank, cfg.damping,
                                      group_size=cfg.group_size)
    yield cand, leaf, dict(info)


def build(w, cand: Candidate, gram, cfg) -> tuple[Any, dict]:
  """The leaf of one candidate for one kernel (what the streaming compress stores).

  Args:
    w: (in, out) kernel.
    cand: the candidate.
    gram: its input Gram (or None when the candidate needs none).
    cfg: CompressionConfig.

  Returns:
    (leaf, info).
  """
  _, leaf, info = next(iter(build_all(w, [cand], gram, cfg)))
  return leaf, info


@functools.lru_cache(maxsize=None)
def _nbytes(shape: tuple[int, int], key: str, group_size: int, min_rank: int,
            svd_method: str) -> int:
  cand = parse(key)
  rng = np.random.default_rng(0)
  w = rng.standard_normal(shape).astype(np.float32)
  if cand.method == "gptq":  # gptq_quantize stores the same QuantizedDense as RTN (tested)
    cand = dataclasses.replace(cand, method="rtn")
  cfg = _ShapeConfig(group_size=group_size, min_rank=min_rank, svd_method=svd_method)
  leaf, _ = build(w, cand, np.eye(shape[0]), cfg)
  return int(leaf.nbytes())


@dataclasses.dataclass(frozen=True)
class _ShapeConfig:
  """The CompressionConfig fields that decide a candidate's stored size."""

  group_size: int = 64
  min_rank: int = 0
  svd_method: str = "exact"
  whiten: bool = False
  damping: float = 1e-4


def nbytes(shape: Sequence[int], cand: Candidate, cfg) -> int:
  """Stored bytes of a candidate for a kernel of this shape (the built leaf's `nbytes()`).

  Args:
    shape: (in, out).
    cand: the candidate.
    cfg: CompressionConfig (group_size, min_rank, svd_method matter).

  Returns:
    Bytes.
  """
  return _nbytes(tuple(int(s) for s in shape), cand.key, int(cfg.group_size),
                 int(cfg.min_rank), str(cfg.svd_method))
