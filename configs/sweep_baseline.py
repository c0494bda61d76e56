"""The strong low-rank baseline: which compression setting matters, and which allocator wins.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_baseline.py --workdir=workdirs/sweep_baseline
  python -m experiments.sweep --config=configs/sweep_baseline.py:quick --workdir=/tmp/sweep_base_q

Whitened single SVD per matrix on SmolLM2-135M ('default'), everything as configs/compress.py
(per-matrix budget, damping 1e-4, 64 mixed calibration windows of SOFC train + LAMBADA + demo
corpus, sequential calibration) except one setting per run, each at param_ratio 0.8:
  uniform        the base (SVD-LLM's uniform per-matrix split)
  normalized     one model-wide budget, greedy on each matrix's relative output error
  sensitivity    one ratio per matrix (0.4/0.6/0.8/dense) from its measured logit KL when
                 truncated alone (ASVD; KL on 2 calibration windows of 256 tokens), exact
                 knapsack under the budget (also at 0.6)
  global         one model-wide budget, greedy on raw whitened energies (the old default)
  penrose16 / grid16   16 tiles per matrix, Penrose or grid layout, per-matrix budget
  damp_1e-2 / damp_1e-6   relative Cholesky damping
  calib_sofc     calibration on SOFC train only
  calib_128      128 calibration windows
  dense_calib    every layer whitened on the dense model's activations (not sequential)
and uniform / normalized at 0.6, uniform at 0.9 and 0.7 (order: see `runs`; use
--config.time_budget_s to stop early and --config.results_dir=results/sweep_baseline to copy
the outputs there).
Measured 2026-12-02 on the 2-core machine beside other jobs: 345-1,080 s per run (the dense
perplexities are measured once per sweep, DIR/dense_eval_cache.json); sensitivity_0.8 2,499 s
(its sensitivity table, ~35 min under heavy load, is cached in DIR/spectra_cache, so
sensitivity_0.6 took 306 s); 9 of the 16 runs are in results/README.md ("Strong baseline").
Evaluation: 48 windows per text set spread over every
document (SOFC dev: 8 articles; LAMBADA: 48 passages; demo corpus).
Produces DIR/results.csv, DIR/report.md, DIR/plots/, DIR/runs/<name>/.
quick (tiny model, 2 runs): ~30 s.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the baseline sweep; `quick` runs uniform and normalized on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_baseline.py: unknown variant {arg!r}; expected '' or "
                     "'quick'")
  base = quick_compress_base() if arg else compress_config.get_config()
  base.compression.tiling = "single"
  base.compression.whiten = True
  base.compression.budget_scope = "matrix"
  base.compression.param_ratio = 0.8
  sofc_train = compress_config.get_config().calibration.sources[0]
  runs = [
      ("uniform_0.8", {}),
      ("normalized_0.8", {"compression.budget_scope": "normalized"}),
      ("global_0.8", {"compression.budget_scope": "global"}),
      ("penrose16_0.8", {"compression.tiling": "penrose"}),
      ("uniform_0.6", {"compression.param_ratio": 0.6}),
      ("damp_1e-2_0.8", {"compression.damping": 1e-2}),
      ("calib_sofc_0.8", {"calibration.sources": [sofc_train]}),
      # One measured sensitivity table (sweep cache) serves both ratios.
      ("sensitivity_0.8", {"compression.budget_scope": "sensitivity",
                           "compression.sensitivity_windows": 2}),
      ("sensitivity_0.6", {"compression.budget_scope": "sensitivity",
                           "compression.sensitivity_windows": 2,
                           "compression.param_ratio": 0.6}),
      ("grid16_0.8", {"compression.tiling": "grid"}),
      ("dense_calib_0.8", {"calibration.sequential": False}),
      ("normalized_0.6", {"compression.budget_scope": "normalized",
                          "compression.param_ratio": 0.6}),
      ("uniform_0.9", {"compression.param_ratio": 0.9}),
      ("uniform_0.7", {"compression.param_ratio": 0.7}),
      ("damp_1e-6_0.8", {"compression.damping": 1e-6}),
      ("calib_128_0.8", {"calibration.num_windows": 128}),
  ]
  # One-setting ablations at 0.8 plot as their own points, not on the uniform line.
  ablations = {name: name.rsplit("_", 1)[0] for name, _ in runs
               if name.startswith(("damp_", "calib_", "dense_calib"))}
  if arg:
    runs = runs[:2]
  return make_sweep_config(
      base, "compress", runs, title="strong baseline: allocation, damping, calibration",
      description="Whitened single SVD per matrix; one setting changes per run (see the run "
                  "name); evaluation windows spread over every document of each set.",
      method_key=("compression.tiling", "compression.budget_scope"), group_labels=ablations,
      plot_x="param_ratio",
      plot_y=("ppl_compressed",),
      columns=("model", "compression.tiling", "compression.budget_scope",
               "compression.param_ratio", "compression.damping", "calibration.num_windows",
               "calibration.sequential"))
