"""Ablation: Penrose vs grid vs single tiling at equal param_ratio, with and without whitening.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_tiling.py --workdir=workdirs/sweep_tiling
  python -m experiments.sweep --config=configs/sweep_tiling.py:quick --workdir=/tmp/sweep_tiling_q

Runs the `compress` job 6 times on SmolLM2-135M ('default'), param_ratio 0.6 (global budget,
16 tiles per matrix), everything else as configs/compress.py: tiling penrose | grid | single x
whiten True | False. Produces DIR/results.csv (one row per run: params, bytes, perplexity per
text set, hidden / logit KL, wall_s, peak RSS), DIR/report.md (table, computed best run per
metric, plots), DIR/plots/ (param_ratio vs perplexity and vs hidden KL per method, per-layer
hidden-KL heatmap), the tiling pictures of every run linked from report.md, and each run's
workdir in DIR/runs/<name>/ (a rerun skips finished runs and resumes an unfinished one).
Time on the 2-core CPU machine: measured 1,963 s (32.7 min, 2026-11-23; whitened runs 362-437 s,
unwhitened 212-286 s, the last four with the test suite running beside them), peak RSS
12.4 GB. quick (tiny model, 2 runs: penrose / grid, whitened; per-matrix budget and 4 tiles
per matrix, see quick_compress_base): measured 25 s inside the test run, ~35-45 s as a command
(startup, tiny model build).
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
  base = quick_compress_base() if arg else compress_config.get_config()
  base.compression.param_ratio = 0.6
  runs = [(f"{tiling}_{'w' if whiten else 'nw'}",
           {"compression.tiling": tiling, "compression.whiten": whiten})
          for whiten in (True, False) for tiling in TILINGS]
  if arg:
    runs = runs[:2]
  return make_sweep_config(
      base, "compress", runs, title="tiling (Penrose / grid / single) x whitening",
      description="Equal global parameter budget (param_ratio 0.6); only the tiling and the "
                  "activation whitening change between runs.",
      method_key=("compression.tiling", "compression.whiten"), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl"), bar_metrics=("ppl_compressed", "hidden_kl"))
