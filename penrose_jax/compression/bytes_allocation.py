"""One allocator under a bytes budget: per matrix a storage candidate, from measured logit KL.

What llama.cpp's importance-matrix mixes and EXL2 do, on this repo's machinery:
  1. a menu of candidates per matrix (compression.candidates: 'gptq:int3', 'gptq:int4',
     'gptq:int3+r16', 'lowrank0.8:int8', ...), each with the exact stored bytes of its built
     leaf (`leaf.nbytes()`, checked against the shape-only `candidates.nbytes`);
  2. a sensitivity table per candidate: every selected matrix replaced alone by that
     candidate (the rest of the model dense), logit KL to the dense model on a few calibration
     windows (`sensitivity.measure_replacements`, the pass of budget_scope 'sensitivity');
  3. an exact multiple-choice knapsack (`sensitivity.knapsack_choices`) minimising the summed
     KL with stored bytes <= bytes_ratio x the float32 bytes of the selected matrices.

GPTQ candidates are measured with GPTQ itself, not RTN as a proxy. The Hessian is the Gram of
the *dense* model's calibration inputs, which the pass computes anyway for whitening. The
final compress uses the sequential Grams of the already-compressed layers. RTN was rejected as
a proxy because GPTQ changes the KL by a factor, not an offset: on SmolLM2 int4 it took the
logit KL from 0.417 to 0.099 (results/sweep_bytes/reading.md). An RTN-measured GPTQ entry
would compete against other candidates at about four times its real cost, and whether GPTQ
helps a matrix depends on its Hessian, so the ranking can change too. The cost is one GPTQ per
bit width and matrix (corrections reuse the rounded leaf): about 10 s per SmolLM2 layer for
the whole default menu (GPTQ int3 / int4 / int8 and a rank-16 correction, timed on random
matrices of its shapes on the 2-core machine under load), ~5 min per model, next to ~35 min
for the KL forwards (7 matrices x 4 candidates per layer, each through the rest of the model). 'rtn:' candidates stay available where their own KL is what is wanted.

Approximations, documented: KLs are treated as additive (as for the param knapsack); the
knapsack works in budget units of `unit` bytes (default float32 bytes / 1,000,000) with each
matrix's cost rounded *up*, so the chosen plan never exceeds the budget and loses at most one
unit per matrix of it (SmolLM2: 210 x 425 bytes = 0.02 % of the float32 bytes). Ties are broken
deterministically (earlier candidate in the menu on equal cost and KL; the smallest total cost
among equal best KL sums).

Tables are cached per candidate (`cache_file`): another menu or bytes_ratio measures only the
candidates it has not seen on the same model, calibration and key fields.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from penrose_jax.compression import candidates as candidates_lib
from penrose_jax.compression import sensitivity, streaming
from penrose_jax.compression.transform import CompressionConfig
from penrose_jax.models.config import ModelConfig
from penrose_jax.reporting import plots, report_json
from penrose_jax.reporting.stage_timer import StageTimer, maybe_stage

# CompressionConfig fields a candidate's KL depends on (with the model, calibration, windows).
KEY_FIELDS = ("include", "exclude", "whiten", "damping", "svd_method", "min_rank", "group_size",
              "gptq_damping", "gptq_natural_order", "gptq_clip_grid")
_FORMAT = 1
FLOAT32_BYTES = 4

# One candidate's measured table: {'kl': path -> KL, 'bytes': path -> stored bytes,
# 'shape': path -> [in, out]}.
CandidateTable = dict[str, dict[str, Any]]


def table_key(model: str, calibration: Mapping[str, Any], cfg: CompressionConfig,
              windows: int) -> str:
  """Hash of what a candidate's KL table depends on (the candidate names its own file).

  Args:
    model: the model spec of the config.
    calibration: the calibration section as a plain dict.
    cfg: compression config.
    windows: measured windows.

  Returns:
    A 20-character hex key.
  """
  fields = {name: getattr(cfg, name) for name in KEY_FIELDS}
  blob = json.dumps({"format": _FORMAT, "model": model, "calibration": dict(calibration),
                     "compression": fields, "windows": windows}, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_file(directory: str | pathlib.Path, key: str, cand: candidates_lib.Candidate
               ) -> pathlib.Path:
  """DIRECTORY/bytes_kl_<key>_<candidate>.json (':' written as '-')."""
  return pathlib.Path(directory) / f"bytes_kl_{key}_{cand.key.replace(':', '-')}.json"


def measure(read_layer: Callable[[int], Any], globals_: Mapping[str, Any], x0: np.ndarray,
            cfg: CompressionConfig, fns: streaming.StreamFunctions, model_config: ModelConfig,
            cands: Sequence[candidates_lib.Candidate], windows: int,
            progress: Callable = lambda it, **_: it) -> dict[str, CandidateTable]:
  """Logit KL and stored bytes of every selected matrix replaced alone by each candidate.

  Args:
    read_layer: i -> dense 'layers_i' params.
    globals_: embedding / final norm / LM head params.
    x0: (N, T, D) calibration embeddings (Grams over all N windows).
    cfg: compression config (include / exclude, group_size, gptq_*, whiten, damping ...).
    fns: `streaming.StreamFunctions`.
    model_config: the architecture.
    cands: the candidates to measure.
    windows: calibration windows the KL is measured on.
    progress: tqdm-like wrapper of the layer loop.

  Returns:
    Candidate key -> its table.

  Raises:
    RuntimeError: when a built leaf's bytes differ from `candidates.nbytes` of its shape (the
      allocator relies on bytes depending on the shape only).
  """
  def replacements(path, w, gram):
    for cand, leaf, _ in candidates_lib.build_all(w, cands, gram, cfg):
      size = int(leaf.nbytes())
      expected = candidates_lib.nbytes(w.shape, cand, cfg)
      if size != expected:
        raise RuntimeError(f"{path} as {cand.key}: built leaf stores {size} bytes, the shape "
                           f"accounting says {expected}")
      yield cand.key, np.asarray(leaf.materialize_host(), np.float32), size

  with_grams = any(c.needs_gram(cfg.whiten) for c in cands)
  table, extra = sensitivity.measure_replacements(read_layer, globals_, x0, cfg, fns,
                                                  model_config, windows, replacements,
                                                  with_grams, progress)
  return {c.key: {"kl": {p: row[c.key] for p, row in table.items()},
                  "bytes": {p: extra[p]["info"][c.key] for p in table},
                  "shape": {p: extra[p]["shape"] for p in table}} for c in cands}


def allocate(tables: Mapping[str, CandidateTable], shapes: Mapping[str, Sequence[int]],
             bytes_ratio: float, menu: Sequence[str], unit: Optional[int] = None
             ) -> dict[str, Any]:
  """One candidate per matrix minimising the summed KL with stored bytes within the budget.

  Args:
    tables: candidate key -> {'kl': path -> KL, 'bytes': path -> bytes} (from `measure`).
    shapes: path -> (in, out) of every matrix to allocate.
    bytes_ratio: budget = floor(bytes_ratio x float32 bytes of these matrices).
    menu: the candidate keys to choose from (each must be in `tables`), in menu order.
    unit: budget granularity in bytes (default float32 bytes // 1,000,000, at least 1).

  Returns:
    {'choices': path -> key, 'bytes_ratio_target', 'bytes_budget', 'bytes_dense' (float32), 'bytes_planned',
     'bytes_ratio_planned', 'kl_planned' (summed KL), 'counts': key -> matrices, 'unit'}.
  """
  paths = sorted(shapes)
  dense = FLOAT32_BYTES * sum(int(np.prod(shapes[p])) for p in paths)
  budget = int(math.floor(bytes_ratio * dense))
  unit = int(unit or max(1, dense // 1_000_000))
  options = []
  for p in paths:
    row = []
    for key in menu:
      if key not in tables or p not in tables[key]["kl"]:
        raise ValueError(f"bytes allocation: no measured KL of {p} as {key!r}; measure it first")
      # KL >= 0: a slightly negative measurement is float noise of a near-exact candidate.
      row.append((int(math.ceil(tables[key]["bytes"][p] / unit)),
                  max(0.0, float(tables[key]["kl"][p]))))
    options.append(row)
  picked = sensitivity.knapsack_choices(options, budget // unit)
  if picked is None:
    least = sum(min(tables[k]["bytes"][p] for k in menu) for p in paths)
    raise ValueError(f"config.bytes_ratio={bytes_ratio} is below what the candidates "
                     f"{list(menu)} can reach: at least {least / dense:.4f} of the float32 bytes")
  choices = {p: menu[ci] for p, ci in zip(paths, picked)}
  planned = sum(tables[k]["bytes"][p] for p, k in choices.items())
  counts = {k: sum(1 for c in choices.values() if c == k) for k in menu}
  return {"choices": choices, "bytes_ratio_target": bytes_ratio, "bytes_budget": budget,
          "bytes_dense": dense,
          "bytes_planned": int(planned), "bytes_ratio_planned": planned / dense,
          "kl_planned": float(sum(max(0.0, tables[k]["kl"][p]) for p, k in choices.items())),
          "counts": counts, "unit": unit}


def check_reachable(shapes: Mapping[str, Sequence[int]],
                    cands: Sequence[candidates_lib.Candidate], cfg: CompressionConfig,
                    bytes_ratio: float) -> None:
  """Fails before any measurement when even the smallest candidates exceed the budget.

  Args:
    shapes: path -> (in, out).
    cands: the menu.
    cfg: compression config (group_size, min_rank, svd_method).
    bytes_ratio: the target.
  """
  dense = FLOAT32_BYTES * sum(int(np.prod(s)) for s in shapes.values())
  least = sum(min(candidates_lib.nbytes(s, c, cfg) for c in cands) for s in shapes.values())
  if least > bytes_ratio * dense:
    raise ValueError(f"config.bytes_ratio={bytes_ratio} is below what config.bytes_candidates "
                     f"{[c.key for c in cands]} can reach: at least {least / dense:.4f} of the "
                     "float32 bytes; raise bytes_ratio or add a smaller candidate")


def choose(read_layer: Callable[[int], Any], globals_: Mapping[str, Any], x0: np.ndarray,
           cfg: CompressionConfig, fns: streaming.StreamFunctions, model_config: ModelConfig,
           stream_dir: pathlib.Path, cache_dir: Optional[pathlib.Path], key: str,
           timer: Optional[StageTimer] = None, progress: Callable = lambda it, **_: it
           ) -> dict[str, Any]:
  """The per-matrix choices of a streaming compress run (measured once, reused on resume).

  Candidate tables are read from STREAM_DIR/bytes_kl/ (this run) or `cache_dir` (a sweep's
  shared cache), and only the missing candidates are measured; the plan is written to
  STREAM_DIR/bytes_choices.json and reused when the run resumes.

  Args:
    read_layer: i -> dense 'layers_i' params.
    globals_: embedding / final norm / LM head params.
    x0: calibration embeddings.
    cfg: compression config with bytes_ratio > 0.
    fns: `streaming.StreamFunctions`.
    model_config: the architecture.
    stream_dir: the run's stream folder.
    cache_dir: shared cache folder, or None.
    key: `table_key(...)` of the run.
    timer: optional StageTimer ('sensitivity' stage for the measurement).
    progress: tqdm-like wrapper.

  Returns:
    `allocate`'s dict plus 'kl' / 'bytes' (path -> {key: value}), 'numbers' (path -> dense
    numbers) and 'reused_from'.
  """
  cands = candidates_lib.parse_all(cfg.bytes_candidates)
  windows = cfg.sensitivity_windows or sensitivity.DEFAULT_WINDOWS
  layers = [read_layer(i) for i in range(model_config.num_layers)]
  shapes = {path: tuple(int(s) for s in np.shape(kernel))
            for i, layer in enumerate(layers)
            for path, _, kernel in streaming.selected_kernels(f"layers_{i}", layer, cfg)}
  check_reachable(shapes, cands, cfg, cfg.bytes_ratio)
  own = stream_dir / "bytes_kl"
  tables, reused = {}, []
  for cand in cands:
    for directory in (own, cache_dir):
      file = None if directory is None else cache_file(directory, key, cand)
      if file is not None and file.exists():
        tables[cand.key] = json.loads(file.read_text())
        if directory != own:
          reused.append(str(file))
        break
  missing = [c for c in cands if c.key not in tables]
  if missing:
    with maybe_stage(timer, "sensitivity"):
      measured = measure(lambda i: layers[i], globals_, x0, cfg, fns, model_config, missing,
                         windows, progress)
    for cand in missing:
      tables[cand.key] = measured[cand.key]
      for directory in (own, cache_dir):
        if directory is not None:
          pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
          report_json.write_json_atomic(cache_file(directory, key, cand), measured[cand.key])
  del layers
  plan_path = stream_dir / "bytes_choices.json"
  if plan_path.exists():
    plan = json.loads(plan_path.read_text())
  else:
    plan = allocate(tables, shapes, cfg.bytes_ratio, [c.key for c in cands])
    report_json.write_json_atomic(plan_path, plan)
  return {**plan, "reused_from": reused,
          "numbers": {p: int(np.prod(s)) for p, s in shapes.items()},
          "kl": {p: {k: tables[k]["kl"][p] for k in tables} for p in shapes},
          "bytes": {p: {k: tables[k]["bytes"][p] for k in tables} for p in shapes}}


def report(plan: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The report's 'bytes_allocation' section: the plan and what the built leaves store.

  Args:
    plan: from `choose`.
    rows: the run's per-matrix rows (with 'bytes', 'bytes_dense', 'choice').

  Returns:
    The plan plus 'bytes_built', 'bytes_ratio_achieved' (stored /
    float32 bytes of the matrices) and 'bytes_mismatch' (paths whose built bytes differ from
    the plan's; empty when the accounting agrees).
  """
  built = sum(int(r["bytes"]) for r in rows)
  dense = sum(int(r["bytes_dense"]) for r in rows)
  mismatch = [r["name"] for r in rows if "choice" in r
              and int(r["bytes"]) != plan["bytes"][r["name"]][r["choice"]]]
  return {**plan, "bytes_built": built, "bytes_ratio_achieved": built / dense if dense else None, "bytes_mismatch": mismatch}


def plot_choices(plan: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path:
  """Heatmap of the stored bits per weight chosen per matrix type (rows) and layer (columns).

  Args:
    plan: from `choose` ('choices', 'bytes').
    path: destination PNG.

  Returns:
    The PNG path.
  """
  choices = plan["choices"]
  layer_of = {p: int(p.split("/")[0].split("_")[1]) for p in choices}
  kind_of = {p: p.split("/", 1)[1].rsplit("/", 1)[0] for p in choices}
  kinds = sorted(set(kind_of.values()))
  grid = np.full((len(kinds), max(layer_of.values()) + 1), np.nan)
  for p, key in choices.items():
    grid[kinds.index(kind_of[p]), layer_of[p]] = 8.0 * plan["bytes"][p][key] / plan["numbers"][p]
  return plots.heatmap(grid, path, "stored bits per weight chosen per matrix (bytes allocator)",
                       "layer", "matrix", row_labels=kinds)
