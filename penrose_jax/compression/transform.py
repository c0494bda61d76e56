"""compress(): the pure pytree transform replacing selected kernels by compressed leaves.

Pipeline per run: (1) plan - match paths, build tilings, validate everything (so bad configs
fail before any SVD); (2) factor - per-tile SVDs (whitened with the band Grams when asked);
(3) allocate ranks (global budget over all matched matrices, per-matrix budget, fixed per
shape, or per-tile energy); (4) build leaves (+ optional spectral truncation, quantization);
(5) stats. The input tree is never mutated: every dict on the way is rebuilt.

Lower-level entry points for a streaming job: `tile_spectra_for_matrix` (rank_blocks),
`allocate_ranks` (rank_allocation) and `build_leaf` here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

import jax
import numpy as np

from penrose_jax.compression import (candidates, error_correction, gptq, rank_allocation,
                                     rank_blocks, spectral as spectral_lib)
from penrose_jax.compression.leaves import (DenseGroup, LowRankGroup, SpectralMatrix, TiledLowRank,
                                            rtn_quantize_dense)
from penrose_jax.compression.pytree_codec import StaticArray
from penrose_jax.compression.quantization import BITS, maybe_quantize
from penrose_jax.compression.tiling import TILING_KINDS, Tiling, make_tiling

DEFAULT_INCLUDE = r".*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)/kernel$"
RANK_POLICIES = ("budget", "fixed", "energy")
BUDGET_SCOPES = ("matrix", "global", "normalized", "sensitivity")
METHODS = ("tiled", "rtn", "gptq")


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
  """What to compress and how (see module docstring for the pipeline).

  Attributes:
    include: regex on '/'-joined param paths selecting kernels to compress.
    exclude: optional regex; matching paths are never compressed.
    method: 'tiled' (rank blocks), 'rtn' (plain round-to-nearest of the dense kernel, uses
      `quantize`) or 'gptq' (GPTQ with the input Grams, compression.gptq; uses `quantize`,
      `group_size` and the gptq_* fields; the same stored leaf and bytes as 'rtn').
    tiling: 'penrose' | 'grid' | 'single'.
    tiles_per_matrix: target tile count per matrix.
    tile_lengths: optional tile dictionary: penrose ((rL, rS), (cL, cS)) or grid (h, w).
    phase: penrose phase.
    rank_policy: 'budget' | 'fixed' | 'energy'.
    budget_scope: 'matrix' (each matrix keeps param_ratio: SVD-LLM's uniform split), 'global'
      (one budget over all matched matrices, greedy on raw whitened energies) or 'normalized'
      (one budget, greedy on each matrix's energies relative to its total) or 'sensitivity'
      (one ratio per matrix from measured logit-KL sensitivities and an exact knapsack;
      compression.sensitivity).
    param_ratio: stored / dense params target in (0, 1] for the budget policy.
    energy: kept squared-singular-value fraction per tile for the energy policy.
    fixed_ranks: shape_id -> rank (or one int) for the fixed policy.
    whiten: factor in the activation-whitened basis (needs grams).
    grams: path -> (in, in) activation Gram of that kernel's input.
    damping: relative Cholesky damping.
    svd_method: 'exact' or 'randomized' (per-tile SVD; see rank_blocks).
    spectral: 'none' | 'dct' | 'fft' (orthonormal Hartley).
    spectral_scope: 'factor' (1-D along factors' long axis) or 'block' (2-D per tile).
    tau: coefficient magnitude threshold (alternative to keep_energy).
    keep_energy: kept coefficient energy fraction per block.
    quantize: 'none' | 'int8' | 'int4' | 'int3' for stored values.
    group_size: quantization group size.
    quantize_overrides: ('regex=quant', ...) per-matrix bit widths for methods 'rtn' / 'gptq'
      (a llama.cpp-style mix): the first regex found in a kernel's path picks its quantize,
      other kernels use `quantize`; () = none.
    correction_rank: methods 'rtn' / 'gptq': rank of a whitened low-rank correction of each
      kernel's rounding error, stored in int8 (compression.error_correction); 0 = none.
    gptq_damping: GPTQ's relative ridge on the Hessian (fraction of its mean diagonal);
      0 = gptq.DEFAULT_DAMPING (the paper's 1 %).
    gptq_natural_order: GPTQ quantizes inputs in their stored order; False (default) =
      act-order (decreasing Hessian diagonal).
    gptq_clip_grid: shrink factors of max|w| GPTQ tries per group scale; () = the default
      grid 1.0, 0.95, ..., 0.6; (1.0,) = no clipping search.
    sensitivity_candidates: ratios each matrix may get under budget_scope 'sensitivity';
      () = sensitivity.DEFAULT_CANDIDATES.
    sensitivity_windows: calibration windows the sensitivity KL is measured on; 0 = the
      default (sensitivity.DEFAULT_WINDOWS).
    sensitivity_tiling: the tiling each matrix is truncated with when its sensitivity is
      measured; '' = `tiling`. 'single' gives a tiled model the per-matrix ratios of one SVD
      per matrix (a sweep measures that table once), so tilings differ only inside each matrix.
  """

  include: str = DEFAULT_INCLUDE
  exclude: Optional[str] = None
  method: str = "tiled"
  tiling: str = "penrose"
  tiles_per_matrix: int = 16
  tile_lengths: Any = None
  phase: float = 0.0
  rank_policy: str = "budget"
  budget_scope: str = "global"
  param_ratio: float = 0.5
  min_rank: int = 0
  energy: float = 0.9
  fixed_ranks: Any = None
  whiten: bool = False
  grams: Optional[Mapping[str, Any]] = None
  damping: float = 1e-2
  svd_method: str = "exact"
  spectral: str = "none"
  spectral_scope: str = "factor"
  tau: Optional[float] = None
  keep_energy: Optional[float] = None
  quantize: str = "none"
  group_size: int = 64
  quantize_overrides: Any = ()
  correction_rank: int = 0
  gptq_damping: float = 0.0
  gptq_natural_order: bool = False
  gptq_clip_grid: Any = ()
  sensitivity_candidates: Any = ()
  sensitivity_windows: int = 0
  sensitivity_tiling: str = ""
  bytes_ratio: float = 0.0
  bytes_candidates: Any = ()


def as_compression_config(config: Any) -> CompressionConfig:
  """Accepts a CompressionConfig, an ml_collections.ConfigDict or a mapping.

  Args:
    config: the config.

  Returns:
    A validated CompressionConfig.
  """
  if isinstance(config, CompressionConfig):
    cfg = config
  else:
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = {f.name for f in dataclasses.fields(CompressionConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown compression config fields {unknown}; known: {sorted(known)}")
    cfg = CompressionConfig(**values)
  validate_config(cfg)
  return cfg


def _choice(name: str, value: Any, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"config.{name}={value!r} is invalid; allowed: {list(allowed)}")


def validate_config(cfg: CompressionConfig) -> None:
  """Raises ValueError naming the field and value of the first invalid setting."""
  for name in ("include", "exclude"):
    pattern = getattr(cfg, name)
    if pattern is not None:
      try:
        re.compile(pattern)
      except re.error as e:
        raise ValueError(f"config.{name}={pattern!r} is not a valid regex: {e}") from None
  _choice("method", cfg.method, METHODS)
  _choice("tiling", cfg.tiling, TILING_KINDS)
  _choice("sensitivity_tiling", cfg.sensitivity_tiling, ("",) + TILING_KINDS)
  _choice("rank_policy", cfg.rank_policy, RANK_POLICIES)
  _choice("budget_scope", cfg.budget_scope, BUDGET_SCOPES)
  _choice("svd_method", cfg.svd_method, rank_blocks.SVD_METHODS)
  _choice("spectral", cfg.spectral, spectral_lib.SPECTRAL_KINDS)
  _choice("spectral_scope", cfg.spectral_scope, ("factor", "block"))
  _choice("quantize", cfg.quantize, ("none",) + tuple(BITS))
  if not (isinstance(cfg.param_ratio, (int, float)) and 0.0 < cfg.param_ratio <= 1.0):
    raise ValueError(f"config.param_ratio={cfg.param_ratio!r} must be in (0, 1]")
  if not isinstance(cfg.min_rank, int) or cfg.min_rank < 0:
    raise ValueError(f"config.min_rank={cfg.min_rank!r} must be an int >= 0")
  if not 0.0 < cfg.energy <= 1.0:
    raise ValueError(f"config.energy={cfg.energy!r} must be in (0, 1]")
  if cfg.tau is not None and cfg.tau < 0:
    raise ValueError(f"config.tau={cfg.tau!r} must be >= 0")
  if cfg.keep_energy is not None and not 0.0 < cfg.keep_energy <= 1.0:
    raise ValueError(f"config.keep_energy={cfg.keep_energy!r} must be in (0, 1]")
  if cfg.tau is not None and cfg.keep_energy is not None:
    raise ValueError(f"config.tau={cfg.tau!r} and config.keep_energy={cfg.keep_energy!r}: "
                     "set at most one")
  if not isinstance(cfg.tiles_per_matrix, int) or cfg.tiles_per_matrix < 1:
    raise ValueError(f"config.tiles_per_matrix={cfg.tiles_per_matrix!r} must be an int >= 1")
  if not isinstance(cfg.group_size, int) or cfg.group_size < 1:
    raise ValueError(f"config.group_size={cfg.group_size!r} must be an int >= 1")
  if cfg.damping < 0:
    raise ValueError(f"config.damping={cfg.damping!r} must be >= 0")
  if cfg.rank_policy == "fixed" and cfg.fixed_ranks is None:
    raise ValueError("config.fixed_ranks=None but rank_policy='fixed' needs shape_id -> rank")
  if cfg.method in ("rtn", "gptq") and cfg.quantize == "none":
    raise ValueError(f"config.quantize='none' but method={cfg.method!r} needs one of "
                     f"{list(BITS)}")
  parse_quantize_overrides(cfg.quantize_overrides)
  if not isinstance(cfg.correction_rank, int) or cfg.correction_rank < 0:
    raise ValueError(f"config.correction_rank={cfg.correction_rank!r} must be an int >= 0")
  if cfg.correction_rank and cfg.method not in ("rtn", "gptq"):
    raise ValueError(f"config.correction_rank={cfg.correction_rank} corrects rounding errors: it "
                     f"needs method 'rtn' or 'gptq', not {cfg.method!r}")
  if not isinstance(cfg.gptq_damping, (int, float)) or cfg.gptq_damping < 0:
    raise ValueError(f"config.gptq_damping={cfg.gptq_damping!r} must be a number >= 0")
  bad_clip = [c for c in cfg.gptq_clip_grid if not isinstance(c, (int, float)) or not 0 < c <= 1]
  if bad_clip:
    raise ValueError(f"config.gptq_clip_grid={cfg.gptq_clip_grid!r}: every shrink factor must "
                     f"be a number in (0, 1]; bad: {bad_clip}")
  bad = [c for c in cfg.sensitivity_candidates
         if not isinstance(c, (int, float)) or not 0.0 < c <= 1.0]
  if bad:
    raise ValueError(f"config.sensitivity_candidates={cfg.sensitivity_candidates!r}: every "
                     f"ratio must be a number in (0, 1]; bad: {bad}")
  if not isinstance(cfg.sensitivity_windows, int) or cfg.sensitivity_windows < 0:
    raise ValueError(f"config.sensitivity_windows={cfg.sensitivity_windows!r} must be an "
                     "int >= 0 (0 = the default)")
  if (isinstance(cfg.bytes_ratio, bool) or not isinstance(cfg.bytes_ratio, (int, float))
      or not 0.0 <= cfg.bytes_ratio <= 1.0):
    raise ValueError(f"config.bytes_ratio={cfg.bytes_ratio!r} must be a number in [0, 1] "
                     "(stored / float32 bytes of the selected matrices; 0 = off)")
  candidates.parse_all(cfg.bytes_candidates)  # errors name config.bytes_candidates


def parse_quantize_overrides(overrides) -> list[tuple[re.Pattern, str]]:
  """('regex=quant', ...) -> [(compiled regex, quant)], each part checked.

  Args:
    overrides: the config's quantize_overrides.

  Returns:
    The parsed pairs, in order.
  """
  out = []
  for item in overrides or ():
    pattern, sep, quant = str(item).rpartition("=")
    if not sep or not pattern:
      raise ValueError(f"config.quantize_overrides item {item!r}: expected 'regex=quant', e.g. "
                       "'mlp/down_proj=int4'")
    if quant not in BITS:
      raise ValueError(f"config.quantize_overrides item {item!r}: quant {quant!r} is not one of "
                       f"{list(BITS)}")
    try:
      out.append((re.compile(pattern), quant))
    except re.error as e:
      raise ValueError(f"config.quantize_overrides item {item!r}: bad regex ({e})") from None
  return out


def quantize_for(cfg: CompressionConfig, path: str) -> str:
  """The quantize setting of one kernel: its first matching override, else cfg.quantize.

  Args:
    cfg: compression config.
    path: '/'-joined param path.

  Returns:
    'int8' / 'int4' / 'int3' (or cfg.quantize).
  """
  for pattern, quant in parse_quantize_overrides(cfg.quantize_overrides):
    if pattern.search(path):
      return quant
  return cfg.quantize


def build_leaf(w, tiling: Tiling, ranks, gram=None, damping: float = 1e-2,
               spectral: str = "none", spectral_scope: str = "factor", tau=None,
               keep_energy=None, quantize: str = "none", group_size: int = 64, svds=None):
  """Builds the compressed leaf of one kernel from its tiling and per-tile ranks.

  Args:
    w: (in, out) kernel.
    tiling: its tiling.
    ranks: rank per tile (canonical: >= min(h, w) or r*(h+w) >= h*w means dense).
    gram: optional (in, in) Gram for whitened factoring.
    damping: relative Cholesky damping.
    spectral: 'none' | 'dct' | 'fft'.
    spectral_scope: 'factor' or 'block'.
    tau: spectral magnitude threshold.
    keep_energy: spectral kept-energy fraction.
    quantize: 'none' | 'int8' | 'int4' | 'int3'.
    group_size: quantization group size.
    svds: precomputed `rank_blocks.tile_svds(...)[0]` to skip refactoring.

  Returns:
    TiledLowRank, or SpectralMatrix for spectral block scope.
  """
  if len(ranks) != tiling.num_tiles:
    raise ValueError(f"got {len(ranks)} ranks for {tiling.num_tiles} tiles")
  w64 = np.asarray(w, np.float64)
  if svds is None:
    svds, _ = rank_blocks.tile_svds(w64, tiling, gram, damping)
  lowrank: dict[tuple, list] = {}
  dense: dict[tuple, list] = {}
  for (r0, c0, h, ww, _), r, sv in zip(tiling.tiles, ranks, svds):
    r = rank_allocation.canonical_rank(h, ww, r)
    if rank_allocation.is_dense_rank(h, ww, r):
      dense.setdefault((h, ww), []).append((r0, c0, w64[r0:r0 + h, c0:c0 + ww]))
    elif r > 0:
      u, v = rank_blocks.truncate_tile(sv, r)
      lowrank.setdefault((h, ww, r), []).append((r0, c0, u, v))
  spec_kw = dict(tau=tau, keep_energy=keep_energy, quantize=quantize, group_size=group_size)
  if spectral != "none" and spectral_scope == "block":
    blocks: dict[tuple, list] = {}
    for (h, ww), items in dense.items():
      blocks.setdefault((h, ww), []).extend(items)
    for (h, ww, _), items in lowrank.items():
      blocks.setdefault((h, ww), []).extend((r0, c0, u @ v.T) for r0, c0, u, v in items)
    groups = tuple(
        DenseGroup(spectral_lib.spectral_encode(np.stack([b for _, _, b in it]), spectral, (1, 2),
                                                **spec_kw),
                   StaticArray(np.array([a for a, _, _ in it], np.int32)),
                   StaticArray(np.array([c for _, c, _ in it], np.int32)), h, ww)
        for (h, ww), it in sorted(blocks.items()))
    return SpectralMatrix(groups, (tiling.m, tiling.n), tiling.kind)

  def encode_factor(x):
    if spectral != "none":
      return spectral_lib.spectral_encode(x, spectral, (1,), **spec_kw)
    return maybe_quantize(x, quantize, group_size, axis=1)  # groups run along the long axis.

  lr_groups = tuple(
      LowRankGroup(encode_factor(np.stack([it[2] for it in items])),
                   encode_factor(np.stack([it[3] for it in items])),
                   StaticArray(np.array([it[0] for it in items], np.int32)),
                   StaticArray(np.array([it[1] for it in items], np.int32)), h, ww, r)
      for (h, ww, r), items in sorted(lowrank.items()))
  dn_groups = tuple(
      DenseGroup(maybe_quantize(np.stack([b for _, _, b in items]), quantize, group_size, axis=1),
                 StaticArray(np.array([a for a, _, _ in items], np.int32)),
                 StaticArray(np.array([c for _, c, _ in items], np.int32)), h, ww)
      for (h, ww), items in sorted(dense.items()))
  return TiledLowRank(lr_groups, dn_groups, (tiling.m, tiling.n), tiling.kind)


def _walk(tree: Any, prefix: str = ""):
  """Yields (path, leaf) of a nested-dict params tree."""
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from _walk(v, f"{prefix}/{k}" if prefix else str(k))
  else:
    yield prefix, tree


def _rebuild(tree: Any, replace: Mapping[str, Any], prefix: str = "") -> Any:
  """A new nested dict with leaves at `replace` paths swapped (input untouched)."""
  if isinstance(tree, Mapping):
    return {k: _rebuild(v, replace, f"{prefix}/{k}" if prefix else str(k)) for k, v in tree.items()}
  return replace.get(prefix, tree)


def _matches(cfg: CompressionConfig, path: str, leaf: Any) -> bool:
  if not hasattr(leaf, "shape") or hasattr(leaf, "matmul") or len(np.shape(leaf)) != 2:
    return False
  if re.fullmatch(cfg.include, path) is None and re.match(cfg.include, path) is None:
    return False
  return not (cfg.exclude and re.search(cfg.exclude, path))


def _rank_summary(tiling: Tiling, ranks) -> dict:
  dense = [rank_allocation.is_dense_rank(t[2], t[3], r) for t, r in zip(tiling.tiles, ranks)]
  lr = [r for r, d in zip(ranks, dense) if not d]
  return {"num_tiles": tiling.num_tiles, "num_shapes": len(tiling.shapes),
          "dense_tiles": int(sum(dense)), "zero_tiles": int(sum(1 for r in lr if r == 0)),
          "min": int(min(lr)) if lr else None, "max": int(max(lr)) if lr else None,
          "mean": float(np.mean(lr)) if lr else None}


def matrix_row(path: str, w: Any, leaf: Any, tiling: Optional[Tiling] = None, ranks=None,
               gram: Optional[np.ndarray] = None, damps=None,
               w_hat: Optional[np.ndarray] = None) -> dict:
  """Per-matrix statistics of one compressed kernel (the report's per-matrix row).

  Args:
    path: '/'-joined param path.
    w: the dense (in, out) kernel.
    leaf: its compressed leaf.
    tiling: the tiling used (tiled method), else None.
    ranks: per-tile ranks (tiled method), else None.
    gram: the activation Gram when whitening (adds out_rel_error).
    damps: Cholesky damping used per band.
    w_hat: the leaf's materialized matrix if the caller already has it.

  Returns:
    Row with name, shape, params_dense, params_stored, bytes, bytes_dense, rel_fro_error,
    and ranks / tiling / damping / out_rel_error where they apply.
  """
  w64 = np.asarray(w, np.float64)
  if w_hat is None:
    w_hat = leaf.materialize_host()  # numpy: eager jnp compiled one program per leaf shape
  diff = w64 - np.asarray(w_hat, np.float64)
  row = {"name": path, "shape": tuple(w64.shape), "params_dense": int(w64.size),
         "params_stored": int(leaf.param_count()), "bytes": int(leaf.nbytes()),
         "bytes_dense": int(w64.size * np.dtype(np.asarray(w).dtype).itemsize),
         "rel_fro_error": float(np.linalg.norm(diff) / max(np.linalg.norm(w64), 1e-30))}
  if tiling is not None:
    row["ranks"] = _rank_summary(tiling, ranks)
    row["tiling"] = tiling.kind
    row["damping"] = max(damps) if damps else None
  if gram is not None:
    g = np.asarray(gram, np.float64)
    num = np.trace(diff.T @ g @ diff)
    den = np.trace(w64.T @ g @ w64)
    row["out_rel_error"] = float(np.sqrt(max(num, 0.0) / max(den, 1e-30)))
  return row


def summarize_rows(rows: list) -> dict:
  """Totals over per-matrix rows: params_dense, params_compressed, param_ratio, bytes.

  Args:
    rows: `matrix_row` outputs.

  Returns:
    Dict of totals over the compressed matrices.
  """
  dense_total = sum(r["params_dense"] for r in rows)
  stored_total = sum(r["params_stored"] for r in rows)
  return {"num_matrices": len(rows), "params_dense": dense_total,
          "params_compressed": stored_total,
          "param_ratio": stored_total / dense_total if dense_total else None,
          "bytes_dense": sum(r["bytes_dense"] for r in rows),
          "bytes_compressed": sum(r["bytes"] for r in rows)}


def compress(params: Any, config: Any) -> tuple[dict, dict]:
  """Replaces matching kernels of a params tree by compressed leaves (pure function).

  Args:
    params: nested dict params tree (see docs/CONTRACTS_DEV.md).
    config: CompressionConfig, ml_collections.ConfigDict or mapping of its fields.

  Returns:
    (new_params, stats): stats has 'matrices' (one row per compressed kernel: name, shape,
    rel_fro_error, out_rel_error (with gram), ranks, params_dense, params_stored, bytes,
    damping) and totals params_dense, params_compressed, param_ratio, bytes_dense,
    bytes_compressed over the compressed matrices.
  """
  cfg = as_compression_config(config)
  if cfg.bytes_ratio:
    raise ValueError(f"config.bytes_ratio={cfg.bytes_ratio} needs measured KLs over the whole "
                     "model: only the streaming compress job (jobs/compress.py) applies it")
  # The streaming job computes Grams itself; this in-memory transform must be given them.
  needs_gram = cfg.whiten or cfg.method == "gptq" or cfg.correction_rank > 0
  if needs_gram and cfg.grams is None:
    raise ValueError(f"config.grams=None but whiten={cfg.whiten} / method={cfg.method!r} "
                     "needs path -> input Gram")
  # ---- plan & validate before any factoring work.
  plan = []
  for path, leaf in _walk(params):
    if not _matches(cfg, path, leaf):
      continue
    m, n = (int(s) for s in np.shape(leaf))
    gram = None
    if needs_gram:
      gram = cfg.grams.get(path)
      if gram is None:
        raise ValueError(f"config.grams has no entry for {path!r} (whiten={cfg.whiten}, "
                         f"method={cfg.method!r})")
      if np.shape(gram) != (m, m):
        raise ValueError(f"config.grams[{path!r}] has shape {np.shape(gram)}, expected {(m, m)}")
    try:
      tiling = make_tiling(cfg.tiling, m, n, cfg.tiles_per_matrix, cfg.phase, cfg.tile_lengths)
    except ValueError as e:
      raise ValueError(f"config.tile_lengths={cfg.tile_lengths!r} / config.tiling={cfg.tiling!r} "
                       f"cannot tile {path!r} of shape {(m, n)}: {e}") from None
    fixed = rank_allocation.fixed_ranks(tiling, cfg.fixed_ranks) if cfg.rank_policy == "fixed" \
        else None
    plan.append((path, leaf, tiling, gram, fixed))

  replace, rows = {}, []
  if cfg.method == "rtn":
    for path, leaf, _, _, _ in plan:
      replace[path] = rtn_quantize_dense(leaf, BITS[quantize_for(cfg, path)], cfg.group_size)
  elif cfg.method == "gptq":
    for path, leaf, _, gram, _ in plan:
      settings = gptq.settings_from_config(cfg, BITS[quantize_for(cfg, path)])
      replace[path] = gptq.gptq_quantize(leaf, gram, settings)[0]
  else:
    # ---- factor.
    factored = []
    for path, leaf, tiling, gram, fixed in plan:
      svds, damps = rank_blocks.tile_svds(leaf, tiling, gram, cfg.damping, cfg.svd_method)
      spectra = [rank_blocks.TileSpectrum(t[2], t[3], sv.s, 1.0, (path, i), sv.tail_energy)
                 for i, (t, sv) in enumerate(zip(tiling.tiles, svds))]
      factored.append((svds, damps, spectra))
    # ---- allocate.
    if cfg.rank_policy == "fixed":
      all_ranks = [p[4] for p in plan]
    elif cfg.rank_policy == "energy":
      all_ranks = [rank_allocation.energy_ranks(f[2], cfg.energy) for f in factored]
    elif cfg.budget_scope == "matrix":
      all_ranks = [rank_allocation.allocate_ranks(
          f[2], rank_allocation.factor_budget(p[2].m * p[2].n, cfg.param_ratio, p[2].num_tiles),
          min_rank=cfg.min_rank)
                   for p, f in zip(plan, factored)]
    else:
      flat = [sp for f in factored for sp in f[2]]
      weights = rank_allocation.matrix_weights({p[0]: f[2] for p, f in zip(plan, factored)},
                                               cfg.budget_scope)
      budget = rank_allocation.factor_budget(sum(p[2].m * p[2].n for p in plan), cfg.param_ratio,
                                             len(flat))
      flat_ranks = rank_allocation.allocate_ranks(
          flat, budget, weights=[weights[p[0]] for p, f in zip(plan, factored) for _ in f[2]],
          min_rank=cfg.min_rank)
      all_ranks, k = [], 0
      for p in plan:
        all_ranks.append(flat_ranks[k:k + p[2].num_tiles])
        k += p[2].num_tiles
    # ---- build.
    for (path, leaf, tiling, gram, _), (svds, damps, _), ranks in zip(plan, factored, all_ranks):
      replace[path] = build_leaf(leaf, tiling, ranks, gram, cfg.damping, cfg.spectral,
                                 cfg.spectral_scope, cfg.tau, cfg.keep_energy, cfg.quantize,
                                 cfg.group_size, svds=svds)
  if cfg.correction_rank:  # rtn / gptq only (validated)
    for path, leaf, _, gram, _ in plan:
      replace[path] = error_correction.correct(replace[path], leaf, gram, cfg.correction_rank,
                                               cfg.damping, group_size=cfg.group_size)
  # ---- stats.
  for i, (path, leaf, tiling, gram, _) in enumerate(plan):
    tiled = cfg.method == "tiled"
    rows.append(matrix_row(path, leaf, replace[path], tiling if tiled else None,
                           all_ranks[i] if tiled else None, gram,
                           factored[i][1] if tiled else None))
  stats = {"matrices": rows, **summarize_rows(rows)}
  return _rebuild(params, replace), stats
