"""Ablation: Penrose vs grid tiles vs one SVD per matrix at equal stored parameters, per matrix.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_tiling.py --workdir=workdirs/sweep_tiling \
      --config.results_dir=results/sweep_tiling
  python -m experiments.sweep --config=configs/sweep_tiling.py:quick --workdir=/tmp/sweep_tiling_q

The strong baseline of configs/compress.py (whitened, sensitivity allocator, damping 1e-4, 64
mixed calibration windows) on SmolLM2-135M ('default'); every run takes its per-matrix ratios
from the same measured table of one SVD per matrix (sensitivity_tiling='single': measured once
by the first run, reused from DIR/spectra_cache), so each matrix stores the same number of
values in every run and only the layout inside the matrix changes: single, penrose / grid with
16 and 64 tiles per matrix at param_ratio 0.8, then single / penrose16 / grid16 at 0.6 (order:
see `runs`; --config.time_budget_s stops early). At 16 tiles the Penrose layout of a
576 x 1536 matrix is a non-uniform grid (the same column cuts in every band); the aperiodic
layout shows at 64 (DIR/runs/<name>/tiling_*.png). Evaluation: SOFC dev and LAMBADA, 48
windows each spread over every document (the demo corpus is skipped for time).
Produces DIR/results.csv, DIR/report.md, DIR/plots/, DIR/runs/<name>/.
Measured 2026-12-02 on the 2-core machine beside other jobs: single_0.8 938 s (655 s of it the
sensitivity table), the other 7 runs 250-575 s each (2,940 s); results in results/sweep_tiling.
The earlier sweep of this file (global greedy budget at 0.6, x whitening; collapsed models) is
in results/README.md ("Earlier measurements").
quick (tiny model, 2 runs: penrose / grid, whitened; per-matrix budget and 4 tiles per matrix,
see quick_compress_base): ~25-45 s.
"""

import ml_collections

from configs import compress as compress_config
from penrose_jax.jobs.sweep import make_sweep_config

TILINGS = ("penrose", "grid", "single")


def quick_compress_base() -> ml_collections.ConfigDict:
  """The compress config of the quick sweeps: the tiny model, the smallest useful settings."""
  base = compress_config.get_config("quick")
  # On the tiny random model a global whitened budget gives whole matrices (o_proj, down_proj)
  # rank 0, which zeroes every block's output: all tilings then score the same and alignment
  # gets zero gradients. A per-matrix budget keeps the quick runs informative.
  base.compression.budget_scope = "matrix"
  base.compression.tiles_per_matrix = 4  # fewer leaf groups: less compile time per run
  base.calibration.num_windows = 4
  base.eval.text_sets = ml_collections.ConfigDict({"demo_corpus": "package:demo_corpus"})
  base.eval.primary = "demo_corpus"
  base.eval.max_windows = 2
  base.eval.hidden_kl_windows = 2
  base.tiling_pictures = "layers_0/attn/q_proj/kernel"
  return base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the tiling sweep; `quick` runs two tilings on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_tiling.py: unknown variant {arg!r}; expected '' or 'quick'")
  if arg:
    base = quick_compress_base()
    runs = [(f"{tiling}_w", {"compression.tiling": tiling}) for tiling in TILINGS[:2]]
  else:
    base = compress_config.get_config()  # tiling 'single', sensitivity knapsack at 0.8
    base.eval.skip_text_sets = "demo_corpus"
    runs = [("single_0.8", {})]
    for tiles in (16, 64):
      runs += [(f"{tiling}{tiles}_0.8", {"compression.tiling": tiling,
                                         "compression.tiles_per_matrix": tiles,
                                         "compression.sensitivity_tiling": "single"})
               for tiling in ("penrose", "grid")]
    runs += [("single_0.6", {"compression.param_ratio": 0.6})]
    runs += [(f"{tiling}16_0.6", {"compression.tiling": tiling, "compression.param_ratio": 0.6,
                                  "compression.sensitivity_tiling": "single"})
             for tiling in ("penrose", "grid")]
  return make_sweep_config(
      base, "compress", runs, title="tiling (single / Penrose / grid) at equal stored parameters",
      description="Whitened; every matrix keeps the ratio the sensitivity knapsack chose from "
                  "the single-SVD table, so only the layout inside each matrix changes.",
      method_key=("compression.tiling", "compression.tiles_per_matrix"), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl"), bar_metrics=("ppl_compressed", "hidden_kl"))
