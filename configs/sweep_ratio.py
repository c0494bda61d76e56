"""Ablation: parameter ratio 0.9 -> 0.3 for Penrose+whitening and the grid / single baselines.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_ratio.py --workdir=workdirs/sweep_ratio
  python -m experiments.sweep --config=configs/sweep_ratio.py:quick --workdir=/tmp/sweep_ratio_q

Runs the `compress` job on SmolLM2-135M at param_ratio 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3 for
tiling penrose, grid and single, all whitened (21 runs; everything else as configs/compress.py).
Produces DIR/results.csv, DIR/report.md, DIR/plots/ (param_ratio vs perplexity and vs hidden
KL, one line per method plus the dense point at 1.0; per-layer hidden-KL heatmap),
DIR/runs/<name>/. Time on the 2-core CPU machine (2026-11-24, tests beside part of it): the
first run of each tiling 530-540 s, later ones ~270 s (pass-1 spectra from DIR/spectra_cache);
~1.5 h for all 21 runs. `--config.time_budget_s=N` stops starting runs after N s; the same
command continues later. quick (tiny model, 2 runs: penrose at 0.6 and 0.4): measured 16 s
inside the test run, ~30 s as a command.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config

RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the ratio sweep; `quick` runs Penrose at two ratios on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_ratio.py: unknown variant {arg!r}; expected '' or 'quick'")
  base = quick_compress_base() if arg else compress_config.get_config()
  base.compression.whiten = True
  # Ratio-major order: an interrupted sweep has every method at the ratios it reached.
  runs = [(f"{tiling}_w_{ratio}", {"compression.tiling": tiling,
                                   "compression.param_ratio": ratio})
          for ratio in RATIOS for tiling in ("penrose", "grid", "single")]
  if arg:
    runs = [run for run in runs if run[0] in ("penrose_w_0.6", "penrose_w_0.4")]
  return make_sweep_config(
      base, "compress", runs, title="parameter ratio vs quality",
      description="Whitened, global budget; the tiling and the target param_ratio change.",
      method_key=("compression.tiling",), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl", "logit_kl"))
