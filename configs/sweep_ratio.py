"""Ablation: stored parameter ratio 0.9 -> 0.4 on the strong baseline, single vs Penrose tiles.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_ratio.py --workdir=workdirs/sweep_ratio \
      --config.results_dir=results/sweep_ratio
  python -m experiments.sweep --config=configs/sweep_ratio.py:quick --workdir=/tmp/sweep_ratio_q

Runs the `compress` job on SmolLM2-135M with configs/compress.py's strong baseline (whitened,
sensitivity knapsack, damping 1e-4, 64 mixed calibration windows) at param_ratio 0.9, 0.8, 0.7,
0.6, 0.5, 0.4: one SVD per matrix, and Penrose with 16 tiles per matrix at the same per-matrix
ratios (sensitivity_tiling='single', as configs/sweep_tiling.py, whose 0.8 / 0.6 runs have the
same configs). The sensitivity table is measured once (DIR/spectra_cache), and once more with
a 0.2 candidate for the 0.4 runs; later runs take ~6-8 min each on the 2-core machine. Ratio-major order: an interrupted sweep has both layouts at
the ratios it reached; `--config.time_budget_s=N` stops starting runs after N s.
Produces DIR/results.csv, DIR/report.md, DIR/plots/ (param_ratio vs perplexity / hidden KL /
logit KL per layout), DIR/runs/<name>/. The earlier sweep of this file (global greedy budget,
penrose / grid / single at 0.9..0.3) is in results/README.md ("Earlier measurements").
quick (tiny model, 2 runs: penrose at 0.6 and 0.4): ~16-30 s.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config

RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
# Below 0.5 the knapsack needs a smaller candidate: a second sensitivity table (measured in
# 1,304 s with the single_0.4 run, beside the test suite).
LOW_CANDIDATES = (0.2, 0.4, 0.6, 0.8, 1.0)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the ratio sweep; `quick` runs Penrose at two ratios on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_ratio.py: unknown variant {arg!r}; expected '' or 'quick'")
  if arg:
    base = quick_compress_base()
    runs = [(f"penrose_w_{ratio}", {"compression.tiling": "penrose",
                                    "compression.param_ratio": ratio}) for ratio in (0.6, 0.4)]
  else:
    base = compress_config.get_config()  # single, sensitivity knapsack
    base.eval.skip_text_sets = "demo_corpus"
    # Ratio-major order: an interrupted sweep has both layouts at the ratios it reached.
    runs = []
    for ratio in RATIOS:
      ratio_keys = {} if ratio == 0.8 else {"compression.param_ratio": ratio}
      if ratio < 0.5:  # the default candidates (0.4 ... 1.0) cannot fit a 0.4 budget
        ratio_keys["compression.sensitivity_candidates"] = LOW_CANDIDATES
      runs += [(f"single_{ratio}", dict(ratio_keys)),
               (f"penrose16_{ratio}", {"compression.tiling": "penrose",
                                       "compression.tiles_per_matrix": 16,
                                       "compression.sensitivity_tiling": "single",
                                       **ratio_keys})]
  return make_sweep_config(
      base, "compress", runs, title="parameter ratio vs quality",
      description="Whitened, sensitivity knapsack on the single-SVD table; the layout and the "
                  "target param_ratio change.",
      method_key=("compression.tiling",), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl", "logit_kl"))
