"""Ablation: spectral (DCT / FFT) truncation of the factors on the strong baseline.

Command (from the repo root):
  python -m experiments.sweep --config=configs/sweep_spectral.py --workdir=workdirs/sweep_spectral \
      --config.results_dir=results/sweep_spectral
  python -m experiments.sweep --config=configs/sweep_spectral.py:quick \
      --workdir=/tmp/sweep_spectral_q

Runs the `compress` job on SmolLM2-135M with configs/compress.py's strong baseline (one whitened
SVD per matrix, sensitivity knapsack at param_ratio 0.8), then spectral='dct' on the factors
(spectral_scope 'factor') keeping 1.0 / 0.999 / 0.99 / 0.95 of the coefficient energy, and
spectral='fft' at 0.99 (at 0.95 the model already collapses: SOFC dev ppl 11,687). Kept
coefficients store their indices, so the achieved param_ratio moves with the kept energy; the plain single-SVD runs at 0.8 / 0.7 / 0.6 (the same configs as
configs/sweep_ratio.py, whose run folders can be linked into DIR/runs to reuse them) are the
line a spectral point must beat at equal stored parameters.
The sensitivity table does not depend on the spectral settings (spectra_cache.cache_key):
copy sweep_ratio's DIR/spectra_cache/sensitivity_*.json into this DIR/spectra_cache to skip it.
Produces DIR/results.csv, DIR/report.md, DIR/plots/ (achieved param_ratio vs perplexity and vs
hidden KL, one line per spectral transform), DIR/runs/<name>/.
The earlier sweep of this file (Penrose tiles, global greedy budget at 0.6) is in
results/README.md ("Earlier measurements").
quick (tiny model, MLP kernels only, 2 runs: dct keep 1.0 and 0.9): measured 24-40 s.
"""

import ml_collections

from configs import compress as compress_config
from configs.sweep_tiling import quick_compress_base
from penrose_jax.jobs.sweep import make_sweep_config

KEEP = (1.0, 0.999, 0.99, 0.95)
REFERENCE_RATIOS = (0.8, 0.7, 0.6)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Returns the spectral sweep; `quick` runs two kept-energy points on the tiny model."""
  if arg not in ("", "quick"):
    raise ValueError(f"configs/sweep_spectral.py: unknown variant {arg!r}; expected '' or "
                     "'quick'")
  if arg:
    base = quick_compress_base()
    base.compression.param_ratio = 0.6
    # Spectral leaves compile slowly on CPU (~40 s per run for all 14 tiny kernels under
    # load): the smoke variant compresses the MLP kernels only.
    base.compression.include = r".*mlp/(gate_proj|up_proj|down_proj)/kernel$"
    base.tiling_pictures = "layers_0/mlp/down_proj/kernel"
    runs = [(f"dct_{keep}", {"compression.spectral": "dct", "compression.keep_energy": keep})
            for keep in (1.0, 0.9)]
  else:
    base = compress_config.get_config()  # single, sensitivity knapsack, param_ratio 0.8
    base.eval.skip_text_sets = "demo_corpus"
    runs = [(f"single_{ratio}", {} if ratio == 0.8 else {"compression.param_ratio": ratio})
            for ratio in REFERENCE_RATIOS]
    runs += [(f"dct_{keep}", {"compression.spectral": "dct", "compression.keep_energy": keep})
             for keep in KEEP]
    runs.append(("fft_0.99", {"compression.spectral": "fft", "compression.keep_energy": 0.99}))
  return make_sweep_config(
      base, "compress", runs, title="spectral truncation of the factors (kept energy)",
      description="One whitened SVD per matrix, sensitivity knapsack at param_ratio 0.8; the "
                  "DCT (or FFT) coefficients of each factor are truncated to the kept energy "
                  "fraction. 'none' is plain single SVD at 0.8 / 0.7 / 0.6.",
      method_key=("compression.spectral",), plot_x="param_ratio",
      plot_y=("ppl_compressed", "hidden_kl"))
