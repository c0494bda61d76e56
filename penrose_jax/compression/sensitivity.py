"""Measured per-matrix sensitivity (ASVD-style) and an exact knapsack over candidate ratios.

The model-wide greedy scopes rank tiles by whitened output energy, a layer-local quantity:
raw energies starved early attention ('global') and relative energies ('normalized') still
lost to a uniform ratio on SmolLM2 (results/sweep_baseline). Here each matrix's choice is
judged by its effect on the model's output instead: for every selected matrix and every
candidate ratio, that one matrix is replaced by its whitened truncation (dense model
otherwise) and the logit KL to the dense model is measured on a few calibration windows
(ASVD's sensitivity list, with KL instead of perplexity). Treating the KLs as additive, an
exact knapsack then picks one candidate per matrix that minimizes their sum under the budget.

The pass streams layer by layer like pass 1 of the global scopes: it keeps the dense layers
after the current one (to finish the forward pass of a perturbed model), the calibration
activations of the current layer and the dense log-probabilities of the measured windows.
`measure_replacements` is that pass for any per-matrix replacement and `knapsack_choices` the
exact DP; the bytes allocator (compression.bytes_allocation) uses both with storage candidates
and byte costs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.compression import rank_blocks, streaming
from penrose_jax.compression.transform import CompressionConfig, build_leaf
from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig

# Candidate ratios and measured windows when the config leaves them empty.
DEFAULT_CANDIDATES = (0.4, 0.6, 0.8, 1.0)
DEFAULT_WINDOWS = 2  # measured with 2 x 256 tokens (results/sweep_baseline)

# Sensitivity tables are JSON: path -> {ratio as text: KL}.
SensitivityTable = dict[str, dict[str, float]]


def settings(cfg: CompressionConfig) -> tuple[tuple[float, ...], int]:
  """(candidate ratios, measured windows) of a config, defaults filled in."""
  cands = tuple(float(c) for c in cfg.sensitivity_candidates) or DEFAULT_CANDIDATES
  if 1.0 not in cands:
    cands = cands + (1.0,)  # a matrix may always stay dense
  return tuple(sorted(set(cands))), cfg.sensitivity_windows or DEFAULT_WINDOWS


def ratio_key(ratio: float) -> str:
  """The JSON key of a candidate ratio ('0.6', '1')."""
  return f"{float(ratio):g}"


def measured_windows(num_windows: int, wanted: int) -> np.ndarray:
  """Indices of `wanted` calibration windows spread evenly over all `num_windows`.

  Args:
    num_windows: calibration windows available.
    wanted: windows to measure KL on (>= 1).

  Returns:
    Sorted int indices (all windows when wanted >= num_windows).
  """
  if wanted < 1:
    raise ValueError(f"sensitivity_windows must be >= 1, got {wanted}")
  if wanted >= num_windows:
    return np.arange(num_windows)
  return np.unique(np.linspace(0, num_windows - 1, wanted).round().astype(int))


def _kl_function(config: ModelConfig) -> Callable:
  """Jitted (globals, last hidden, dense log-probs) -> mean KL(dense || perturbed) per token."""

  def kl(globals_, h, dense_logp):
    logp = jax.nn.log_softmax(llama.apply_head(globals_, h, config), axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(dense_logp) * (dense_logp - logp), axis=-1))

  return jax.jit(kl)


def measure_replacements(read_layer: Callable[[int], Any], globals_: Mapping[str, Any],
                         x0: np.ndarray, cfg: CompressionConfig, fns: streaming.StreamFunctions,
                         model_config: ModelConfig, windows: int, replacements: Callable,
                         with_grams: bool, progress: Callable = lambda it, **_: it
                         ) -> tuple[SensitivityTable, dict[str, Any]]:
  """Logit KL of the dense model with one selected matrix replaced at a time (the machinery).

  Streams layer by layer: every selected kernel of layer i is handed with its input Gram
  (dense calibration activations over all N windows) to `replacements`, which yields the
  approximations to measure; each one alone replaces the kernel, the rest of the model stays
  dense, and the KL to the dense log-probabilities is measured on `windows` windows.

  Args:
    read_layer: i -> dense 'layers_i' params.
    globals_: the non-layer params (embedding, final norm, LM head).
    x0: (N, T, D) calibration embeddings; Grams use all N windows.
    cfg: compression config (include / exclude select the kernels).
    fns: `streaming.StreamFunctions` of the model.
    model_config: the architecture.
    windows: calibration windows the KL is measured on (spread over all N).
    replacements: (path, w float32 (in, out), gram or None) -> iterable of
      (key, w_hat, info): one row entry `key` per approximation `w_hat`; `info` is kept.
    with_grams: compute each layer's input Grams (else `replacements` gets None).
    progress: tqdm-like wrapper for the layer loop.

  Returns:
    (path -> {key: KL}, path -> {'shape': [in, out], 'info': {key: info}}).
  """
  num_layers = model_config.num_layers
  layers = [read_layer(i) for i in range(num_layers)]
  idx = measured_windows(x0.shape[0], windows)
  kl_fn = _kl_function(model_config)
  # Dense inputs of every layer on the measured windows, and the dense log-probabilities.
  hs = [jnp.asarray(x0[idx])]
  for layer in layers:
    hs.append(fns.block(layer, hs[-1]))
  dense_logp = jax.nn.log_softmax(llama.apply_head(globals_, hs[-1], model_config), axis=-1)
  del hs[-1]
  table: SensitivityTable = {}
  extra: dict[str, Any] = {}
  x = x0
  for i in progress(range(num_layers), desc="sensitivity", unit="layer"):
    key = f"layers_{i}"
    grams = fns.grams(layers[i], x) if with_grams else {}
    for path, proj, kernel in streaming.selected_kernels(key, layers[i], cfg):
      w = np.asarray(kernel, np.float32)
      row, infos = {}, {}
      for name, w_hat, info in replacements(path, w, grams.get(proj)):
        h = fns.block(streaming.replace_kernels(layers[i], {proj: w_hat}), hs[i])
        for j in range(i + 1, num_layers):
          h = fns.block(layers[j], h)
        row[name] = float(kl_fn(globals_, h, dense_logp))
        infos[name] = info
      table[path] = row
      extra[path] = {"shape": [int(s) for s in w.shape], "info": infos}
    x = fns.forward(layers[i], x)  # dense calibration inputs of the next layer
    layers[i] = None  # only later layers are needed from here on
  return table, extra


def measure(read_layer: Callable[[int], Any], globals_: Mapping[str, Any], x0: np.ndarray,
            cfg: CompressionConfig, fns: streaming.StreamFunctions, model_config: ModelConfig,
            candidates: Sequence[float], windows: int,
            progress: Callable = lambda it, **_: it
            ) -> tuple[SensitivityTable, dict[str, int]]:
  """Logit KL of the dense model with one matrix truncated to each candidate ratio.

  Args:
    read_layer: i -> dense 'layers_i' params.
    globals_: the non-layer params (embedding, final norm, LM head).
    x0: (N, T, D) calibration embeddings; Grams (whitening) use all N windows.
    cfg: compression config (tiling, whitening, damping, min_rank as for the real run).
    fns: `streaming.StreamFunctions` of the model.
    model_config: the architecture.
    candidates: ratios to measure (1.0 is free: KL 0, never measured).
    windows: calibration windows the KL is measured on (spread over all N).
    progress: tqdm-like wrapper for the layer loop.

  Returns:
    (path -> {ratio_key(c): KL} for every selected matrix and candidate c < 1,
     path -> dense numbers of that matrix).
  """
  bad = [c for c in candidates if not 0.0 < float(c) <= 1.0]
  if bad:
    raise ValueError(f"sensitivity_candidates must be in (0, 1], got {bad}")

  def truncations(path, w, gram):
    tiling = streaming.tiling_for(path, w.shape, cfg)
    svds, _ = rank_blocks.tile_svds(w, tiling, gram, cfg.damping, cfg.svd_method)
    for c in candidates:
      if float(c) >= 1.0:
        continue
      ranks = streaming.local_ranks(cfg, tiling, svds, float(c))
      leaf = build_leaf(w, tiling, ranks, gram, cfg.damping, svds=svds)
      yield ratio_key(c), np.asarray(leaf.materialize_host(), np.float32), None

  table, extra = measure_replacements(read_layer, globals_, x0, cfg, fns, model_config, windows,
                                      truncations, cfg.whiten, progress)
  return table, {p: int(np.prod(e["shape"])) for p, e in extra.items()}


def knapsack_choices(options: Sequence[Sequence[tuple[int, float]]], budget: int
                     ) -> Optional[list[int]]:
  """Exact 0/1 multiple-choice knapsack: one option per item, least summed loss, cost <= budget.

  Dynamic programme over integer budget units. Deterministic: among options reaching the same
  state with the same loss the earlier option is kept, and among equal best totals the
  smallest total cost is returned; an option with a strictly lower loss always wins a tie in
  cost.

  Args:
    options: per item, (cost in budget units >= 0, loss) per option.
    budget: budget in the same units.

  Returns:
    The chosen option index per item, or None when no choice fits the budget.
  """
  budget = int(budget)
  if budget < 0:
    return None
  best = np.full(budget + 1, np.inf)
  best[0] = 0.0
  choices = np.zeros((len(options), budget + 1), np.int16)
  for k, row in enumerate(options):
    new = np.full(budget + 1, np.inf)
    for ci, (cost, loss) in enumerate(row):
      cost = int(cost)
      if cost > budget:
        continue
      shifted = np.full(budget + 1, np.inf)
      shifted[cost:] = best[:budget + 1 - cost] + loss
      better = shifted < new
      new[better] = shifted[better]
      choices[k][better] = ci
    best = new
  if not np.isfinite(best).any():
    return None
  b = int(np.argmin(best))
  out = [0] * len(options)
  for k in range(len(options) - 1, -1, -1):
    ci = int(choices[k][b])
    out[k] = ci
    b -= int(options[k][ci][0])
  return out


def knapsack_ratios(table: Mapping[str, Mapping[str, float]], sizes: Mapping[str, int],
                    param_ratio: float, candidates: Sequence[float],
                    unit: Optional[int] = None) -> dict[str, float]:
  """One candidate ratio per matrix minimizing the summed sensitivity under the budget.

  Exact dynamic programme over budget units (costs rounded up, so the choice never exceeds
  the budget): cost of ratio c for an n-number matrix is c * n (1.0 = dense, KL 0).

  Args:
    table: path -> {ratio_key(c): KL} (from `measure`).
    sizes: path -> dense numbers of the matrix.
    param_ratio: target stored / dense over all the matrices in `sizes`.
    candidates: the ratios to choose from (each must be measured in `table`, or 1.0).
    unit: budget granularity in numbers (default: total / 100,000, at least 1).

  Returns:
    Path -> chosen ratio.
  """
  paths = sorted(sizes)
  missing = [p for p in paths if p not in table]
  if missing:
    raise ValueError(f"sensitivity table has no row for {missing[:3]} ({len(missing)} "
                     "matrices); measure them first")
  cands = sorted({float(c) for c in candidates})
  total = sum(int(sizes[p]) for p in paths)
  unit = unit or max(1, total // 100_000)
  budget = int(math.floor(param_ratio * total / unit))
  # Per matrix and candidate: (cost in budget units, KL), shared by the DP and the backtrack.
  options = []
  for p in paths:
    row = []
    for c in cands:
      if c < 1.0 and ratio_key(c) not in table[p]:
        raise ValueError(f"sensitivity table row {p} has no ratio {ratio_key(c)}; measured: "
                         f"{sorted(table[p])}")
      loss = 0.0 if c >= 1.0 else float(table[p][ratio_key(c)])
      row.append((int(math.ceil(c * sizes[p] / unit)), loss))
    options.append(row)
  picked = knapsack_choices(options, budget)
  if picked is None:
    raise ValueError(f"param_ratio={param_ratio} is below the smallest candidate "
                     f"{cands[0]}: no choice of sensitivity_candidates fits the budget")
  return {p: cands[ci] for p, ci in zip(paths, picked)}
