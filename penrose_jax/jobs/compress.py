"""The `compress` job: stream a model layer by layer into a compressed checkpoint + report.

Workdir layout:
  model/            the compressed model checkpoint folder (params/<key> per layer, tokenizer,
                    model.json written last), loadable by evaluate / generate / align / qa_tune
  stream/           resume state: state.json, ranks.json (global allocation), acts_<i>.npy
                    (calibration activations entering layer i)
  report.json       params, bytes (+ source_bytes: the same matrices in the model's own GGUF
                    file), perplexities, hidden KL, per-matrix rows, wall time, peak RSS
  tiling_*.png      pictures of a few matrices' tilings, tiles coloured by rank
  bytes_choices.png with compression.bytes_ratio: bits per weight chosen per matrix (the plan
                    and per-candidate KL tables are stream/bytes_choices.json, stream/bytes_kl/)

Parallelism: `config.parallel` (penrose_jax.parallel) builds the mesh at start-up; each layer's
params are placed on it with the sharding rules (the jitted block forward / Gram passes follow
them), the numpy SVD work stays on the host, and the evaluation's params and token batches are
sharded (params by the rules, batches over the data axes).

A killed run resumes at the first unfinished layer: each layer's part is written, then the
activations it produced, then state.json (atomically), so a restart never pairs a layer with the
wrong inputs, and the final checkpoint equals an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import resource
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from penrose_jax import parallel
from penrose_jax.alignment import losses
from penrose_jax.compression import bytes_allocation, sensitivity, spectra_cache, streaming
from penrose_jax.compression.tiling_plot import render_tiling_png
from penrose_jax.compression.transform import as_compression_config, summarize_rows
from penrose_jax.data import text_sources
from penrose_jax.evaluation import perplexity
from penrose_jax.io import model_registry
from penrose_jax.jobs import config_checks
from penrose_jax.jobs import workdir as workdir_guard
from penrose_jax.models import llama
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import plots, report_json, workdir_layout
from penrose_jax.reporting.stage_timer import StageTimer


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB).

  Returns:
    MiB.
  """
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def calibration_tokens(config: ml_collections.ConfigDict, tokenizer: Any
                       ) -> tuple[np.ndarray, list[str], list[str]]:
  """Calibration windows from the configured sources that exist (missing ones are skipped).

  Args:
    config: the job config (calibration.sources, num_windows, window, seed).
    tokenizer: TextTokenizer.

  Returns:
    (tokens (N, T), sources used, skipped messages).
  """
  cal = config.calibration
  return text_sources.windows_from_existing_sources(cal.sources, tokenizer, cal.num_windows,
                                                    cal.window, cal.seed, what="calibration")


def _hidden_divergence(dense: Any, compressed: Any, config: Any, windows: np.ndarray
                       ) -> dict[str, Any]:
  fwd = jax.jit(lambda p, t: llama.forward(p, t, config, return_hidden=True))
  windows = parallel.place_batch(windows)
  a, b = fwd(dense, windows), fwd(compressed, windows)
  per_layer, _ = losses.hidden_kl_per_layer(a.hidden_states, b.hidden_states)
  # Relative hidden-state error per layer, mean over tokens of ||h_c - h_d|| / ||h_d||: the
  # feature-softmax KL saturates (values below ~1e-6 are float noise), this does not.
  def relative_error(h_d, h_c):  # (L, B, T, D) twice -> (L,), mean over windows and tokens
    num = jax.numpy.linalg.norm((h_c - h_d).astype(jax.numpy.float32), axis=-1)
    den = jax.numpy.linalg.norm(h_d.astype(jax.numpy.float32), axis=-1)
    return jax.numpy.mean((num / jax.numpy.maximum(den, 1e-12)).reshape(num.shape[0], -1),
                          axis=1)
  rel = jax.jit(relative_error)(a.hidden_states, b.hidden_states)
  return {"hidden_kl": float(losses.hidden_kl(a.final_hidden, b.final_hidden)),
          "hidden_kl_per_layer": [float(v) for v in per_layer],
          "hidden_rel_error_per_layer": [float(v) for v in np.asarray(jax.device_get(rel))],
          "logit_kl": float(losses.logit_kl(a.logits, b.logits))}


def _dense_ppl_cached(cache_file: Optional[pathlib.Path], key: dict, compute) -> float:
  """The dense model's perplexity on one window set, from a JSON cache shared by sweep runs.

  Args:
    cache_file: JSON file of {key: ppl} (None = no cache, always compute).
    key: what the perplexity depends on (model, text set spec, windows).
    compute: () -> ppl.

  Returns:
    The perplexity.
  """
  text = json.dumps(key, sort_keys=True)
  cache = {}
  if cache_file is not None and cache_file.exists():
    try:
      cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except ValueError:
      cache = {}  # a torn cache is only a cache: measure again
  if text not in cache:
    cache[text] = compute()
    if cache_file is not None:
      report_json.write_json_atomic(cache_file, cache)
  return float(cache[text])


def evaluate_pair(config: ml_collections.ConfigDict, dense: Any, compressed: Any,
                  model_config: Any, tokenizer: Any,
                  dense_cache: Optional[pathlib.Path] = None) -> dict[str, Any]:
  """Perplexity of dense and compressed models per text set, and their hidden-state KL.

  Args:
    config: the job config (eval section).
    dense: dense params.
    compressed: compressed params.
    model_config: the architecture.
    tokenizer: TextTokenizer.
    dense_cache: optional JSON file caching the dense perplexities (a sweep's runs share
      the dense model and windows).

  Returns:
    ppl_dense / ppl_compressed (eval.primary, else the first available set), *_by_set dicts, hidden_kl (final
    hidden states), hidden_kl_per_layer, logit_kl, skipped.
  """
  ev = config.eval
  out: dict[str, Any] = {"ppl_dense_by_set": {}, "ppl_compressed_by_set": {}, "skipped": []}
  kl_windows = None
  for name, spec in text_sources.selected_text_sets(ev.text_sets,
                                                     ev.get("skip_text_sets", "")).items():
    if not text_sources.source_path(spec).exists():
      out["skipped"].append(f"eval text set {name}: {text_sources.source_path(spec)} not found")
      continue
    # Both models score the same windows: the reading half of perplexity.text_set_perplexities.
    scored = perplexity.text_set_windows(tokenizer, spec, ev.window, ev.max_windows or None)
    windows = scored.windows
    out.setdefault("eval_windows", {})[name] = scored.picks
    out["ppl_dense_by_set"][name] = _dense_ppl_cached(
        dense_cache, {"model": config.model, "spec": spec, "window": ev.window,
                      "max_windows": ev.max_windows, "picks": out["eval_windows"][name]},
        lambda: perplexity.perplexity(dense, model_config, windows, ev.batch_size)["ppl"])
    out["ppl_compressed_by_set"][name] = perplexity.perplexity(compressed, model_config, windows,
                                                               ev.batch_size)["ppl"]
    if kl_windows is None:
      full = [w for w in windows if len(w) == ev.window][:ev.hidden_kl_windows]
      kl_windows = np.asarray(full, np.int32) if full else None
  sets = list(out["ppl_dense_by_set"])
  if ev.primary in sets:  # the headline ppl_dense / ppl_compressed come from this set
    sets.remove(ev.primary)
    sets.insert(0, ev.primary)
  out["eval_set"] = sets[0] if sets else None
  out["ppl_dense"] = out["ppl_dense_by_set"][sets[0]] if sets else None
  out["ppl_compressed"] = out["ppl_compressed_by_set"][sets[0]] if sets else None
  if kl_windows is not None:
    out.update(_hidden_divergence(dense, compressed, model_config, kl_windows))
  return out


class _State:
  """Resume state of the streaming job (stream/state.json, rewritten atomically)."""

  def __init__(self, directory: pathlib.Path, fingerprint: str):
    self.path = directory / "state.json"
    self.values = {"fingerprint": fingerprint, "next_layer": 0, "rows": [], "layouts": {}}
    if self.path.exists():
      stored = json.loads(self.path.read_text())
      if stored.get("fingerprint") != fingerprint:
        raise ValueError(f"{self.path}: workdir holds a run with a different model or "
                         "compression/calibration config; use a fresh --workdir")
      self.values = stored

  def save(self) -> None:
    report_json.write_json_atomic(self.path, self.values)


def sensitivity_ratios(config: ml_collections.ConfigDict, cfg: Any, source: Any,
                       globals_: Any, x0: np.ndarray, fns: streaming.StreamFunctions,
                       stream_dir: pathlib.Path, cache_dir: Optional[pathlib.Path],
                       timer: StageTimer) -> dict[str, Any]:
  """Per-matrix ratios of budget_scope 'sensitivity' (measured once, reused on resume).

  Args:
    config: the compress config.
    cfg: its CompressionConfig.
    source: the model's LayerStream.
    globals_: embedding / final norm / LM head params.
    x0: calibration embeddings.
    fns: jitted block functions.
    stream_dir: the run's stream folder (sensitivity.json and matrix_ratios.json go there).
    cache_dir: a sweep's shared cache folder: the table depends on the model, calibration,
      factoring fields (with `sensitivity_tiling` as the tiling) and candidates, not on
      param_ratio, so runs at other ratios (or other tilings measured as 'single') reuse it.
    timer: StageTimer ('sensitivity' stage).

  Returns:
    {'ratios': path -> ratio, 'table': path -> {ratio: KL}, 'reused_from': cache file or ''}.
  """
  ratios_path = stream_dir / "matrix_ratios.json"
  cands, windows = sensitivity.settings(cfg)
  if cfg.sensitivity_tiling:
    cfg = dataclasses.replace(cfg, tiling=cfg.sensitivity_tiling)  # the measured layout
  key = spectra_cache.cache_key(config.model, config.calibration.to_dict(), cfg)
  name = f"sensitivity_{key}_{'-'.join(sensitivity.ratio_key(c) for c in cands)}_w{windows}.json"
  cache_file = None if cache_dir is None else pathlib.Path(cache_dir) / name
  table_path = stream_dir / "sensitivity.json"
  reused = ""
  for candidate in (table_path, cache_file):
    if candidate is not None and candidate.exists():
      stored = json.loads(candidate.read_text())
      reused = "" if candidate == table_path else str(candidate)
      break
  else:
    with timer.stage("sensitivity"):
      table, sizes = sensitivity.measure(source.read_layer, globals_, x0, cfg, fns,
                                         source.config, cands, windows, progress=tqdm)
    stored = {"table": table, "sizes": sizes, "candidates": list(cands), "windows": windows}
    for target in (table_path, cache_file):
      if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        report_json.write_json_atomic(target, stored)
  if ratios_path.exists():
    ratios = json.loads(ratios_path.read_text())
  else:
    ratios = sensitivity.knapsack_ratios(stored["table"], stored["sizes"], cfg.param_ratio,
                                         cands)
    report_json.write_json_atomic(ratios_path, ratios)
  return {"ratios": ratios, "table": stored["table"], "reused_from": reused}


def plot_sensitivity_ratios(ratios: dict[str, float], path: pathlib.Path) -> pathlib.Path:
  """Heatmap of the chosen ratio per matrix type (rows) and layer (columns).

  Args:
    ratios: 'layers_i/group/name/kernel' -> ratio.
    path: destination PNG.

  Returns:
    The PNG path.
  """
  layer_of = {p: int(p.split("/")[0].split("_")[1]) for p in ratios}
  kinds = sorted({p.split("/", 1)[1].rsplit("/", 1)[0] for p in ratios})
  grid = np.full((len(kinds), max(layer_of.values()) + 1), np.nan)
  for p, r in ratios.items():
    grid[kinds.index(p.split("/", 1)[1].rsplit("/", 1)[0]), layer_of[p]] = r
  return plots.heatmap(grid, path, "ratio chosen per matrix (sensitivity knapsack)", "layer",
                       "matrix", row_labels=kinds)


@workdir_guard.claims_workdir("compress")
def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
        spectra_cache_dir: str | pathlib.Path | None = None,
        dense_eval_cache: str | pathlib.Path | None = None) -> dict[str, Any]:
  """Compresses config.model layer by layer and writes the checkpoint and report.

  Args:
    config: see configs/compress.py.
    workdir: output folder (a rerun with the same config resumes).
    spectra_cache_dir: optional folder of pass-1 spectra (`compression.spectra_cache`): a run
      whose model, calibration and spectra-relevant compression fields match a cached file
      skips pass 1 (the sweep job passes DIR/spectra_cache); None = always compute.
    dense_eval_cache: optional JSON file of the dense model's perplexities per window set
      (the sweep passes DIR/dense_eval_cache.json); None = always measure.

  Returns:
    The report dict.
  """
  start = time.time()
  timer = StageTimer()  # this process's seconds per stage (a resumed run counts its own part)
  mesh, rules, data_axes = parallel.setup_for_job(config)
  # The host SVD reads whole kernels: on several processes keep layers replicated (readable).
  layer_rules = rules if jax.process_count() == 1 else parallel.REPLICATED_RULES
  cfg = as_compression_config(config.compression)  # validates before any work
  workdir = pathlib.Path(workdir)
  stream_dir, model_dir = workdir / workdir_layout.COMPRESS_STREAM_DIR, workdir / "model"
  stream_dir.mkdir(parents=True, exist_ok=True)
  with timer.stage("load"):
    source = model_registry.open_stream(config.model, cache_dir=workdir / "model_cache")
  mcfg = source.config
  config_checks.check_context(config, mcfg.max_position, source.name)
  fingerprint = json.dumps({"model": config.model, "compression": config.compression.to_dict(),
                            "calibration": config.calibration.to_dict()}, sort_keys=True)
  state = _State(stream_dir, fingerprint)
  with timer.stage("load"):
    globals_ = source.read_globals()
  with timer.stage("write"):
    for key, subtree in globals_.items():
      if not model_registry.has_params_part(model_dir, key):
        model_registry.save_params_part(model_dir, key, subtree)
  fns = streaming.StreamFunctions(mcfg)
  needs_acts = streaming.needs_activations(cfg)
  skipped: list[str] = []
  calib_used: list[str] = []
  x0 = None
  by_sensitivity = (cfg.budget_scope == "sensitivity" and cfg.method == "tiled"
                    and not cfg.bytes_ratio)  # bytes_ratio: the bytes allocator chooses
  if needs_acts or streaming.needs_global_pass(cfg) or by_sensitivity or cfg.bytes_ratio:
    with timer.stage("calibrate"):
      tokens, calib_used, skipped = calibration_tokens(config, source.tokenizer)
      x0 = np.asarray(llama.embed_tokens(globals_, tokens), np.float32)
  sens = None
  if by_sensitivity:
    shared = None if spectra_cache_dir is None else pathlib.Path(spectra_cache_dir)
    sens = sensitivity_ratios(config, cfg, source, globals_, x0, fns, stream_dir, shared, timer)
  alloc = None
  if cfg.bytes_ratio:  # per-matrix candidates under a bytes budget (compression.bytes_allocation)
    alloc = bytes_allocation.choose(
        source.read_layer, globals_, x0, cfg, fns, mcfg, stream_dir,
        None if spectra_cache_dir is None else pathlib.Path(spectra_cache_dir),
        bytes_allocation.table_key(config.model, config.calibration.to_dict(), cfg,
                                   cfg.sensitivity_windows or sensitivity.DEFAULT_WINDOWS),
        timer, tqdm)
  global_keys = sorted(globals_)
  del globals_  # embeddings / LM head are written already; streaming holds one layer only
  ranks = None
  spectra_reused = ""
  ranks_path = stream_dir / "ranks.json"
  if streaming.needs_global_pass(cfg):
    if ranks_path.exists():
      ranks = json.loads(ranks_path.read_text())
    else:
      def read_timed(i):
        with timer.stage("pass1_load"):
          return source.read_layer(i)
      cache_file = None if spectra_cache_dir is None else spectra_cache.cache_path(
          spectra_cache_dir, spectra_cache.cache_key(config.model, config.calibration.to_dict(),
                                                     cfg))
      if cache_file is not None and cache_file.exists():
        with timer.stage("pass1_load"):
          spectra = spectra_cache.load(cache_file)
        spectra_reused = str(cache_file)
      else:
        layers = ((f"layers_{i}", read_timed(i)) for i in
                  tqdm(range(mcfg.num_layers), desc="pass 1: spectra", unit="layer"))
        spectra = streaming.scan_spectra(layers, x0, cfg, fns, timer)
        if cache_file is not None:
          spectra_cache.save(cache_file, spectra)
      ranks = streaming.allocate_global_ranks(spectra, cfg.param_ratio, cfg.min_rank,
                                               cfg.budget_scope)
      report_json.write_json_atomic(ranks_path, ranks)
  first = state.values["next_layer"]
  x = None
  if needs_acts:
    x = x0 if first == 0 else np.load(stream_dir / f"acts_{first}.npy")
  pictures = [p.strip() for p in config.tiling_pictures.split(",") if p.strip()]
  rss_after_layer: dict[str, float] = {}  # peak RSS so far after each layer (memory profile)
  for i in tqdm(range(first, mcfg.num_layers), desc="compress", unit="layer",
                initial=first, total=mcfg.num_layers):
    key = f"layers_{i}"
    with timer.stage("load"):
      layer = parallel.shard_params({key: source.read_layer(i)}, mesh, layer_rules)[key]
    new_layer, approx_layer, rows, layouts = streaming.compress_layer(
        key, layer, x, cfg, fns, ranks, timer, None if sens is None else sens["ratios"],
        None if alloc is None else alloc["choices"])
    with timer.stage("write"):
      model_registry.save_params_part(model_dir, key, new_layer)
    if needs_acts:
      with timer.stage("calibrate"):
        # Sequential calibration (default): the next layer is whitened on the inputs the
        # compressed model really gives it; sequential=False feeds the dense layer's outputs.
        sequential = config.calibration.get("sequential", True)
        x = fns.forward(approx_layer if sequential else layer, x)
      with timer.stage("write"):
        report_json.write_file_atomic(stream_dir / f"acts_{i + 1}.npy",
                                      lambda handle: np.save(handle, x))
    state.values["rows"].extend(rows)
    for path in pictures:
      if path in layouts:
        state.values["layouts"][path] = layouts[path][1]
    state.values["next_layer"] = i + 1
    state.save()
    rss_after_layer[key] = round(peak_rss_mib(), 1)
    if needs_acts and (stream_dir / f"acts_{i}.npy").exists():
      os.unlink(stream_dir / f"acts_{i}.npy")
    # Drop this layer before reading the next: otherwise two layers (dense, compressed and
    # materialized copies) are alive while layer i + 1 loads and factors.
    del layer, new_layer, approx_layer
  keys = global_keys + [f"layers_{i}" for i in range(mcfg.num_layers)]
  with timer.stage("write"):
    model_registry.finish_model_checkpoint(
        model_dir, mcfg, source.tokenizer, keys,
        provenance={"name": f"{source.name} compressed ({cfg.method}, {cfg.tiling}, "
                            f"ratio {cfg.param_ratio})", "source_model": config.model,
                    "compression": config.compression.to_dict()})
  rows = state.values["rows"]
  metrics: dict[str, Any] = {**summarize_rows(rows), "calibration_sources": calib_used,
                             "calibration_windows": 0 if x0 is None else int(x0.shape[0]),
                             "spectra_reused_from": spectra_reused}
  # The honest reference: the same matrices as stored in the model's own file (a Q4_1 GGUF
  # for the default model), next to bytes_dense (float32) and bytes_compressed.
  with timer.stage("load"):
    source_file = model_registry.source_bytes(config.model, [r["name"] for r in rows])
  if source_file is not None:
    metrics.update({"source_bytes": source_file["bytes"], "source_types": source_file["types"],
                    "source_file": source_file["file"],
                    "source_file_size": source_file["file_size"]})
  if sens is not None:
    metrics["sensitivity"] = {"matrix_ratios": sens["ratios"], "kl": sens["table"],
                              "reused_from": sens["reused_from"]}
    with timer.stage("plot"):
      plot_sensitivity_ratios(sens["ratios"], workdir / "sensitivity_ratios.png")
  if alloc is not None:
    metrics["bytes_allocation"] = bytes_allocation.report(alloc, rows)
    metrics["bytes_ratio_achieved"] = metrics["bytes_allocation"]["bytes_ratio_achieved"]
    with timer.stage("plot"):
      bytes_allocation.plot_choices(alloc, workdir / "bytes_choices.png")
  picture_files = []
  for path, tile_ranks in state.values["layouts"].items():
    row = next(r for r in rows if r["name"] == path)
    tiling = streaming.tiling_for(path, tuple(row["shape"]), cfg)
    file = workdir / f"tiling_{path.replace('/', '_')}.png"
    with timer.stage("plot"):
      render_tiling_png(tiling, str(file), tile_ranks, title=f"{path} ({cfg.tiling}, ranks)")
    picture_files.append(file.name)
  metrics["tiling_pictures"] = picture_files
  if config.eval.enabled:
    with timer.stage("eval"):
      dense = model_registry.load(config.model, cache_dir=workdir / "model_cache")
      compressed = model_registry.load(str(model_dir))
      # Evaluate the compressed values through the dense structure: one compiled forward
      # serves both models (the compressed tree's ~3,400 arrays compiled anew for every
      # forward variant: 400 of the demo's 546 s were this evaluation before).
      compressed_dense = dense_equivalent(compressed.params)
    with timer.stage("eval"), parallel.batch_placement(mesh, data_axes):
      evaluated = evaluate_pair(config, parallel.shard_params(dense.params, mesh, rules),
                                parallel.shard_params(compressed_dense, mesh, rules), mcfg,
                                source.tokenizer,
                                None if dense_eval_cache is None else pathlib.Path(
                                    dense_eval_cache))
    skipped += evaluated.pop("skipped")
    metrics.update(evaluated)
    metrics["model_params_dense"] = llama.count_params(dense.params)
    metrics["model_params_compressed"] = llama.count_params(compressed.params)
  metrics["skipped"] = skipped
  metrics["matrices"] = rows
  metrics["peak_rss_mib"] = round(peak_rss_mib(), 1)
  metrics["stage_s"] = timer.rounded()
  metrics["peak_rss_mib_after_layer"] = rss_after_layer
  metrics["checkpoint"] = str(model_dir)
  report = report_json.build_report("compress", config, source.name, time.time() - start, metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  logging.info("compress: param_ratio %.4f, ppl %s -> %s", metrics["param_ratio"] or 0,
               metrics.get("ppl_dense"), metrics.get("ppl_compressed"))
  return report
