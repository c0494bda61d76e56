"""Layer-by-layer (streaming) compression of a whole model, holding one layer at a time.

Sequential calibration as GPTQ / SVD-LLM style methods do: calibration activations enter layer
i as they come out of the already-compressed layers 0..i-1, so each layer's whitening sees the
inputs it will really get.

With a global parameter budget the ranks of every tile of every matrix are chosen together, so
the job runs in two passes: `scan_spectra` streams the layers once (dense activations) keeping
only singular values, `allocate_global_ranks` picks ranks, then `compress_layer` factors each
layer in the second pass. Other rank policies are local and need only the second pass.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.compression import (candidates, error_correction, gptq, rank_allocation,
                                     rank_blocks, whitening)
from penrose_jax.compression.leaves import rtn_quantize_dense
from penrose_jax.compression.quantization import BITS
from penrose_jax.compression.tiling import Tiling, make_tiling
from penrose_jax.compression.transform import (CompressionConfig, build_leaf, matrix_row,
                                               quantize_for)
from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.reporting.stage_timer import StageTimer, maybe_stage

# Calibration activations are pushed through a block in chunks of this many sequences, which
# bounds the attention / MLP intermediates whatever the calibration set size.
_CHUNK = 16


def needs_global_pass(cfg: CompressionConfig) -> bool:
  """Whether ranks must be allocated over the whole model before factoring (two passes).

  Args:
    cfg: compression config.

  Returns:
    True for method 'tiled' with rank_policy 'budget' and a model-wide budget_scope
    ('global' or 'normalized'), unless the bytes allocator (bytes_ratio > 0) chooses instead.
  """
  return (not cfg.bytes_ratio and cfg.method == "tiled" and cfg.rank_policy == "budget"
          and cfg.budget_scope in rank_allocation.MODEL_WIDE_SCOPES)


def needs_activations(cfg: CompressionConfig) -> bool:
  """Whether compressing a layer needs its calibration inputs (and their Grams).

  Args:
    cfg: compression config.

  Returns:
    True for whitened 'tiled' factoring, 'gptq' (its Hessian is the input Gram) and a
    low-rank correction of rounding errors (whitened too); under the bytes allocator, when
    a candidate needs Grams (gptq, a correction, whitened lowrank).
  """
  if cfg.bytes_ratio:
    return any(c.needs_gram(cfg.whiten) for c in candidates.parse_all(cfg.bytes_candidates))
  return ((cfg.whiten and cfg.method == "tiled") or cfg.method == "gptq"
          or cfg.correction_rank > 0)


def selected_kernels(layer_key: str, layer_params: Mapping[str, Any], cfg: CompressionConfig
                     ) -> list[tuple[str, str, Any]]:
  """Kernels of one layer chosen by the config's include / exclude regexes.

  Args:
    layer_key: e.g. 'layers_3'.
    layer_params: that layer's params subtree.
    cfg: compression config.

  Returns:
    (full path, projection path inside the block such as 'attn/q_proj', kernel) triples.
  """
  out = []
  for group, modules in sorted(layer_params.items()):
    if not isinstance(modules, Mapping):
      continue
    for name, leaves in sorted(modules.items()):
      if not isinstance(leaves, Mapping) or "kernel" not in leaves:
        continue
      path = f"{layer_key}/{group}/{name}/kernel"
      if re.match(cfg.include, path) is None:
        continue
      if cfg.exclude and re.search(cfg.exclude, path):
        continue
      out.append((path, f"{group}/{name}", leaves["kernel"]))
  return out


def tiling_for(path: str, shape: tuple[int, int], cfg: CompressionConfig) -> Tiling:
  """The tiling of one kernel (clear error naming the matrix when the dictionary fails).

  Args:
    path: param path (for the message).
    shape: (in, out).
    cfg: compression config.

  Returns:
    The Tiling.
  """
  try:
    return make_tiling(cfg.tiling, shape[0], shape[1], cfg.tiles_per_matrix, cfg.phase,
                       cfg.tile_lengths)
  except ValueError as err:
    raise ValueError(f"config.tiling={cfg.tiling!r} / config.tile_lengths={cfg.tile_lengths!r} "
                     f"cannot tile {path} of shape {shape}: {err}") from None


def _apply_block_chunked(layer_params: Any, x: np.ndarray, config: ModelConfig,
                         block_fn: Callable) -> np.ndarray:
  outs = [np.asarray(block_fn(layer_params, jnp.asarray(x[i:i + _CHUNK])))
          for i in range(0, x.shape[0], _CHUNK)]
  return np.concatenate(outs, axis=0)


def projection_grams(layer_params: Any, x: np.ndarray, config: ModelConfig,
                     inputs_fn: Callable) -> dict[str, np.ndarray]:
  """float64 Grams X^T X of every projection's input in one block, summed over chunks.

  Args:
    layer_params: the block's params.
    x: (N, T, D) block input activations.
    config: the architecture.
    inputs_fn: jitted `llama.block_linear_inputs` (layer_params, x) -> dict.

  Returns:
    Projection path inside the block ('attn/q_proj', ...) -> (in, in) Gram.
  """
  grams: dict[str, np.ndarray] = {}
  for i in range(0, x.shape[0], _CHUNK):
    inputs = inputs_fn(layer_params, jnp.asarray(x[i:i + _CHUNK]))
    for name, value in inputs.items():
      flat = np.asarray(value, np.float32).reshape(-1, value.shape[-1])
      grams[name] = whitening.gram_from_activations(flat, grams.get(name))
  return grams


@dataclasses.dataclass
class StreamFunctions:
  """Jitted block functions shared by both passes (compiled once per layer structure)."""

  config: ModelConfig

  def __post_init__(self):
    cfg = self.config
    self.block = jax.jit(lambda p, x: llama.apply_block(p, x, cfg))
    self.inputs = jax.jit(lambda p, x: llama.block_linear_inputs(p, x, cfg))

  def forward(self, layer_params: Any, x: np.ndarray) -> np.ndarray:
    """Block output for (N, T, D) activations, chunked."""
    return _apply_block_chunked(layer_params, x, self.config, self.block)

  def grams(self, layer_params: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-projection input Grams for (N, T, D) activations."""
    return projection_grams(layer_params, x, self.config, self.inputs)


def scan_spectra(layers: Iterable[tuple[str, Any]], x: np.ndarray, cfg: CompressionConfig,
                 fns: StreamFunctions, timer: Optional[StageTimer] = None
                 ) -> dict[str, list[rank_blocks.TileSpectrum]]:
  """Pass 1: singular values of every tile of every selected kernel, streaming dense layers.

  Args:
    layers: iterable of (layer_key, dense layer params), in order (e.g. a generator reading
      one layer at a time from disk).
    x: (N, T, D) calibration embeddings (input of layer 0).
    cfg: compression config.
    fns: jitted block functions.
    timer: optional StageTimer: Grams and propagation count as 'pass1_calibrate', SVDs as
      'pass1_factor'.

  Returns:
    Param path -> TileSpectrum list (tiling order). Only these small arrays are kept.
  """
  spectra: dict[str, list[rank_blocks.TileSpectrum]] = {}
  for layer_key, layer_params in layers:
    with maybe_stage(timer, "pass1_calibrate"):
      grams = fns.grams(layer_params, x) if cfg.whiten else {}
    with maybe_stage(timer, "pass1_factor"):
      for path, proj, kernel in selected_kernels(layer_key, layer_params, cfg):
        w = np.asarray(kernel, np.float64)
        tiling = tiling_for(path, w.shape, cfg)
        spectra[path] = rank_blocks.tile_spectra_for_matrix(w, tiling, grams.get(proj),
                                                            cfg.damping, name=path,
                                                            svd_method=cfg.svd_method)
    with maybe_stage(timer, "pass1_calibrate"):
      x = fns.forward(layer_params, x)
  return spectra


def allocate_global_ranks(spectra: Mapping[str, list[rank_blocks.TileSpectrum]],
                          param_ratio: float, min_rank: int = 0, scope: str = "global"
                          ) -> dict[str, list[int]]:
  """Model-wide greedy allocation over all tiles of all matrices (budget = ratio x dense).

  Args:
    spectra: from `scan_spectra`.
    param_ratio: stored / dense target over the selected matrices.
    min_rank: rank floor per tile (see rank_allocation.allocate_ranks).
    scope: 'global' (raw whitened energies) or 'normalized' (each matrix's energies divided
      by its total; see `matrix_weights`).

  Returns:
    Param path -> canonical rank per tile.
  """
  paths = sorted(spectra)
  weights = rank_allocation.matrix_weights(spectra, scope)
  flat = [sp for p in paths for sp in spectra[p]]
  tile_weights = [weights[p] * sp.weight for p in paths for sp in spectra[p]]
  dense = sum(sp.h * sp.w for sp in flat)
  ranks = rank_allocation.allocate_ranks(
      flat, rank_allocation.factor_budget(dense, param_ratio, len(flat)), weights=tile_weights,
      min_rank=min_rank)
  out, k = {}, 0
  for p in paths:
    out[p] = [int(r) for r in ranks[k:k + len(spectra[p])]]
    k += len(spectra[p])
  return out


def local_ranks(cfg: CompressionConfig, tiling: Tiling, svds,
                param_ratio: Optional[float] = None) -> list[int]:
  """Tile ranks of one matrix under a per-matrix policy (fixed, energy or its own budget).

  Args:
    cfg: compression config.
    tiling: the matrix's tiling.
    svds: its tiles' SVDs (`rank_blocks.tile_svds`).
    param_ratio: this matrix's budget; None = cfg.param_ratio (the sensitivity scope gives
      each matrix its own).

  Returns:
    Canonical rank per tile.
  """
  spectra = [rank_blocks.TileSpectrum(t[2], t[3], sv.s, 1.0, (), sv.tail_energy)
             for t, sv in zip(tiling.tiles, svds)]
  if cfg.rank_policy == "fixed":
    return rank_allocation.fixed_ranks(tiling, cfg.fixed_ranks)
  if cfg.rank_policy == "energy":
    return rank_allocation.energy_ranks(spectra, cfg.energy)
  ratio = cfg.param_ratio if param_ratio is None else param_ratio
  return rank_allocation.allocate_ranks(
      spectra, rank_allocation.factor_budget(tiling.m * tiling.n, ratio, tiling.num_tiles),
      min_rank=cfg.min_rank)


def compress_layer(layer_key: str, layer_params: Mapping[str, Any], x: Optional[np.ndarray],
                   cfg: CompressionConfig, fns: Optional[StreamFunctions],
                   ranks: Optional[Mapping[str, list[int]]] = None,
                   timer: Optional[StageTimer] = None,
                   matrix_ratios: Optional[Mapping[str, float]] = None,
                   matrix_choices: Optional[Mapping[str, str]] = None
                   ) -> tuple[dict, dict, list[dict], dict[str, tuple[Tiling, list[int]]]]:
  """Pass 2 for one layer: replaces its selected kernels by compressed leaves.

  Args:
    layer_key: e.g. 'layers_3'.
    layer_params: the dense layer params.
    x: (N, T, D) input activations of this layer (from the compressed-so-far model); only
      needed when whitening or for GPTQ (`needs_activations`).
    cfg: compression config.
    fns: jitted block functions (needed when whitening).
    ranks: path -> per-tile ranks from `allocate_global_ranks` (global budget only).
    timer: optional StageTimer: Grams count as 'calibrate', SVDs as 'factor', building the
      leaves (truncation, spectral coding, quantization, error rows) as 'build_leaves'.
    matrix_ratios: path -> that matrix's param_ratio (budget_scope 'sensitivity'); matrices
      not in it use cfg.param_ratio.
    matrix_choices: path -> candidate text (bytes allocator, compression.bytes_allocation):
      those matrices are stored as their candidate (`candidates.build`, on this layer's
      sequential Grams), the row gets 'choice'; others follow cfg.method.

  Returns:
    (new layer params (input untouched), the same layer with each compressed kernel
    materialized, per-matrix stat rows, path -> (tiling, ranks)). The materialized layer has
    the dense layer's structure, so propagating calibration activations through it reuses one
    compiled block instead of compiling every compressed layer's unique structure; it equals
    the compressed layer up to float rounding.
  """
  with maybe_stage(timer, "calibrate"):
    grams = fns.grams(layer_params, x) if needs_activations(cfg) else {}
  replace, approx, rows, layouts = {}, {}, [], {}
  for path, proj, kernel in selected_kernels(layer_key, layer_params, cfg):
    w = np.asarray(kernel, np.float32)
    choice = (matrix_choices or {}).get(path)
    if choice is not None:
      with maybe_stage(timer, "factor"):
        leaf, info = candidates.build(w, candidates.parse(choice), grams.get(proj), cfg)
      with maybe_stage(timer, "build_leaves"):
        w_hat = leaf.materialize_host()
        rows.append({**matrix_row(path, w, leaf, gram=grams.get(proj), w_hat=w_hat),
                     "choice": choice, **info})
    elif cfg.method in ("rtn", "gptq"):
      info = {}
      with maybe_stage(timer, "factor"):
        if cfg.method == "rtn":
          leaf = rtn_quantize_dense(w, BITS[quantize_for(cfg, path)], cfg.group_size)
        else:
          leaf, info = gptq.gptq_quantize(
              w, grams[proj], gptq.settings_from_config(cfg, BITS[quantize_for(cfg, path)]))
        if cfg.correction_rank:
          leaf = error_correction.correct(leaf, w, grams[proj], cfg.correction_rank,
                                          cfg.damping, group_size=cfg.group_size)
      with maybe_stage(timer, "build_leaves"):
        w_hat = leaf.materialize_host()
        rows.append({**matrix_row(path, w, leaf, gram=grams.get(proj), w_hat=w_hat), **info})
    else:
      tiling = tiling_for(path, w.shape, cfg)
      gram = grams.get(proj)
      with maybe_stage(timer, "factor"):
        svds, damps = rank_blocks.tile_svds(w, tiling, gram, cfg.damping, cfg.svd_method)
      if ranks is not None:
        tile_ranks = list(ranks[path])
      else:
        tile_ranks = local_ranks(cfg, tiling, svds, (matrix_ratios or {}).get(path))
      with maybe_stage(timer, "build_leaves"):
        leaf = build_leaf(w, tiling, tile_ranks, gram, cfg.damping, cfg.spectral,
                          cfg.spectral_scope, cfg.tau, cfg.keep_energy, cfg.quantize,
                          cfg.group_size, svds=svds)
        w_hat = leaf.materialize_host()
        rows.append(matrix_row(path, w, leaf, tiling, tile_ranks, gram, damps, w_hat=w_hat))
      layouts[path] = (tiling, tile_ranks)
    replace[proj] = leaf
    approx[proj] = w_hat
  return (replace_kernels(layer_params, replace), replace_kernels(layer_params, approx), rows,
          layouts)


def replace_kernels(layer_params: Mapping[str, Any], replace: Mapping[str, Any]) -> dict:
  """A copy of a layer with kernels at 'group/name' paths swapped (input untouched)."""
  new_layer = {}
  for group, modules in layer_params.items():
    if not isinstance(modules, Mapping):
      new_layer[group] = modules
      continue
    new_layer[group] = {}
    for name, leaves in modules.items():
      if isinstance(leaves, Mapping):
        leaves = dict(leaves)
        if f"{group}/{name}" in replace:
          leaves["kernel"] = replace[f"{group}/{name}"]
      new_layer[group][name] = leaves
  return new_layer
